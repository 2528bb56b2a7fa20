"""OpenPGP operations: encrypt stored data to a court's keys, sign receipts, greffe-side GnuPG."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import urllib.parse
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType

import gnupg
import pysequoia
from pysequoia.packet import HashAlgorithm, PacketPile, Tag

from gateway.errors import CourtKeyExpired, GatewayError, KeyRefused, StorageUnavailable
from gateway.storage.keys import encryption_expiry

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

    def __init__(
        self, certs: Sequence[pysequoia.Cert], expires_at: datetime | None = None
    ) -> None:
        """`expires_at`: when the first of the keys stops being able to receive data."""
        if not certs:
            raise KeyRefused("court has no active encryption key")
        self._certs = list(certs)
        self._expires_at = expires_at

    @classmethod
    def for_keys(cls, armored_keys: Sequence[str]) -> Encryptor:
        certs = []
        ends = []
        for armored in armored_keys:
            # UTF-8, not ASCII: sequoia's armour names each user id in a Comment: line.
            try:
                certs.append(pysequoia.Cert.from_bytes(armored.encode()))
            except Exception:  # the binding raises bare RuntimeErrors with parser text
                raise KeyRefused("a court key cannot be read as an OpenPGP key") from None
            ends.append(encryption_expiry(armored.encode()))
        return cls(certs, min((end for end in ends if end is not None), default=None))

    def refuse_expired(self, now: datetime) -> None:
        """Raise CourtKeyExpired once a key has expired: its greffier could not be sure to read
        what we store, and pysequoia would encrypt to it all the same."""
        if self._expires_at is not None and self._expires_at <= now:
            raise CourtKeyExpired("the court's encryption key has expired; try again later")

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
        data = armored_secret_key.encode()
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


# The daemons gpg starts on demand in a home, by the socket gpgconf names for each
# (keyboxd exists from GnuPG 2.4 on; gpgconf 2.2 neither lists nor knows it).
_DAEMON_SOCKETS = (
    ("agent-socket", "gpg-agent"),
    ("dirmngr-socket", "dirmngr"),
    ("keyboxd-socket", "keyboxd"),
)


class GpgKeyring:
    """A GnuPG home driven through python-gnupg: the greffe's side (decrypt) and tests.

    gpg starts daemons in the home as it needs them (gpg-agent for any key
    work, dirmngr, keyboxd). ``close()`` (or leaving the ``with`` block) stops
    those that were not already running when the keyring was opened: a home
    of our own is left with nothing running, and an agent the greffe was
    already using in its own home (a smartcard, cached passphrases) survives.
    """

    def __init__(self, home: Path, *, gpg_binary: str = "gpg") -> None:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        home.chmod(0o700)  # gpg warns about, and some versions refuse, looser homes
        self._home = home
        self._sockets = _daemon_sockets(home)
        # Asked before our first gpg call, which would start them.
        self._already_running = frozenset(
            daemon for daemon, socket_path in self._sockets.items() if _listening(socket_path)
        )
        self._gpg = gnupg.GPG(gpgbinary=gpg_binary, gnupghome=str(home))

    @property
    def home(self) -> Path:
        return self._home

    def import_public(self, armored: str) -> str:
        """Import a public key; return its fingerprint (upper hex)."""
        # Bytes: python-gnupg encodes a str as Latin-1, and an armour's Comment: lines carry
        # the user ids in UTF-8 (RFC 4880 6.2), accents and dashes included.
        result = self._gpg.import_keys(armored.encode())
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

    @property
    def already_running(self) -> frozenset[str]:
        """The daemons (``gpg-agent``, ``dirmngr``, ``keyboxd``) running before we were opened."""
        return self._already_running

    def close(self) -> None:
        """Stop the daemons of this home that were not running when it was opened.

        Harmless when none runs, and when called twice.
        """
        ours = [daemon for daemon in self._sockets if daemon not in self._already_running]
        if ours:
            subprocess.run(
                ["gpgconf", "--homedir", str(self._home), "--kill", *ours],
                capture_output=True,
                check=False,
                timeout=60,
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


def _daemon_sockets(home: Path) -> dict[str, str]:
    """Each daemon gpg may start for ``home``, with the socket it would listen on."""
    try:
        listed = subprocess.run(
            ["gpgconf", "--homedir", str(home), "--list-dirs"],
            capture_output=True,
            check=False,
            timeout=60,
        ).stdout.decode("utf-8", "replace")
    except (OSError, subprocess.TimeoutExpired):
        listed = ""
    # Lines are NAME:VALUE with ':' and '%' in values percent-escaped.
    dirs = dict(line.split(":", 1) for line in listed.splitlines() if ":" in line)
    sockets = {
        daemon: urllib.parse.unquote(dirs[key]) for key, daemon in _DAEMON_SOCKETS if key in dirs
    }
    return sockets or {"gpg-agent": ""}


def _listening(socket_path: str) -> bool:
    """Whether a daemon accepts connections on ``socket_path`` (a stale socket file: no)."""
    if not socket_path:
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(5)
        try:
            probe.connect(socket_path)
        except OSError:
            return False
    return True
