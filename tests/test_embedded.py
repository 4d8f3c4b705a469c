"""The embedded server is a real PostgreSQL and leaves nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vitalfm.db.embedded import EmbeddedPostgres, find_postgres_bindir
from vitalfm.errors import DatabaseError


def _server_running(data_dir: Path) -> bool:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return str(data_dir) in out


def test_real_server_answers_sql(pg_server: EmbeddedPostgres) -> None:
    conn = pg_server.connect()
    with conn.cursor() as cur:
        cur.execute("SELECT current_setting('server_version_num')::int, current_database()")
        version, database = cur.fetchone()
    conn.close()
    assert version >= 100000  # declarative partitioning needs PostgreSQL >= 10
    assert database == "mimic"
    assert len(str(pg_server.socket_dir / ".s.PGSQL.5432")) < 100  # unix socket path limit


def test_stop_removes_server_and_files() -> None:
    server = EmbeddedPostgres().start()
    root = server.root
    assert root is not None and _server_running(root / "data")
    server.stop()
    assert not root.exists()
    assert not _server_running(root / "data")
    server.stop()  # idempotent


def test_server_dies_with_a_killed_owner(tmp_path: Path) -> None:
    script = (
        "import sys, time\n"
        "from vitalfm.db.embedded import EmbeddedPostgres\n"
        "s = EmbeddedPostgres().start()\n"
        "print(s.root, flush=True)\n"
        "time.sleep(120)\n"
    )
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert owner.stdout is not None
    root = Path(owner.stdout.readline().strip())
    assert _server_running(root / "data")
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    deadline = time.monotonic() + 20
    while _server_running(root / "data") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _server_running(root / "data"), "server outlived its SIGKILLed owner"


def test_sigterm_stops_server_and_cleans_up() -> None:
    script = (
        "import time\n"
        "from vitalfm.db.embedded import EmbeddedPostgres\n"
        "with EmbeddedPostgres() as s:\n"
        "    print(s.root, flush=True)\n"
        "    time.sleep(120)\n"
    )
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert owner.stdout is not None
    root = Path(owner.stdout.readline().strip())
    owner.send_signal(signal.SIGTERM)
    assert owner.wait(timeout=30) != 0
    assert not root.exists()
    assert not _server_running(root / "data")


def test_missing_binaries_give_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PG_BIN", "/nonexistent")
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr("vitalfm.db.embedded.Path.glob", lambda self, pattern: iter(()))
    with pytest.raises(DatabaseError, match="initdb, postgres") as info:
        find_postgres_bindir()
    assert "envs/setup.sh" in info.value.fix


@pytest.mark.skipif(os.geteuid() != 0, reason="checks the root code path")
def test_as_root_the_server_runs_as_postgres(pg_server: EmbeddedPostgres) -> None:
    assert pg_server.user == "postgres"
    assert pg_server.root is not None
    assert pg_server.root.stat().st_uid != 0


@pytest.mark.skipif(os.geteuid() != 0, reason="as a normal user the other tests cover this path")
def test_works_as_a_normal_user(tmp_path: Path) -> None:
    """Drop to 'nobody' and start a server there: no runuser, the server runs as that user."""
    import pwd
    import sysconfig

    nobody = pwd.getpwnam("nobody")
    interpreter = Path("/usr/bin/python3.11")  # the venv's may live in root's private home
    if not interpreter.exists():
        pytest.skip("no system Python 3.11 readable by other users")
    repo = Path(__file__).resolve().parents[1]
    site = Path(sysconfig.get_paths()["purelib"])
    script = (
        "import os\n"
        "from vitalfm.db.embedded import EmbeddedPostgres\n"
        "with EmbeddedPostgres() as s:\n"
        "    c = s.connect(); cur = c.cursor(); cur.execute('select current_user')\n"
        "    print(os.geteuid(), cur.fetchone()[0], s.root.stat().st_uid)\n"
    )
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": f"{repo / 'src'}:{site}", "HOME": "/tmp"}
    done = subprocess.run(
        [str(interpreter), "-c", script],
        user=nobody.pw_uid,
        group=nobody.pw_gid,
        env=env,
        cwd="/tmp",
        capture_output=True,
        text=True,
        timeout=120,
    )
    if "ModuleNotFoundError" in done.stderr or "ImportError" in done.stderr:
        pytest.skip(f"the venv cannot be imported by 'nobody': {done.stderr.splitlines()[-1]}")
    assert done.returncode == 0, done.stderr
    uid, user, owner = done.stdout.split()
    assert int(uid) == nobody.pw_uid == int(owner)
    assert user == "nobody"
