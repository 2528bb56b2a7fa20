"""`gateway doctor` through the CLI: a loopback DNS, real certificates, a relay sink, real keys."""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import CliResult, CliRunner
from tests.fixtures.dnsserver import DnsServer
from tests.fixtures.gpgkeys import (
    CourtKey,
    generate_expiring_keypair,
    kill_agent,
    make_gnupghome,
)
from tests.fixtures.smtpsink import SmtpSink
from tests.fixtures.tlscert import make_self_signed

DOMAIN = "greffe.example"
HOST = "mx.greffe.example"
HOST_ADDRESS = "192.0.2.25"
DKIM_NAME = f"greffe._domainkey.{DOMAIN}"
CHECKS = ["mx", "dkim", "spf", "dmarc", "tls", "relay", "disk", "courts"]

# Only the courts check reads the database: the others run on SQLite alone.
sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@dataclass
class Site:
    """A deployment that doctor finds healthy, whose parts each test can break."""

    cli: CliRunner
    config: Path
    dns: DnsServer
    relay: SmtpSink
    tmp: Path
    options: dict[str, object] = field(default_factory=dict)

    def write_config(self) -> None:
        """The real config file, as an operator writes it (the database comes from the env)."""
        opts = {
            "domain": DOMAIN,
            "hostname": HOST,
            "relay_mode": "smtp",
            "reserve": 1024 * 1024,
            "relay_port": self.relay.port,
            "relay_timeout": 2.0,
            # The loopback DNS server is a thread of this test process: on a loaded two-core
            # machine its answer can take longer than half a second.
            "dns_timeout": 3.0,
            "cert": self.tmp / "tls" / "cert.pem",
            "key": self.tmp / "tls" / "key.pem",
            **self.options,
        }
        self.config.write_text(
            f'[gateway]\ndomain = {json.dumps(opts["domain"])}\ndata_dir = "var"\n\n'
            f'[smtp]\nlisten = "127.0.0.1:2525"\nhostname = {json.dumps(opts["hostname"])}\n'
            f"tls_cert = {json.dumps(str(opts['cert']))}\n"
            f"tls_key = {json.dumps(str(opts['key']))}\n\n"
            f'[relay]\nmode = {json.dumps(opts["relay_mode"])}\nhost = "127.0.0.1"\n'
            f"port = {opts['relay_port']}\ntimeout = {opts['relay_timeout']}\n\n"
            f"[dns]\nnameservers = [{json.dumps(self.dns.address)}]\n"
            f"timeout = {opts['dns_timeout']}\n\n"
            f"[limits]\ndisk_reserve_bytes = {opts['reserve']}\n"
        )

    def doctor(self, *args: str) -> tuple[CliResult, dict[str, list[tuple[str, str]]]]:
        """Run `gateway doctor`; the result and its findings as {check: [(status, message)]}."""
        self.write_config()
        result = self.cli("doctor", *args)
        findings: dict[str, list[tuple[str, str]]] = {}
        lines = result.out.strip().splitlines()
        for line in lines[:-1]:
            status, rest = line.split(None, 1)
            check, message = rest.split(": ", 1)
            findings.setdefault(check, []).append((status, message))
        return result, findings

    def certificate(self, name: str, *, days: int = 90) -> tuple[Path, Path]:
        folder = self.tmp / f"tls-{name}-{days}"
        folder.mkdir()
        return make_self_signed(folder, name, days=days, alt_names=f"DNS:{name}")


@pytest.fixture
def site(
    cli: CliRunner,
    gateway_config: Path,
    dns_server: DnsServer,
    smtp_sink: SmtpSink,
    tmp_path: Path,
) -> Iterator[Site]:
    dkim = (gateway_config.parent / "var" / "keys" / "dkim-public.txt").read_text().strip()
    dns_server.publish(DOMAIN, "MX", f"10 {HOST}.")
    dns_server.publish(HOST, "A", HOST_ADDRESS)
    dns_server.records[DKIM_NAME] = [f"v=DKIM1; k=rsa; p={dkim}"]
    dns_server.records[DOMAIN] = ["google-site-verification=abc", f"v=spf1 a:{HOST} -all"]
    dns_server.records[f"_dmarc.{DOMAIN}"] = [f"v=DMARC1; p=reject; rua=mailto:dmarc@{DOMAIN}"]
    (tmp_path / "tls").mkdir()
    make_self_signed(tmp_path / "tls", HOST, days=90, alt_names=f"DNS:{HOST}")
    try:
        yield Site(cli, gateway_config, dns_server, smtp_sink, tmp_path)
    finally:
        # `courts add-key` imports into the gateway's keyring, which starts an agent.
        kill_agent(gateway_config.parent / "var" / "gnupg")


