"""A throwaway Postfix instance on loopback that relays a test domain and mails its
bounces back: genuine DSNs for the feedback tests and the end-to-end test.

`PostfixPeer(relay_to=..., bounces_to=...)` writes a main.cf and master.cf into a fresh
temporary directory and runs `postfix -c DIR start` (Debian's postfix package: the
`master` daemon and its helpers from /usr/lib/postfix/sbin). Its smtpd listens on
127.0.0.1 at a free high port and accepts mail from 127.0.0.0/8 for two domains only:
`relay_domain` goes to `relay_to` and `bounce_domain` to `bounces_to` (both loopback
peers, e.g. tests/smtp_peers.py's ScriptedServer), through transport maps to
[127.0.0.1]:port, so no DNS is asked (smtp_dns_support_level = disabled) and every
other destination is an `error:` transport: no traffic leaves loopback. A message the
relay peer refuses with a 5xx comes back to its envelope sender as Postfix's own
RFC 3464 DSN; one it defers with a 4xx bounces at once as expired
(`maximal_queue_lifetime = 0`: one attempt), or, with `delay_warning` set, first
yields a "delayed" DSN.

What Postfix needs to run this way (learned here): it must be started as root (master
drops to `mail_owner` = postfix for its daemons), so the fixture skips otherwise; the
directory must be traversable by the postfix user (pytest's tmp dirs are 0700, hence
a mkdtemp chmod-ed 0755) and `data_directory` owned by postfix; `maillog_file` must
match `maillog_file_prefixes` and needs the `postlog` service in master.cf (the log
is then a file in the directory: `PostfixPeer.log()`); `postfix start` logs its own
errors only to a tty or the maillog. Each instance has its own queue, data and pid
files, so several can run beside a system Postfix.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import smtplib
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Self

from peer_process import STARTUP_TIMEOUT

POSTFIX = "/usr/sbin/postfix"

MASTER_CF = """\
{host}:{port} inet n - n - - smtpd
cleanup   unix n - n - 0 cleanup
qmgr      unix n - n 300 1 qmgr
rewrite   unix - - n - - trivial-rewrite
bounce    unix - - n - 0 bounce
defer     unix - - n - 0 bounce
trace     unix - - n - 0 bounce
verify    unix - - n - 1 verify
flush     unix n - n 1000? 0 flush
proxymap  unix - - n - - proxymap
smtp      unix - - n - - smtp
relay     unix - - n - - smtp
showq     unix n - n - - showq
error     unix - - n - - error
retry     unix - - n - - error
discard   unix - - n - - discard
anvil     unix - - n - 1 anvil
scache    unix - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


