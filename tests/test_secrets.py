"""No secret on disk, ever: a database.dsn holding a password is refused when the workflow is
parsed, in every form libpq accepts and whatever database.source says, before Snakemake stores
anything; afterwards no file under the working folder holds the password.

These run real Snakemake on a copy of the checkout, as a user would.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
import yaml

from vitalfm.config import validate_config
from vitalfm.db.dsn import check_dsn, redact_dsn
from vitalfm.errors import ConfigError
from vitalfm.testing import copy_checkout
from vitalfm.testing_workflow import load_study_config, run_snakemake

REPO = Path(__file__).resolve().parents[1]
# Computed, so that no file of the copied checkout (this one included) holds it.
_TOKEN = hashlib.sha256(b"a password that must never reach a file").hexdigest()[:12]
PASSWORD = f"pw-{_TOKEN}-Zq9"
# The percent-encoded form: libpq decodes "%40" and "%2F" to "@" and "/".
ENCODED_PASSWORD = f"Zq9%40{_TOKEN}%2Fx"
DECODED_PASSWORD = f"Zq9@{_TOKEN}/x"
MESSAGE = "database.dsn holds a password"
# A cheap target per source, so that a regression (a dsn accepted) fails fast instead of
# running the whole study: the server check, or the synthetic database.
TARGETS = {
    "external": "results/database/external_database.json",
    "synthetic": "results/database/synthetic_mimic",
}

# (case, source, dsn, the strings that must appear nowhere)
CASES = [
    (
        "uri-external",
        "external",
        f"postgresql://reader:{PASSWORD}@db.example:5432/mimic",
        [PASSWORD],
    ),
    ("uri-synthetic", "synthetic", f"postgres://reader:{PASSWORD}@localhost/mimic", [PASSWORD]),
    (
        "keyword",
        "external",
        f"host=db.example dbname=mimic user=reader password={PASSWORD}",
        [PASSWORD],
    ),
    (
        "uri-query",
        "synthetic",
        f"postgresql://reader@db.example/mimic?sslmode=require&password={PASSWORD}",
        [PASSWORD],
    ),
    (
        "percent-encoded",
        "external",
        f"postgresql://reader:{ENCODED_PASSWORD}@db.example/mimic",
        [ENCODED_PASSWORD, DECODED_PASSWORD, _TOKEN],
    ),
]
IDS = [case[0] for case in CASES]


def _checkout(tmp_path: Path) -> Path:
    return copy_checkout(REPO, tmp_path / "clone")


def _write_config(workdir: Path, source: str, dsn: str) -> None:
    """A full config (--configfile replaces config.yaml): the test study of the data rules
    (.test/config/data.yaml: the default study, a small synthetic database) with this database
    section."""
    config = load_study_config(REPO, "data")
    config["database"] = {**config["database"], "source": source, "dsn": dsn}
    (workdir / "c.yaml").write_text(yaml.safe_dump(config))


def _files_holding(workdir: Path, hidden: list[str], allowed: set[Path]) -> list[str]:
    """Every file under ``workdir`` (results, .snakemake with its metadata and logs, any
    report) that holds one of ``hidden``, except ``allowed``."""
    found = []
    for path in sorted(workdir.rglob("*")):
        if path.is_symlink() or not path.is_file() or path in allowed:
            continue
        data = path.read_bytes()
        found += [f"{path.relative_to(workdir)}: {s!r}" for s in hidden if s.encode() in data]
    return found


def _assert_refused(done: subprocess.CompletedProcess, hidden: list[str]) -> None:
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-3000:]
    assert MESSAGE in output, output[-3000:]
    assert "PGPASSWORD" in output and ".pgpass" in output
    for secret in hidden:
        assert secret not in output, f"the terminal shows {secret!r}"


@pytest.mark.parametrize(("case", "source", "dsn", "hidden"), CASES, ids=IDS)
def test_password_in_config_file_is_refused_before_anything_is_stored(
    tmp_path: Path, case: str, source: str, dsn: str, hidden: list[str]
) -> None:
    workdir = _checkout(tmp_path)
    _write_config(workdir, source, dsn)
    for args in (["-n"], [TARGETS[source]]):  # a dry run (the whole study), then a real one
        done = run_snakemake(workdir, "--cores", "1", *args, "--configfile", "c.yaml")
        _assert_refused(done, hidden)
    assert not (workdir / "results").exists()
    assert not (workdir / ".snakemake/metadata").exists() or not any(
        (workdir / ".snakemake/metadata").iterdir()
    )
    assert _files_holding(workdir, hidden, allowed={workdir / "c.yaml"}) == []


@pytest.mark.parametrize(("case", "source", "dsn", "hidden"), CASES, ids=IDS)
def test_password_on_the_command_line_is_refused_before_anything_is_stored(
    tmp_path: Path, case: str, source: str, dsn: str, hidden: list[str]
) -> None:
    workdir = _checkout(tmp_path)
    _write_config(workdir, source, "")  # no password in any file
    override = "database=" + yaml.safe_dump({"source": source, "dsn": dsn}, default_flow_style=True)
    for args in (["-n"], [TARGETS[source]]):
        done = run_snakemake(
            workdir, "--cores", "1", *args, "--configfile", "c.yaml", "--config", override.strip()
        )
        _assert_refused(done, hidden)
    assert not (workdir / "results").exists()
    assert _files_holding(workdir, hidden, allowed=set()) == []


def test_report_of_a_refused_dsn_names_no_fragment_of_it() -> None:
    """Neither the refusal nor a dsn libpq cannot parse repeats any part of the dsn."""
    for _, _, dsn, hidden in CASES:
        with pytest.raises(ConfigError, match=MESSAGE) as info:
            check_dsn(dsn)
        assert not any(s in str(info.value) for s in hidden)
        assert "user=reader" in info.value.fix  # the dsn to write instead, without it
        assert not any(s in redact_dsn(dsn) for s in hidden)
    for unreadable in (f"host=db {PASSWORD}", f"postgresql://u:{PASSWORD}%zz@db/mimic"):
        with pytest.raises(ConfigError, match="not a connection string libpq can read") as info:
            check_dsn(unreadable)
        assert PASSWORD not in str(info.value)
        assert PASSWORD not in redact_dsn(unreadable)


@pytest.mark.parametrize("source", ["external", "synthetic"])
@pytest.mark.parametrize(
    "dsn",
    [
        "",
        "host=localhost dbname=mimic user=reader",
        "postgresql://reader@db.example:5432/mimic?sslmode=require",
        "host=db.example dbname=password_archive user=password",  # the word is no password
        "service=mimic passfile=/home/reader/.pgpass",
    ],
)
def test_dsn_without_password_is_accepted_and_kept_as_written(source: str, dsn: str) -> None:
    cfg = validate_config({"database": {"source": source, "dsn": dsn}})
    assert cfg["database"]["dsn"] == dsn
    assert redact_dsn(dsn) == dsn