@pytest.fixture
def court_site(site: Site, court_key: CourtKey) -> Site:
    """The site with one court holding one good key."""
    keyfile = site.tmp / "court.asc"
    keyfile.write_text(court_key.armored_public)
    assert site.cli("courts", "add", "TJ-LYON", "--name", "Lyon").code == 0
    assert site.cli("courts", "add-key", "TJ-LYON", str(keyfile)).code == 0
    return site


def _statuses(findings: dict[str, list[tuple[str, str]]]) -> dict[str, list[str]]:
    return {check: [status for status, _ in items] for check, items in findings.items()}


@pytest.mark.gpg
def test_doctor_healthy_deployment_every_check_ok(court_site: Site) -> None:
    result, findings = court_site.doctor()
    assert result.code == 0, result.out + result.err
    assert list(findings) == CHECKS
    assert _statuses(findings) == {check: ["ok"] for check in CHECKS}
    assert result.out.strip().splitlines()[-1] == "doctor: 8 ok, 0 warning(s), 0 error(s)"
    assert f"MX of {DOMAIN} is this host ({HOST})" in findings["mx"][0][1]
    assert "court TJ-LYON: 1 active key(s), all can encrypt" in findings["courts"][0][1]
    assert court_site.relay.quits == 1  # greeted, then QUIT: no half-open session left
    assert result.err == ""


@sqlite_only
@pytest.mark.gpg
def test_doctor_json_is_an_array_of_findings(court_site: Site) -> None:
    court_site.write_config()
    result = court_site.cli("doctor", "--json")
    assert result.code == 0, result.err
    rows = json.loads(result.out)
    assert [row["check"] for row in rows] == CHECKS
    assert {row["status"] for row in rows} == {"ok"}


def _no_mx(site: Site) -> None:
    del site.dns.typed[(DOMAIN, "MX")]


def _mx_elsewhere(site: Site) -> None:
    site.dns.typed[(DOMAIN, "MX")] = ["10 mx.other.example."]
    site.dns.publish("mx.other.example", "A", "192.0.2.99")


def _dkim_mismatch(site: Site) -> None:
    site.dns.records[DKIM_NAME] = ["v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8Aother"]


def _null_mx(site: Site) -> None:
    site.dns.typed[(DOMAIN, "MX")] = ["0 ."]


def _dkim_revoked(site: Site) -> None:
    site.dns.records[DKIM_NAME] = ["v=DKIM1; k=rsa; p="]


def _no_spf(site: Site) -> None:
    site.dns.records[DOMAIN] = ["google-site-verification=abc"]


def _two_spf(site: Site) -> None:
    site.dns.records[DOMAIN] = ["v=spf1 mx -all", "v=spf1 a -all"]


def _no_dmarc(site: Site) -> None:
    del site.dns.records[f"_dmarc.{DOMAIN}"]


def _two_dmarc(site: Site) -> None:
    site.dns.records[f"_dmarc.{DOMAIN}"] = ["v=DMARC1; p=reject", "v=DMARC1; p=none"]


def _dmarc_without_policy(site: Site) -> None:
    site.dns.records[f"_dmarc.{DOMAIN}"] = [f"v=DMARC1; rua=mailto:dmarc@{DOMAIN}"]


def _cert_other_name(site: Site) -> None:
    site.options["cert"], site.options["key"] = site.certificate("other.example")


def _cert_expiring(site: Site) -> None:
    site.options["cert"], site.options["key"] = site.certificate(HOST, days=10)


