"""A throwaway Debian Postfix on a loopback port, delivering to a maildir: the durable baseline."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path

POSTFIX = Path("/usr/sbin/postfix")

_MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.bench.invalid
mydomain = bench.invalid
myorigin = $myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions = permit_mynetworks, reject
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
default_process_limit = 100
message_size_limit = 60000000
mailbox_size_limit = 0
virtual_mailbox_limit = 0
virtual_mailbox_domains = {domain}
virtual_mailbox_base = {root}/mail
virtual_mailbox_maps = static:inbox/
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
virtual_minimum_uid = 1
alias_maps =
alias_database =
local_recipient_maps =
recipient_delimiter = +
biff = no
append_dot_mydomain = no
smtpd_tls_security_level = none
maillog_file_prefixes = {root}
maillog_file = {root}/maillog
"""

# No chroot anywhere (Debian's master.cf chroots most services).
_MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
proxywrite unix - - n - 1 proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
local     unix  - n n - - local
virtual   unix  - n n - - virtual
lmtp      unix  - - n - - lmtp
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


def ensure_installed() -> str | None:
    """Install Debian's postfix when missing (root only); None when ready, else why not."""
    if POSTFIX.exists():
        return None
    if os.geteuid() != 0:
        return "postfix is not installed and the harness is not root"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    selections = "postfix postfix/main_mailer_type select No configuration\n"
    subprocess.run(["debconf-set-selections"], input=selections.encode(), check=False, env=env)
    for args in (["apt-get", "update", "-qq"],
                 ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "postfix"]):
        proc = subprocess.run(args, capture_output=True, env=env, check=False)
        if proc.returncode != 0:
            return f"{' '.join(args)} failed: {proc.stderr.decode()[-500:]}"
    return None if POSTFIX.exists() else "postfix still missing after apt-get install"


class PostfixInstance:
    """One config directory, queue and maildir under root; `start`/`stop` with `postfix -c`."""

    def __init__(self, root: Path, port: int, domain: str) -> None:
        self.root, self.port, self.domain = root, port, domain
        self.etc = root / "etc"

    @property
    def maildir(self) -> Path:
        return self.root / "mail" / "inbox"

    def configure(self) -> None:
        entry = pwd.getpwnam("postfix")
        for sub in ("etc", "queue", "data", "mail"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        os.chown(self.root / "data", entry.pw_uid, entry.pw_gid)
        os.chown(self.root / "mail", entry.pw_uid, entry.pw_gid)
        self.root.chmod(0o755)
        (self.etc / "main.cf").write_text(
            _MAIN_CF.format(root=self.root, domain=self.domain, uid=entry.pw_uid,
                            gid=entry.pw_gid)
        )
        (self.etc / "master.cf").write_text(_MASTER_CF.format(port=self.port))
        self._postfix("set-permissions", "create-missing")

    def _postfix(self, *args: str) -> str:
        proc = subprocess.run(
            [str(POSTFIX), "-c", str(self.etc), *args], capture_output=True, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(f"postfix {' '.join(args)}: {proc.stderr.decode()[-2000:]}")
        return proc.stdout.decode()

    def start(self) -> None:
        self._postfix("start")
        deadline = time.monotonic() + 30
        import socket

        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    if sock.recv(100).startswith(b"220"):
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"postfix did not listen: {self.log_tail()}")

    def master_pid(self) -> int | None:
        try:
            return int((self.root / "queue" / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def delivered(self) -> int:
        return sum(1 for sub in ("new", "cur") for _ in (self.maildir / sub).glob("*")
                   if (self.maildir / sub).is_dir())

    def wait_delivered(self, expected: int, timeout: float) -> tuple[int, float]:
        """Wait until `expected` files sit in the maildir: (count, seconds waited)."""
        started = time.monotonic()
        while (count := self.delivered()) < expected and time.monotonic() - started < timeout:
            time.sleep(0.2)
        return count, time.monotonic() - started

    def clear_maildir(self) -> None:
        for sub in ("new", "cur"):
            for path in (self.maildir / sub).glob("*"):
                path.unlink(missing_ok=True)

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._postfix("stop")

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self) -> str:
        try:
            return (self.root / "maillog").read_text(errors="replace")[-3000:]
        except OSError:
            return ""
