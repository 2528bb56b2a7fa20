"""WKD on serve's HTTP listener: the gateway's signing key, found by `gpg --locate-keys`.

The routes are checked over loopback first; then `gpg --locate-keys` runs
against a real `gateway serve` on HTTPS port 443 in namespaces of its own
(`tests.fixtures.wkdserve`).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pysequoia
import pytest

from gateway.settings import load_settings
from gateway.wkd import wkd_hash, wkd_path
from tests.fixtures.apiclient import base_url
from tests.fixtures.gatewayserver import World
from tests.fixtures.testca import issue_server_cert
from tests.fixtures.wkdnamespace import Spec
from tests.fixtures.wkdserve import ServeSpec, run_serve_in_namespace

pytestmark = [pytest.mark.gpg, pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)]

REPO = Path(__file__).resolve().parents[2]
ADDRESS = "noreply@greffe.example"


def signing_fingerprint(public_key: Path) -> str:
    return str(pysequoia.Cert.from_file(str(public_key)).fingerprint).upper()


def test_wkd_routes_serve_the_binary_signing_key(world: World) -> None:
    settings = world.gw.services.settings
    with httpx.Client(base_url=base_url(world), headers={"Host": "greffe.example"}) as client:
        found = client.get(wkd_path(ADDRESS))
        assert found.status_code == 200
        assert found.headers["content-type"] == "application/octet-stream"
        assert found.headers["access-control-allow-origin"] == "*"
        cert = pysequoia.Cert.from_bytes(found.content)
        assert str(cert.fingerprint).upper() == signing_fingerprint(settings.signing_pub_file)
        assert not found.content.startswith(b"-----BEGIN")  # binary, as the draft requires
        assert client.get("/.well-known/openpgpkey/policy").status_code == 200
        unknown = client.get(f"/.well-known/openpgpkey/hu/{wkd_hash('greffier')}?l=greffier")
        assert unknown.status_code == 404
        assert unknown.headers["content-type"] == "application/problem+json"
    with httpx.Client(base_url=base_url(world), headers={"Host": "other.example"}) as client:
        assert client.get(wkd_path(ADDRESS)).status_code == 404  # another domain's directory


def test_gpg_locate_keys_finds_the_key_on_serves_https_listener(
    gateway_config: Path, tmp_path: Path
) -> None:
    settings = load_settings(gateway_config)
    certs = issue_server_cert(tmp_path, ["greffe.example", "openpgpkey.greffe.example"])
    assert settings.config_path is not None
    wkd = Spec(
        workdir=tmp_path, address=ADDRESS, public_key=settings.signing_pub_file,
        cert_file=certs.cert_file, key_file=certs.key_file, ca_file=certs.ca_file,
        trust_ca=True, lookups=[ADDRESS, "greffier@greffe.example"],
    )  # fmt: skip
    report = run_serve_in_namespace(ServeSpec(settings.config_path, wkd), REPO)

    found = report["lookups"][ADDRESS]
    assert found["rc"] == 0, found["stderr"]
    assert found["fingerprints"][0] == signing_fingerprint(settings.signing_pub_file)
    missing = report["lookups"]["greffier@greffe.example"]
    assert missing["rc"] != 0 and missing["fingerprints"] == []
    assert report["serve_exit"] == 0  # SIGTERM: a clean stop
