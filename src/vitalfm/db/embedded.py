"""A throwaway PostgreSQL server on a private unix socket.

Used by the workflow when no external MIMIC-III server is configured, by the tests and by the
benchmarks. We write our own small manager instead of using pytest-postgresql or
testing.postgresql because those refuse to run as root, and pgserver silently creates system
users: here the server runs as the ``postgres`` system user when we are root, as ourselves
otherwise, and it is tied to our process so that no server outlives us:

* the postmaster is our direct child (no ``pg_ctl`` daemonising), started with the
  parent-death signal set, so even a SIGKILL of this process makes the kernel stop it;
* :meth:`EmbeddedPostgres.stop` (also run by the context manager, ``atexit`` and SIGTERM)
  does a fast shutdown and removes the data directory.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import psycopg2
import psycopg2.extensions

from vitalfm.errors import DatabaseError

SERVER_USER_WHEN_ROOT = "postgres"
_PR_SET_PDEATHSIG = 1
_DURABILITY_OFF = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


def find_postgres_bindir() -> Path:
    """Locate ``initdb`` and ``postgres``: $PG_BIN, PATH, ``pg_config --bindir``, Debian's dirs."""
    candidates: list[Path] = []
    if os.environ.get("PG_BIN"):
        candidates.append(Path(os.environ["PG_BIN"]))
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True
            ).stdout
            candidates.append(Path(out.strip()))
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates.extend(debian)
    for directory in candidates:
        if (directory / "initdb").is_file() and (directory / "postgres").is_file():
            return directory
    raise DatabaseError(
        "PostgreSQL server binaries (initdb, postgres) were not found",
        "run envs/setup.sh (it installs Debian's 'postgresql' package), or set PG_BIN to the "
        "directory holding initdb and postgres, or configure an external server "
        "(database.source: external)",
    )