def _cert_key_mismatch(site: Site) -> None:
    site.options["key"] = site.certificate(HOST)[1]


def _no_cert(site: Site) -> None:
    site.options["cert"] = site.options["key"] = ""


def _relay_down(site: Site) -> None:
    site.relay.stop()


def _disk_below_reserve(site: Site) -> None:
    site.options["reserve"] = 2**62


BROKEN: list[tuple[str, Callable[[Site], None], str, str]] = [
    ("no MX", _no_mx, "mx", f"no MX for {DOMAIN}: publish `{DOMAIN}. IN MX 10 {HOST}.`"),
    ("MX elsewhere", _mx_elsewhere, "mx", f"MX of {DOMAIN} is mx.other.example, not this host"),
    ("null MX", _null_mx, "mx", f"{DOMAIN} publishes a null MX"),
    ("DKIM p= mismatch", _dkim_mismatch, "dkim", f"the DKIM key at {DKIM_NAME} (p=…"),
    ("DKIM key revoked", _dkim_revoked, "dkim", "(p=…(empty: revoked)) is not the gateway's"),
    ("no SPF", _no_spf, "spf", f"no SPF record at {DOMAIN}"),
    ("two SPF", _two_spf, "spf", f"2 SPF records at {DOMAIN}"),
    ("no DMARC", _no_dmarc, "dmarc", f"no DMARC record at _dmarc.{DOMAIN}"),
    ("two DMARC", _two_dmarc, "dmarc", f"2 DMARC records at _dmarc.{DOMAIN}"),
    ("DMARC without policy", _dmarc_without_policy, "dmarc", "has no policy (p=)"),
    ("certificate for another name", _cert_other_name, "tls", f"is for other.example, not {HOST}"),
    ("certificate expiring", _cert_expiring, "tls", "the certificate expires on"),
    ("certificate key mismatch", _cert_key_mismatch, "tls", "is not the key of smtp.tls_cert"),
    ("no certificate", _no_cert, "tls", "no certificate (smtp.tls_cert is empty)"),
    ("relay down", _relay_down, "relay", "does not answer"),
    ("disk below reserve", _disk_below_reserve, "disk", "below limits.disk_reserve_bytes"),
]


@sqlite_only
@pytest.mark.gpg
@pytest.mark.parametrize(
    ("breakage", "expected_check", "named"),
    [pytest.param(b, c, n, id=i) for i, b, c, n in BROKEN],
)
def test_doctor_names_the_broken_part(
    court_site: Site, breakage: Callable[[Site], None], expected_check: str, named: str
) -> None:
    breakage(court_site)
    result, findings = court_site.doctor()
    assert result.code == 1
    assert result.err.strip() == "gateway: doctor found 1 error(s)", result.out
    status, message = findings[expected_check][0]
    assert status == "error"
    assert named in message
    others = {check: s for check, s in _statuses(findings).items() if check != expected_check}
    assert others == {check: ["ok"] for check in CHECKS if check != expected_check}


@sqlite_only
@pytest.mark.gpg
def test_doctor_certificate_expiring_says_when(court_site: Site) -> None:
    _cert_expiring(court_site)
    _, findings = court_site.doctor()
    assert re.search(r"expires on \d{4}-\d\d-\d\d, in 10 days: renew it", findings["tls"][0][1])


@pytest.mark.gpg
def test_doctor_court_without_a_key(court_site: Site) -> None:
    assert court_site.cli("courts", "add", "TJ-PARIS", "--name", "Paris").code == 0
    result, findings = court_site.doctor()
    assert result.code == 1
    assert _statuses(findings)["courts"] == ["ok", "error"]  # courts in code order
    assert findings["courts"][1][1].startswith("court TJ-PARIS has no active key")
    assert "`gateway courts add-key TJ-PARIS KEY.asc`" in findings["courts"][1][1]


