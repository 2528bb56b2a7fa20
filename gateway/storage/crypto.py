"""OpenPGP operations: encrypt stored data to a court's keys, sign receipts, greffe-side GnuPG."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import gnupg
import pysequoia
from pysequoia.packet import HashAlgorithm, PacketPile, Tag

from gateway.errors import GatewayError, KeyRefused, StorageUnavailable

# RFC 3156 section 5 / RFC 4880 section 9.4: the micalg parameter of multipart/signed.
# HashAlgorithm values are not hashable, hence pairs rather than a dict.
_MICALG = (
    (HashAlgorithm.SHA256, "pgp-sha256"),
    (HashAlgorithm.SHA384, "pgp-sha384"),
    (HashAlgorithm.SHA512, "pgp-sha512"),
    (HashAlgorithm.SHA224, "pgp-sha224"),
)


class Encryptor:
    """Encrypts to every key of one court; build once per key set and share between threads.

    pysequoia's classes are PyO3 objects that are Send + Sync and its
    ``encrypt`` keeps the GIL, so calls from worker threads only take shared
    borrows of the parsed certificates: caching them is safe.
    """

    def __init__(self, certs: Sequence[pysequoia.Cert]) -> None:
        if not certs:
            raise KeyRefused("court has no active encryption key")
        self._certs = list(certs)

    @classmethod
    def for_keys(cls, armored_keys: Sequence[str]) -> Encryptor:
        certs = []
        for armored in armored_keys:
            try:
                certs.append(pysequoia.Cert.from_bytes(armored.encode("ascii")))
            except Exception:  # the binding raises bare RuntimeErrors with parser text
                raise KeyRefused("a court key cannot be read as an OpenPGP key") from None
        return cls(certs)

    @property
    def fingerprints(self) -> tuple[str, ...]:
        return tuple(cert.fingerprint.upper() for cert in self._certs)

    def encrypt(self, data: bytes) -> bytes:
        """Return a binary OpenPGP message that each of the keys can decrypt alone."""
        try:
            return pysequoia.encrypt(data, self._certs, armor=False)
        except Exception:
            raise StorageUnavailable("encryption failed") from None

    def __repr__(self) -> str:
        return f"Encryptor(fingerprints={self.fingerprints!r})"


class ReceiptSigner:
    """Makes detached signatures with the gateway's own key, for PGP/MIME receipts (RFC 3156)."""

    def __init__(self, armored_secret_key: str) -> None:
        data = armored_secret_key.encode("ascii")
        try:
            tags = [packet.tag for packet in PacketPile.from_bytes(data)]
        except Exception:  # the binding raises bare RuntimeErrors with parser text
            raise KeyRefused("the gateway signing key cannot be read") from None
        if Tag.SecretKey not in tags:  # Tsk.from_bytes quietly accepts a public key
            raise KeyRefused("the gateway signing key holds no secret key")
        try:
            tsk = pysequoia.Tsk.from_bytes(data)
            self._signer = tsk.signer()
        except Exception:
            raise KeyRefused("the gateway signing key cannot sign") from None
        cert = tsk.extract_certificate()
        self._fingerprint = cert.fingerprint.upper()
        self._public_key = str(cert)
        probe = pysequoia.Sig.from_bytes(self._sign(b""))
        self._micalg = next(
            (name for algorithm, name in _MICALG if algorithm == probe.hash_algorithm),
            "pgp-sha256",
        )

    @property
    def fingerprint(self) -> str:
        """The primary key's fingerprint (signatures name the signing subkey)."""
        return self._fingerprint

    @property
    def public_key(self) -> str:
        return self._public_key

    @property
    def micalg(self) -> str:
        """The ``micalg`` parameter for the multipart/signed Content-Type."""
        return self._micalg

    def sign_detached(self, data: bytes) -> str:
        """Return an armored detached signature of ``data`` (the exact bytes of the signed part)."""
        return self._sign(data).decode("ascii")

    def _sign(self, data: bytes) -> bytes:
        return pysequoia.sign(self._signer, data, mode=pysequoia.SignatureMode.DETACHED)

    def __repr__(self) -> str:
        return f"ReceiptSigner(fingerprint={self._fingerprint!r})"


class GpgKeyring:
    """A GnuPG home driven through python-gnupg: the greffe's side (decrypt) and tests.

    GnuPG starts an agent for secret-key work; ``close()`` (or leaving the
    ``with`` block) stops it.
    """

    def __init__(self, home: Path, *, gpg_binary: str = "gpg") -> None:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        home.chmod(0o700)  # gpg warns about, and some versions refuse, looser homes
        self._home = home
        self._gpg = gnupg.GPG(gpgbinary=gpg_binary, gnupghome=str(home))

    @property
    def home(self) -> Path:
        return self._home

    def import_public(self, armored: str) -> str:
        """Import a public key; return its fingerprint (upper hex)."""
        result = self._gpg.import_keys(armored)
        fingerprints = [fpr for fpr in result.fingerprints if fpr]
        if not fingerprints:
            raise KeyRefused("gpg did not import the key")
        return str(fingerprints[0]).upper()

    def can_encrypt(self, fingerprint: str) -> bool:
        """Whether gpg itself considers the key usable for encryption (capability 'E')."""
        for key in self._gpg.list_keys(keys=[fingerprint]):
            if "E" in str(key.get("cap", "")):
                return True
        return False

    def decrypt(self, data: bytes) -> bytes:
        """Decrypt with a secret key of this home, or raise."""
        result = self._gpg.decrypt(data)
        if result.ok:
            return bytes(result.data)
        if result.status == "no secret key":
            raise KeyRefused("no secret key in this keyring can decrypt the data")
        raise GatewayError(f"decryption failed ({result.status or 'unknown reason'})")

    def verify_detached(
        self, data: bytes, signature: str, *, fingerprint: str | None = None
    ) -> bool:
        """Whether ``signature`` is a good signature of ``data`` (by ``fingerprint`` if given)."""
        handle, sig_path = tempfile.mkstemp(dir=self._home, suffix=".sig")
        try:
            with os.fdopen(handle, "wb") as sig_file:
                sig_file.write(signature.encode("ascii"))
            result = self._gpg.verify_data(sig_path, data)
        finally:
            os.unlink(sig_path)
        if not result.valid:
            return False
        if fingerprint is None:
            return True
        signers = {str(result.fingerprint or "").upper(), str(result.pubkey_fingerprint or "")}
        return fingerprint.upper() in {signer.upper() for signer in signers}

    def close(self) -> None:
        """Stop this home's gpg-agent (harmless when none runs)."""
        env = {**os.environ, "GNUPGHOME": str(self._home)}
        subprocess.run(
            ["gpgconf", "--kill", "gpg-agent"], env=env, capture_output=True, check=False
        )

    def __enter__(self) -> GpgKeyring:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
