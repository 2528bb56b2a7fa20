"""The generated DKIM key signs with dkimpy and verifies against its own TXT record."""

from __future__ import annotations

import dkim
import pytest

from gateway.storage.keys import generate_dkim_key

MESSAGE = (
    b"From: Passerelle <noreply@gateway.example>\r\n"
    b"To: tuteur@example.org\r\n"
    b"Subject: Code\r\n"
    b"\r\n"
    b"Votre code.\r\n"
)


def test_dkim_key_round_trip() -> None:
    private_pem, public_b64 = generate_dkim_key(1024)
    record = f"v=DKIM1; k=rsa; p={public_b64}".encode()

    signature = dkim.sign(MESSAGE, b"gw", b"gateway.example", private_pem)

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"gw._domainkey.gateway.example."
        return record

    assert private_pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert dkim.verify(signature + MESSAGE, dnsfunc=dnsfunc)


@pytest.mark.parametrize("bits", [512, 16384])
def test_dkim_key_size_bounds(bits: int) -> None:
    with pytest.raises(ValueError, match="DKIM key size"):
        generate_dkim_key(bits)