@pytest.mark.gpg
def test_doctor_court_key_expiring_soon(court_site: Site) -> None:
    (court_site.tmp / "exp").mkdir()
    home = make_gnupghome(court_site.tmp / "exp")
    try:
        fingerprint, armored = generate_expiring_keypair(home, days=10)
    finally:
        kill_agent(home)
    keyfile = court_site.tmp / "expiring.asc"
    keyfile.write_text(armored)
    assert court_site.cli("courts", "add-key", "TJ-LYON", str(keyfile)).code == 0
    result, findings = court_site.doctor()
    assert result.code == 1
    [(status, message)] = findings["courts"]
    assert status == "error"
    assert f"court TJ-LYON: key {fingerprint} stops encrypting within 30 days" in message
    assert "(it expires on " in message
    assert message.endswith(f"retire it with `gateway courts retire-key TJ-LYON {fingerprint}`")


@sqlite_only
@pytest.mark.gpg
def test_doctor_dns_never_answers_is_a_finding_per_check(court_site: Site) -> None:
    court_site.dns.blackhole = True
    court_site.options.update(dns_timeout=0.5)  # every query waits for it
    result, findings = court_site.doctor()
    assert result.code == 1
    assert "Traceback" not in result.err
    for check, name in [
        ("mx", f"{DOMAIN} MX"),
        ("dkim", f"{DKIM_NAME} TXT"),
        ("spf", f"{DOMAIN} TXT"),
        ("dmarc", f"_dmarc.{DOMAIN} TXT"),
    ]:
        [(status, message)] = findings[check]
        assert status == "error"
        assert message.startswith(f"no DNS answer for {name} (timed out)")
        assert court_site.dns.address in message
    assert _statuses(findings)["tls"] == ["ok"]


@sqlite_only
@pytest.mark.gpg
def test_doctor_mx_under_another_name_with_this_hosts_address_is_this_host(
    court_site: Site,
) -> None:
    court_site.dns.typed[(DOMAIN, "MX")] = [f"10 mail.{DOMAIN}."]
    court_site.dns.publish(f"mail.{DOMAIN}", "A", HOST_ADDRESS)
    result, findings = court_site.doctor()
    assert result.code == 0, result.out
    assert findings["mx"] == [("ok", f"MX of {DOMAIN} is this host (mail.{DOMAIN})")]


@sqlite_only
@pytest.mark.gpg
def test_doctor_backup_mx_elsewhere_is_a_warning_and_exit_0(court_site: Site) -> None:
    court_site.dns.publish(DOMAIN, "MX", "20 backup.other.example.")
    court_site.dns.publish("backup.other.example", "A", "192.0.2.99")
    court_site.dns.records[f"_dmarc.{DOMAIN}"] = ["v=DMARC1; p=none"]
    result, findings = court_site.doctor()
    assert result.code == 0, result.out
    assert _statuses(findings)["mx"] == ["warning"]
    assert "also lists backup.other.example" in findings["mx"][0][1]
    assert _statuses(findings)["dmarc"] == ["warning"]
    assert result.out.strip().splitlines()[-1] == "doctor: 6 ok, 2 warning(s), 0 error(s)"


@sqlite_only
@pytest.mark.gpg
def test_doctor_mx_host_without_address(court_site: Site) -> None:
    del court_site.dns.typed[(HOST, "A")]
    result, findings = court_site.doctor()
    assert result.code == 1
    assert findings["mx"][0][1].startswith(f"{HOST}, the MX of {DOMAIN}, has no A or AAAA record")


@sqlite_only
@pytest.mark.gpg
def test_doctor_softfail_spf_is_ok_and_noted(court_site: Site) -> None:
    court_site.dns.records[DOMAIN] = ["v=spf1 mx ~all"]
    result, findings = court_site.doctor()
    assert result.code == 0, result.out
    assert findings["spf"] == [
        (
            "ok",
            f"SPF record at {DOMAIN} ends with ~all (other hosts soft-fail; -all is "
            "stricter): `v=spf1 mx ~all`",
        )
    ]


