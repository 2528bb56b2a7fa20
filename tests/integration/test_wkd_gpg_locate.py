"""`gpg --locate-keys` finds the gateway's signing key by WKD (direct method) over real HTTPS.

The server is `gateway.wkd.WkdDirectory` behind a loopback HTTPS server on
port 443 with a test CA, in private network and mount namespaces (see
`tests.fixtures.wkdnamespace` for why dirmngr leaves no other way).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pysequoia
import pytest

from gateway.bootstrap import initialise
from gateway.settings import Settings
from gateway.wkd import wkd_hash, wkd_path
from tests.fixtures.testca import IssuedCert, issue_server_cert
from tests.fixtures.wkdnamespace import Spec, run_in_namespace

pytestmark = pytest.mark.gpg

REPO = Path(__file__).resolve().parents[2]
ADDRESS = "noreply@greffe.example"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A gateway home as `gateway init` makes it: its signing key has the From address."""
    settings, _report = initialise(tmp_path_factory.mktemp("home") / "gateway.toml", environ={})
    return settings


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> IssuedCert:
    return issue_server_cert(
        tmp_path_factory.mktemp("tls"), ["greffe.example", "openpgpkey.greffe.example"]
    )


def locate(
    tmp_path: Path, home: Settings, certs: IssuedCert, lookups: list[str], *, trust_ca: bool = True
) -> dict[str, Any]:
    spec = Spec(
        workdir=tmp_path, address=ADDRESS, public_key=home.signing_pub_file,
        cert_file=certs.cert_file, key_file=certs.key_file, ca_file=certs.ca_file,
        trust_ca=trust_ca, lookups=lookups,
    )  # fmt: skip
    return run_in_namespace(spec, REPO)


def fingerprint(home: Settings) -> str:
    return str(pysequoia.Cert.from_file(str(home.signing_pub_file)).fingerprint).upper()


def test_wkd_gpg_locate_keys_finds_the_signing_key(
    tmp_path: Path, home: Settings, certs: IssuedCert
) -> None:
    report = locate(tmp_path, home, certs, [ADDRESS])

    found = report["lookups"][ADDRESS]
    assert found["rc"] == 0, found["stderr"]
    assert found["fingerprints"][0] == fingerprint(home)
    # gpg asked the direct method's URL, which `wkd_path` computes for the address.
    assert wkd_path(ADDRESS) in report["requests"]


def test_wkd_unknown_address_is_not_found(
    tmp_path: Path, home: Settings, certs: IssuedCert
) -> None:
    report = locate(tmp_path, home, certs, ["greffier@greffe.example"])

    missing = report["lookups"]["greffier@greffe.example"]
    assert missing["rc"] != 0 and missing["fingerprints"] == []
    assert any(wkd_hash("greffier") in path for path in report["requests"])


def test_wkd_untrusted_certificate_refused(
    tmp_path: Path, home: Settings, certs: IssuedCert
) -> None:
    # The same run without the test CA: gpg must refuse the server, so the
    # passing test above really went through TLS verification.
    report = locate(tmp_path, home, certs, [ADDRESS], trust_ca=False)

    refused = report["lookups"][ADDRESS]
    assert refused["rc"] != 0 and refused["fingerprints"] == []
    assert report["requests"] == []


def test_wkd_hash_agrees_with_gpg(tmp_path: Path, home: Settings) -> None:
    gnupghome = tmp_path / "gnupg"
    gnupghome.mkdir(mode=0o700)
    env = {"GNUPGHOME": str(gnupghome), "PATH": "/usr/bin:/bin"}
    subprocess.run(["gpg", "--batch", "--import", str(home.signing_pub_file)], env=env,
                   check=True, capture_output=True)  # fmt: skip
    listed = subprocess.run(["gpg", "--batch", "--with-wkd-hash", "--list-keys", ADDRESS],
                            env=env, check=True, capture_output=True, text=True)  # fmt: skip
    subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=env, check=False)

    assert f"{wkd_hash('noreply')}@greffe.example" in listed.stdout
