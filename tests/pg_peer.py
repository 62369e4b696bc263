"""A throwaway PostgreSQL cluster for the tests: initdb into a temporary directory,
pg_ctl start on a free loopback port, as a non-root user; stopped and removed at the end."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import psycopg

#: The superuser's password (TCP connections need it: a wrong one must be refused).
PASSWORD = "ferrymail-test"


def find_bin() -> str | None:
    """The directory of initdb and pg_ctl: on PATH (/usr/local/bin here), else Debian's
    /usr/lib/postgresql/<version>/bin, the newest."""
    initdb = shutil.which("initdb")
    if initdb and os.path.exists(os.path.join(os.path.dirname(initdb), "pg_ctl")):
        return os.path.dirname(os.path.realpath(initdb))
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
    )
    return os.path.dirname(found[-1]) if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_user() -> tuple[pwd.struct_passwd | None, Callable[[], None] | None]:
    """PostgreSQL refuses to run as root: as root, its programs run as `postgres` (the
    Debian package's user) or else `nobody`."""
    if os.geteuid() != 0:
        return None, None
    for name in ("postgres", "nobody"):
        try:
            user = pwd.getpwnam(name)
        except KeyError:
            continue

        def drop(user: pwd.struct_passwd = user) -> None:
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)

        return user, drop
    raise RuntimeError("running as root, and neither a postgres nor a nobody user exists")


class PgCluster:
    """`with PgCluster() as pg:` a running cluster; `pg.new_database()` the URL of a
    fresh, empty database."""

    def __init__(self, bindir: str, *, durable: bool = False) -> None:
        """`durable`: fsync and synchronous commits on, as a production server has them
        (for benchmarks); off by default, for the tests' speed."""
        self.bindir = bindir
        self.durable = durable
        self.port = _free_port()
        self.host = "127.0.0.1"
        self._count = 0
        self._options = ""
        self._user, self._drop = _as_user()
        # Not pytest's tmp dir: its parents are root's alone (0700), which the postgres
        # user could not enter.
        self.dir = tempfile.mkdtemp(prefix="ferrymail-pg-")
        self.data = os.path.join(self.dir, "data")
        if self._user is not None:
            os.chown(self.dir, self._user.pw_uid, self._user.pw_gid)

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args, preexec_fn=self._drop, capture_output=True, text=True, check=False,
            cwd=self.dir, timeout=120,
        )  # fmt: skip

    def __enter__(self) -> PgCluster:
        try:
            pwfile = os.path.join(self.dir, "pw")
            with open(pwfile, "w") as f:
                f.write(PASSWORD + "\n")
            if self._user is not None:
                os.chown(pwfile, self._user.pw_uid, self._user.pw_gid)
            init = self._run(
                os.path.join(self.bindir, "initdb"), "-D", self.data, "-U", "postgres",
                "--pwfile", pwfile, "--auth-host=scram-sha-256", "--auth-local=trust",
                "-E", "UTF8", "--locale=C.UTF-8", "--no-sync",
            )  # fmt: skip
            if init.returncode != 0:
                raise RuntimeError(f"initdb failed: {init.stderr or init.stdout}")
            options = (
                f"-c listen_addresses={self.host} -c port={self.port}"
                f" -c unix_socket_directories={self.dir} -c max_connections=200"
            )
            if not self.durable:  # speed over durability: a test cluster lives one session
                options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            self._options = options
            self.start()
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise
        return self

    def _ctl(self, *args: str) -> None:
        done = self._run(os.path.join(self.bindir, "pg_ctl"), "-D", self.data, *args)
        if done.returncode != 0:
            log = Path(self.dir, "log")
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"pg_ctl {args[-1]} failed: {done.stderr}{tail}")

    def start(self) -> None:
        """Starts the server (again, after `stop`), waiting until it takes connections."""
        self._ctl("-o", self._options, "-l", os.path.join(self.dir, "log"), "-w", "-t", "60",
                  "start")  # fmt: skip

    def stop(self) -> None:
        """Stops the server as an administrator would (fast: sessions are ended, their
        transactions rolled back, the clients see their connections cut)."""
        self._ctl("-m", "fast", "-w", "-t", "60", "stop")

    def restart(self) -> None:
        """`pg_ctl restart` (fast), with the same options."""
        self._ctl("-m", "fast", "-o", self._options, "-l", os.path.join(self.dir, "log"),
                  "-w", "-t", "60", "restart")  # fmt: skip

    def url(self, database: str = "postgres", password: str = PASSWORD) -> str:
        secret = urllib.parse.quote(password, safe="")
        return f"postgresql://postgres:{secret}@{self.host}:{self.port}/{database}"

    def new_database(self) -> str:
        """The URL of a new empty database (CREATE DATABASE from template0: fast)."""
        self._count += 1
        name = f"t{self._count}"
        with psycopg.connect(self.url(), autocommit=True) as db:
            db.execute(f"CREATE DATABASE {name} TEMPLATE template0")
        return self.url(name)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            self._run(os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-m", "immediate",
                      "-w", "stop")  # fmt: skip
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