@sqlite_only
@pytest.mark.gpg
def test_doctor_dmarc_inherited_from_the_parent_domain(court_site: Site) -> None:
    court_site.options["domain"] = f"tj-lyon.{DOMAIN}"
    court_site.dns.records[f"_dmarc.{DOMAIN}"] = ["v=DMARC1; p=none; sp=quarantine"]
    _, findings = court_site.doctor()
    assert findings["dmarc"] == [
        ("ok", f"DMARC at _dmarc.{DOMAIN} (inherited by tj-lyon.{DOMAIN}): p=quarantine")
    ]
    court_site.dns.records.pop(f"_dmarc.{DOMAIN}")
    court_site.dns.records["_dmarc.example"] = ["v=DMARC1; p=reject"]
    _, findings = court_site.doctor()
    # The walk stops above the top-level label: "example" alone could be a public suffix.
    assert findings["dmarc"][0][0] == "error"
    assert findings["dmarc"][0][1].startswith(f"no DMARC record at _dmarc.tj-lyon.{DOMAIN}")


@sqlite_only
@pytest.mark.gpg
def test_doctor_relay_capture_mode_skips_the_relay(court_site: Site) -> None:
    court_site.relay.stop()
    court_site.options["relay_mode"] = "capture"
    result, findings = court_site.doctor()
    assert result.code == 0, result.out
    assert findings["relay"] == [
        ("ok", "relay.mode is capture: outgoing mail stays on this host, no relay to check")
    ]


@sqlite_only
@pytest.mark.gpg
@pytest.mark.parametrize("record", ["v=spf1 mx ?all", "v=spf1 +all", "v=spf1 mx"])
def test_doctor_permissive_spf_is_a_warning(court_site: Site, record: str) -> None:
    court_site.dns.records[DOMAIN] = [record]
    result, findings = court_site.doctor()
    assert result.code == 0, result.out
    [(status, message)] = findings["spf"]
    assert status == "warning"
    assert "end it with -all" in message


@sqlite_only
@pytest.mark.gpg
def test_doctor_wildcard_certificate_covers_the_host(court_site: Site) -> None:
    folder = court_site.tmp / "wild"
    folder.mkdir()
    court_site.options["cert"], court_site.options["key"] = make_self_signed(
        folder, f"*.{DOMAIN}", days=90, alt_names=f"DNS:*.{DOMAIN}"
    )
    _, findings = court_site.doctor()
    assert _statuses(findings)["tls"] == ["ok"]
    court_site.options["hostname"] = f"a.mx.{DOMAIN}"  # a wildcard stands for one label only
    _, findings = court_site.doctor()
    assert f"is for *.{DOMAIN}, not a.mx.{DOMAIN}" in findings["tls"][0][1]


@sqlite_only
def test_doctor_fresh_gateway_without_courts_warns(site: Site) -> None:
    result, findings = site.doctor()
    assert result.code == 0, result.out
    [(status, message)] = findings["courts"]
    assert status == "warning"
    assert message.startswith("no court yet: add one with `gateway courts add CODE")


@contextmanager
def _fake_relay(banner: bytes | None) -> Iterator[int]:
    """A listener that answers one connection with `banner`, or holds it silent; yields its port."""
    listener = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            if banner is not None:
                connection.sendall(banner)
            done.wait(5)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        done.set()
        listener.close()
        thread.join(timeout=5)


@sqlite_only
@pytest.mark.gpg
def test_doctor_relay_that_never_greets_times_out(court_site: Site) -> None:
    with _fake_relay(None) as port:
        court_site.options.update(relay_port=port, relay_timeout=0.5)
        result, findings = court_site.doctor()
    assert result.code == 1
    [(status, message)] = findings["relay"]
    assert status == "error"
    assert message.startswith(f"relay 127.0.0.1:{port} does not answer (")
    assert "timed out" in message


@sqlite_only
@pytest.mark.gpg
def test_doctor_relay_that_greets_with_554_is_an_error(court_site: Site) -> None:
    with _fake_relay(b"554 5.3.2 not taking mail\r\n") as port:
        court_site.options["relay_port"] = port
        result, findings = court_site.doctor()
    assert result.code == 1
    assert findings["relay"] == [
        (
            "error",
            f"relay 127.0.0.1:{port} greets with 554 5.3.2 not taking mail: it will not "
            "take the gateway's mail; check the relay",
        )
    ]
