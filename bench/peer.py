"""The peer a court would build instead: Postfix, OpenDKIM verifying as a milter, a gpg filter.

Debian's Postfix accepts on a loopback port and asks OpenDKIM (Debian's
`opendkim`, verify mode) about each message before its reply: a message
without a good signature is refused (`On-NoSignature` / `On-BadSignature
reject`), a DNS failure is a temporary refusal.  Postfix answers 250 once
its queue file is fsync'd, then hands each message to a content filter
(pipe(8), `content_filter`) that encrypts it to the court's key with `gpg`
and delivers it into a maildir, durably: `sync` of the file, rename, `sync`
of the directory (gpg and mv fsync nothing themselves).

gpg runs with `--lock-never --no-random-seed-file`: its keyring and
random_seed locks otherwise back off under 20 concurrent runs, halving the
peer's rate; a court would find those options too.

Traps, each met while setting it up:

* OpenDKIM resolves through libunbound, which answers every `*.test` name
  NXDOMAIN without asking any server: the sender signs as `exemple.fr`.
* OpenDKIM's default `InternalHosts` is 127.0.0.1, so it would sign the
  loopback client's mail instead of verifying it: an unused address here.
* `Nameservers` is the loopback DNS server; libunbound takes `ADDR@PORT`.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
import time
from pathlib import Path

from bench.postfix import PostfixInstance

OPENDKIM = Path("/usr/sbin/opendkim")
FILTER_USER = "nobody"
FILTER_PROCESSES = 20

_OPENDKIM_CONF = """\
Syslog no
Mode v
Background yes
Socket inet:{port}@127.0.0.1
PidFile {root}/opendkim.pid
UMask 007
InternalHosts 192.0.2.1
Nameservers {nameserver}
On-NoSignature reject
On-BadSignature reject
On-DNSError tempfail
On-InternalError tempfail
On-KeyNotFound reject
"""

_FILTER_SH = """\
#!/bin/sh
# Encrypt the message on stdin to the court's key and deliver it into the maildir, durably.
tmp=$(mktemp -p {maildir}/tmp) || exit 75
gpg --homedir {home} --batch --quiet --no-tty --trust-model always \\
    --lock-never --no-random-seed-file -e -r {fingerprint} -o - > "$tmp" \\
    || {{ rm -f "$tmp"; exit 75; }}
sync "$tmp" || exit 75
mv "$tmp" {maildir}/new/ || exit 75
sync {maildir}/new || exit 75
"""

_PEER_MAIN_CF = """\
smtpd_milters = inet:127.0.0.1:{milter_port}
milter_default_action = tempfail
milter_protocol = 6
content_filter = gpgfilter:dummy
gpgfilter_destination_concurrency_limit = {processes}
gpgfilter_destination_recipient_limit = 1
"""

_PEER_MASTER_CF = """\
gpgfilter unix - n n - {processes} pipe
  flags=Rq user={user} null_sender=
  argv={script}
"""


def ensure_installed() -> str | None:
    """Install Debian's opendkim and opendkim-tools when missing (root); None when ready."""
    if OPENDKIM.exists():
        return None
    if os.geteuid() != 0:
        return "opendkim is not installed and the harness is not root"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for args in (["apt-get", "update", "-qq"],
                 ["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                  "opendkim", "opendkim-tools"]):
        proc = subprocess.run(args, capture_output=True, env=env, check=False)
        if proc.returncode != 0:
            return f"{' '.join(args)} failed: {proc.stderr.decode()[-500:]}"
    return None if OPENDKIM.exists() else "opendkim still missing after apt-get install"


class PeerInstance(PostfixInstance):
    """Postfix with OpenDKIM as its milter and the gpg filter; the encrypted maildir."""

    def __init__(self, root: Path, port: int, domain: str, milter_port: int,
                 nameserver: str) -> None:
        super().__init__(root, port, domain)
        self.milter_port, self.nameserver = milter_port, nameserver
        self.opendkim_pid: int | None = None

    @property
    def maildir(self) -> Path:
        return self.root / "encrypted"

    def configure_peer(self, court_key_armored: str) -> None:
        """Postfix as the bench's, plus the milter and the filter; the filter's keyring."""
        self.configure()
        user = pwd.getpwnam(FILTER_USER)
        home = self.root / "filter-gnupg"
        home.mkdir(mode=0o700, exist_ok=True)
        subprocess.run(["gpg", "--homedir", str(home), "--batch", "--quiet", "--import"],
                       input=court_key_armored.encode(), check=True, capture_output=True)
        fingerprint = _fingerprint(home)
        for sub in ("tmp", "new", "cur"):
            (self.maildir / sub).mkdir(parents=True, exist_ok=True)
        for path in (home, *home.rglob("*"), self.maildir, *self.maildir.iterdir()):
            os.chown(path, user.pw_uid, user.pw_gid)
        script = self.root / "filter.sh"
        script.write_text(_FILTER_SH.format(maildir=self.maildir, home=home,
                                            fingerprint=fingerprint))
        script.chmod(0o755)
        with (self.etc / "main.cf").open("a") as main_cf:
            main_cf.write(_PEER_MAIN_CF.format(milter_port=self.milter_port,
                                               processes=FILTER_PROCESSES))
        with (self.etc / "master.cf").open("a") as master_cf:
            master_cf.write(_PEER_MASTER_CF.format(processes=FILTER_PROCESSES, user=FILTER_USER,
                                                   script=script))
        (self.root / "opendkim.conf").write_text(_OPENDKIM_CONF.format(
            port=self.milter_port, root=self.root, nameserver=self.nameserver))

    def start(self) -> None:
        subprocess.run([str(OPENDKIM), "-x", str(self.root / "opendkim.conf")], check=True,
                       capture_output=True)
        deadline = time.monotonic() + 15
        while self.opendkim_pid is None and time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError, IndexError):
                self.opendkim_pid = int((self.root / "opendkim.pid").read_text().split()[0])
            time.sleep(0.05)
        if self.opendkim_pid is None:
            raise RuntimeError("opendkim did not start")
        super().start()

    def stop(self) -> None:
        super().stop()
        if self.opendkim_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.opendkim_pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and Path(f"/proc/{self.opendkim_pid}").exists():
                time.sleep(0.05)
            self.opendkim_pid = None


def _fingerprint(home: Path) -> str:
    proc = subprocess.run(["gpg", "--homedir", str(home), "--batch", "--with-colons",
                           "--list-keys"], capture_output=True, check=True)
    for line in proc.stdout.decode().splitlines():
        if line.startswith("fpr:"):
            return line.split(":")[9]
    raise RuntimeError("the court key was not imported into the filter's keyring")

