"""The self-signed certificate `gateway init` makes: STARTTLS offered before one is configured.

Senders' MTAs seldom verify an MX's certificate (opportunistic TLS, RFC
3207 and RFC 7435), so a self-signed one still keeps guardians' mail, and
the code in its Subject, off the wire in clear.  A certificate from a CA
(`smtp.tls_cert`, `smtp.tls_key`) replaces it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = timedelta(days=3 * 365)


def generate_key() -> bytes:
    """A new RSA-2048 private key, PEM (PKCS#8, unencrypted: the server reads it unattended)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def self_signed_certificate(key_pem: bytes, hostname: str, now: datetime | None = None) -> bytes:
    """A server certificate for `hostname` (CN and subjectAltName), signed by its own key."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the TLS key is not an RSA key")
    start = (now or datetime.now(UTC)) - timedelta(minutes=5)  # a peer's clock a little behind
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + VALIDITY)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)