def _server_identity() -> pwd.struct_passwd | None:
    """The account the server runs as: 'postgres' when we are root (initdb refuses root)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVER_USER_WHEN_ROOT)
    except KeyError:
        raise DatabaseError(
            "running as root, but there is no 'postgres' system user to run the embedded server",
            "install Debian's 'postgresql' package (envs/setup.sh does), or run as a normal user",
        ) from None


def _child_setup(identity: pwd.struct_passwd | None) -> None:
    """Runs in the forked child before exec: drop to the server user, then ask the kernel to
    signal the child if we die. The order matters: changing uid clears the death signal."""
    if identity is not None:
        os.setgid(identity.pw_gid)
        os.setgroups([identity.pw_gid])
        os.setuid(identity.pw_uid)
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGINT)  # SIGINT = PostgreSQL "fast" shutdown
    os.setsid()  # not in our process group: a Ctrl-C to the terminal reaches us, we stop it


class EmbeddedPostgres:
    """Start with :meth:`start` (or ``with EmbeddedPostgres() as pg:``), then :meth:`connect`."""

    def __init__(
        self,
        *,
        port: int = 5432,
        dbname: str = "mimic",
        durable: bool = False,
        startup_timeout_s: float = 60.0,
        extra_settings: tuple[str, ...] = (),
    ) -> None:
        self.port = port
        self.dbname = dbname
        self.durable = durable
        self.startup_timeout_s = startup_timeout_s
        self.extra_settings = extra_settings
        self.bindir: Path | None = None
        self.root: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._identity: pwd.struct_passwd | None = None
        self._previous_sigterm: object = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> EmbeddedPostgres:
        remove_stale_server_dirs()
        self.bindir = find_postgres_bindir()
        self._identity = _server_identity()
        # Unix socket paths are limited to ~107 bytes: keep the directory short, under /tmp.
        self.root = Path(tempfile.mkdtemp(prefix="vfm-pg-", dir="/tmp"))
        if self._identity is not None:
            os.chown(self.root, self._identity.pw_uid, self._identity.pw_gid)
        atexit.register(self.stop)
        self._install_sigterm_handler()
        try:
            self._initdb()
            self._launch()
            self._wait_ready()
            self._create_database()
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Fast shutdown, then remove every file the server wrote. Safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            for sig, wait_s in ((signal.SIGINT, 30), (signal.SIGQUIT, 10), (signal.SIGKILL, 10)):
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)
                try:
                    proc.wait(timeout=wait_s)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
        self._restore_sigterm_handler()

    # -- connection ---------------------------------------------------------------------------
    @property
    def socket_dir(self) -> Path:
        assert self.root is not None, "server not started"
        return self.root / "sock"

    @property
    def user(self) -> str:
        return (
            SERVER_USER_WHEN_ROOT
            if self._identity is not None
            else pwd.getpwuid(os.geteuid()).pw_name
        )

    def dsn(self, dbname: str | None = None) -> str:
        name = dbname or self.dbname
        return f"host={self.socket_dir} port={self.port} dbname={name} user={self.user}"

    def connect(
        self, dbname: str | None = None, **kwargs: object
    ) -> psycopg2.extensions.connection:
        return psycopg2.connect(self.dsn(dbname), **kwargs)

    # -- internals ----------------------------------------------------------------------------
    def _run_as_server(self, args: list[str], log_name: str) -> None:
        assert self.root is not None
        log = self.root / log_name
        with open(log, "wb") as out:
            done = subprocess.run(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=lambda: _child_setup(self._identity),
                cwd=self.root,
                env=self._env(),
                check=False,
            )
        if done.returncode != 0:
            raise DatabaseError(
                f"{Path(args[0]).name} failed (exit {done.returncode}): {_tail(log)}",
                "check that the PostgreSQL server package is complete and /tmp is writable",
            )

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        if self._identity is not None:
            env["HOME"] = self._identity.pw_dir
            env["USER"] = env["LOGNAME"] = self._identity.pw_name
        return env

    def _initdb(self) -> None:
        assert self.root is not None and self.bindir is not None
        data = self.root / "data"
        (self.root / "sock").mkdir()
        if self._identity is not None:
            os.chown(self.root / "sock", self._identity.pw_uid, self._identity.pw_gid)
        self._run_as_server(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                self.user,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            "initdb.log",
        )

    def _launch(self) -> None:
        assert self.root is not None and self.bindir is not None
        settings = [
            "listen_addresses=",
            f"unix_socket_directories={self.socket_dir}",
            f"port={self.port}",
            "max_connections=20",
            "log_min_messages=warning",
            *(() if self.durable else _DURABILITY_OFF),
            *self.extra_settings,
        ]
        args = [str(self.bindir / "postgres"), "-D", str(self.root / "data")]
        for setting in settings:
            args += ["-c", setting]
        log = open(self.root / "server.log", "wb")  # noqa: SIM115 - handed to the child
        identity = self._identity
        self._proc = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: _child_setup(identity),
            cwd=self.root,
            env=self._env(),
        )
        log.close()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            assert self._proc is not None and self.root is not None
            if self._proc.poll() is not None:
                log_tail = _tail(self.root / "server.log")
                raise DatabaseError(
                    f"the embedded PostgreSQL server exited at start-up: {log_tail}",
                    "read the server log above; a full /tmp or missing shared memory are "
                    "common causes",
                )
            try:
                psycopg2.connect(self.dsn("postgres"), connect_timeout=2).close()
                return
            except psycopg2.OperationalError as err:
                last_error = err
                time.sleep(0.05)
        raise DatabaseError(
            f"the embedded PostgreSQL server did not accept connections in "
            f"{self.startup_timeout_s:.0f} s ({last_error})",
            "the machine may be overloaded; retry, or use an external server",
        )

    def _create_database(self) -> None:
        conn = psycopg2.connect(self.dsn("postgres"))
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{self.dbname}"')
        finally:
            conn.close()

    def _install_sigterm_handler(self) -> None:
        """SIGTERM (Snakemake cancelling a job, a scheduler pre-empting it) must still stop us."""
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return
        try:
            self._previous_sigterm = signal.signal(signal.SIGTERM, _raise_system_exit)
        except ValueError:  # not the main thread: the death signal still covers us
            self._previous_sigterm = None

    def _restore_sigterm_handler(self) -> None:
        if self._previous_sigterm is not None:
            with contextlib.suppress(ValueError):
                signal.signal(signal.SIGTERM, self._previous_sigterm)  # type: ignore[arg-type]
            self._previous_sigterm = None


def remove_stale_server_dirs(min_age_s: float = 3600.0) -> None:
    """Delete data directories left by owners killed with SIGKILL (their server is gone: the
    death signal stopped it, but nobody was left to remove the files)."""
    for root in Path("/tmp").glob("vfm-pg-*"):
        pid_file = root / "data" / "postmaster.pid"
        try:
            if pid_file.exists():
                pid = int(pid_file.read_text().split()[0])
                if Path(f"/proc/{pid}").exists():
                    continue
            elif time.time() - root.stat().st_mtime < min_age_s:
                continue  # maybe another job's server, still in initdb
        except (OSError, ValueError, IndexError):
            continue
        shutil.rmtree(root, ignore_errors=True)


def _raise_system_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"


@contextlib.contextmanager
def embedded_postgres(**kwargs: object) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(**kwargs)  # type: ignore[arg-type]
    with server:
        yield server