def available() -> str | None:
    """Why a PostfixPeer cannot run here, or None when it can."""
    if not os.path.exists(POSTFIX):
        return f"{POSTFIX} is not installed (Debian package postfix)"
    if os.geteuid() != 0:
        return "Postfix's master must be started as root"
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        return "no postfix user (the Debian package creates it)"
    return None


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class PostfixPeer:
    """A Postfix on 127.0.0.1 relaying `relay_domain` to `relay_to` and mailing
    `bounce_domain` (its bounces' destination) to `bounces_to`; see the module docstring.
    `delay_warning`: Postfix's delay_warning_time (e.g. "2s"), None for none; then a
    deferred message is retried every second or so instead of bouncing at once."""

    def __init__(
        self,
        *,
        relay_to: tuple[str, int],
        bounces_to: tuple[str, int],
        relay_domain: str = "recipients.test",
        bounce_domain: str = "bounces.test",
        delay_warning: str | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        for peer in (relay_to, bounces_to):
            if not peer[0].startswith("127."):
                raise ValueError(f"{peer}: PostfixPeer relays to 127.0.0.0/8 only")
        self.host = host
        self.port = 0
        self.relay_to = relay_to
        self.bounces_to = bounces_to
        self.relay_domain = relay_domain
        self.bounce_domain = bounce_domain
        self.delay_warning = delay_warning
        self.directory: Path | None = None

    @property
    def config(self) -> Path:
        assert self.directory is not None
        return self.directory / "etc"

    def _main_cf(self, d: Path) -> str:
        relay = f"smtp:[{self.relay_to[0]}]:{self.relay_to[1]}"
        bounces = f"smtp:[{self.bounces_to[0]}]:{self.bounces_to[1]}"
        lifetime = "1h" if self.delay_warning else "0"
        lines = {
            "compatibility_level": "3.6",
            "queue_directory": f"{d}/queue",
            "data_directory": f"{d}/data",
            "maillog_file_prefixes": str(d),
            "maillog_file": f"{d}/maillog",
            "syslog_name": "postfix-ferrymail-test",
            "myhostname": "mta.ferrymail.test",
            "mydomain": "ferrymail.test",
            "myorigin": "$myhostname",
            "mydestination": "",
            "local_recipient_maps": "",
            "alias_maps": "",
            "alias_database": "",
            "inet_interfaces": self.host,
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "smtpd_peername_lookup": "no",
            "relay_domains": f"{self.relay_domain}, {self.bounce_domain}",
            "transport_maps": (
                f"inline:{{ {self.relay_domain}={relay}, {self.bounce_domain}={bounces} }}"
            ),
            # Anything else fails here rather than leave the machine.
            "default_transport": "error:no traffic off loopback in tests",
            "relay_transport": "error:no traffic off loopback in tests",
            "smtp_dns_support_level": "disabled",
            "smtp_host_lookup": "native",
            "smtp_bind_address": self.host,
            "maximal_queue_lifetime": lifetime,
            "bounce_queue_lifetime": lifetime,
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "delay_warning_time": self.delay_warning or "0h",
        }
        return "".join(f"{k} = {v}\n" for k, v in lines.items())

    def start(self) -> Self:
        d = Path(tempfile.mkdtemp(prefix="ferrymail-postfix-"))
        self.directory = d
        d.chmod(0o755)
        (d / "etc").mkdir()
        (d / "queue").mkdir(mode=0o755)
        (d / "data").mkdir()
        postfix = pwd.getpwnam("postfix")
        os.chown(d / "data", postfix.pw_uid, postfix.pw_gid)
        self.port = _free_port(self.host)
        (d / "etc" / "main.cf").write_text(self._main_cf(d))
        (d / "etc" / "master.cf").write_text(MASTER_CF.format(host=self.host, port=self.port))
        try:
            self._postfix("start")
            self._wait_listening()
        except BaseException:
            self.stop()
            raise
        return self

    def _postfix(self, command: str) -> None:
        done = subprocess.run(
            [POSTFIX, "-c", str(self.config), command],
            capture_output=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"postfix {command} failed ({done.returncode}): "
                f"{done.stderr.decode(errors='replace')}\n{self.log()}"
            )

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            try:
                with socket.create_connection((self.host, self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"Postfix not listening on {self.port}:\n{self.log()}"
                    ) from None
                time.sleep(0.05)

    def send(self, mail_from: str, rcpt_tos: Sequence[str], content: bytes) -> None:
        """Submits one message over SMTP to this Postfix's smtpd."""
        with smtplib.SMTP(self.host, self.port, local_hostname="client.test", timeout=10) as s:
            s.sendmail(mail_from, list(rcpt_tos), content)

    def log(self) -> str:
        """Postfix's log of this instance (empty before it wrote one)."""
        if self.directory is None:
            return ""
        with contextlib.suppress(OSError):
            return (self.directory / "maillog").read_text(errors="replace")
        return ""

    def stop(self) -> None:
        if self.directory is None:
            return
        pid_file = self.directory / "queue" / "pid" / "master.pid"
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            if pid_file.exists():
                self._postfix("stop")
        # `postfix stop` returns before master has ended; wait for its pid to go.
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_file.read_text().strip())
            deadline = time.monotonic() + STARTUP_TIMEOUT
            while time.monotonic() < deadline:
                os.kill(pid, 0)
                time.sleep(0.05)
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
