"""Every bad input ends in one clear message (the problem and the fix), a non-zero exit and no
output that looks finished. Config cases run real Snakemake on a copy of the checkout, as a user
would; job cases run single real jobs in a small prepared study (persistence only)."""

from __future__ import annotations

import contextlib
import copy
import errno
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from vitalfm.testing import copy_checkout
from vitalfm.testing_workflow import load_study_config, run_snakemake, study_config_file

REPO = Path(__file__).resolve().parents[1]
BASE = yaml.safe_load((REPO / "config.yaml").read_text())
CHRONOS = {"family": "chronos", "source": {"standin": "chronos-t5"}}


def output_of(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_checkout(REPO, tmp_path_factory.mktemp("checkout"))


def _set(path: str, value: Any) -> Callable[[dict], None]:
    """A change of config.yaml: set the dotted key ``path`` to ``value``."""

    def change(config: dict) -> None:
        *parents, last = path.split(".")
        node = config
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value

    return change


def _add_model(name: Any, entry: dict) -> Callable[[dict], None]:
    return lambda config: config["models"].__setitem__(name, entry)


def _drop(path: str) -> Callable[[dict], None]:
    def change(config: dict) -> None:
        *parents, last = path.split(".")
        node = config
        for part in parents:
            node = node[part]
        del node[last]

    return change


#: (id, change to config.yaml, what the message must say: the problem, then the fix)
CONFIG_CASES: list[tuple[str, Callable[[dict], None], tuple[str, ...]]] = [
    # huge numbers
    (
        "training-batch-size-huge",
        _set("training.batch_size", 1_000_000_000),
        ("training.batch_size = 1 000 000 000 is too large", "from 1 to 65 536"),
    ),
    (
        "forecast-batch-size-huge",
        _set("forecast.batch_size", 10**7),
        ("forecast.batch_size", "too large", "from 1 to 65 536"),
    ),
    (
        "num-samples-huge",
        _set("forecast.num_samples", 10**9),
        ("forecast.num_samples", "too large", "from 1 to 10 000"),
    ),
    (
        "n-patients-huge",
        _set("synthetic.n_patients", 10**9),
        ("synthetic.n_patients", "too large", "from 1 to 1 000 000"),
    ),
    (
        "corpus-series-huge",
        _set("pretrain.corpus.n_series", 10**12),
        ("pretrain.corpus.n_series", "too large", "from 16 to 10 000 000"),
    ),
    (
        "max-steps-huge",
        _set("training.max_steps", 10**12),
        ("training.max_steps", "too large", "from 1 to 10 000 000"),
    ),
    (
        "rank-huge",
        _set("methods.lora.rank", [2, 10**6]),
        ("methods.lora.rank.1", "too large", "from 1 to 4096"),
    ),
    (
        "seed-huge",
        _set("training.seeds", [10**30]),
        ("training.seeds.0", "too large", "from 0 to 2 147 483 647"),
    ),
    # zero, negative, not a number
    ("rank-zero", _set("methods.lora.rank", 0), ("methods.lora.rank = 0 is too small", "from 1")),
    (
        "rank-zero-in-sweep",
        _set("methods.lora.rank", [0, 2]),
        ("methods.lora.rank.0 = 0 is too small", "from 1 to 4096"),
    ),
    (
        "batch-size-negative",
        _set("training.batch_size", -4),
        ("training.batch_size = -4 is too small", "from 1 to 65 536"),
    ),
    (
        "learning-rate-nan",
        _set("training.learning_rate", float("nan")),
        ("training.learning_rate = nan is not a finite number", "write a number"),
    ),
    (
        "learning-rate-inf",
        _set("methods.full.learning_rate", float("inf")),
        ("methods.full.learning_rate = inf is not a finite number", "write a number"),
    ),
    # wrong types
    (
        "batch-size-text",
        _set("training.batch_size", "64"),
        ("training.batch_size = '64' is a text, not a whole number", "write a whole number"),
    ),
    (
        "batch-size-fraction",
        _set("training.batch_size", 1.5),
        ("training.batch_size = 1.5 is a number, not a whole number", "write a whole number"),
    ),
    (
        "batch-size-boolean",
        _set("training.batch_size", True),
        ("training.batch_size = True is true/false", "write a whole number"),
    ),
    (
        "rank-text",
        _set("methods.lora.rank", "two"),
        ("methods.lora.rank = 'two' is a text", "a whole number from 1 to 4096, or a list"),
    ),
    (
        "models-a-list",
        _set("models", ["chronos"]),
        ("config key models = ['chronos'] is a list", "a mapping"),
    ),
    # empty values
    (
        "models-empty",
        _set("models", {}),
        ("config key models is empty", "add a model under `models`, e.g."),
    ),
    (
        "methods-empty",
        _set("methods", {}),
        ("config key methods is empty", "add a method under `methods`"),
    ),
    (
        "vitals-empty",
        _set("vitals.names", []),
        ("config key vitals.names is an empty list", "one of heart_rate"),
    ),
    (
        "model-name-empty",
        _add_model("", CHRONOS),
        ("the model name '' under `models` is not allowed", "lower-case letters"),
    ),
    (
        "source-empty",
        _set("models.persistence.source", {}),
        ("models.persistence.source = {} must name exactly one source", "source: {hub:"),
    ),
    (
        "family-missing",
        _drop("models.persistence.family"),
        ("models.persistence lacks family", "add `family: ...`"),
    ),
    # names: path traversal, path characters, unicode
    (
        "model-name-traversal",
        _add_model("../../evil", CHRONOS),
        ("the model name '../../evil' under `models` is not allowed", "without '..'"),
    ),
    (
        "model-name-dotdot",
        _add_model("a..b", CHRONOS),
        ("the model name 'a..b'", "without '..'"),
    ),
    (
        "model-name-slash",
        _add_model("a/b", CHRONOS),
        ("the model name 'a/b'", "lower-case letters, digits, '.', '_' and '-' only"),
    ),
    (
        "model-name-absolute",
        _add_model("/etc", CHRONOS),
        ("the model name '/etc'", "starting with a letter or digit"),
    ),
    (
        "model-name-unicode",
        _add_model("chrönos", CHRONOS),
        ("the model name 'chrönos'", "lower-case letters"),
    ),
    (
        "model-name-too-long",
        _add_model("m" * 65, CHRONOS),
        ("the model name 'mmmm", "at most 64 characters"),
    ),
    (
        "method-name-traversal",
        lambda config: config["methods"].__setitem__("../x", {"kind": "zero_shot"}),
        ("the method name '../x' under `methods` is not allowed", "without '..'"),
    ),
    (
        "standin-name-traversal",
        _set("models.chronos-t5-standin.source.standin", "../../../tmp/evil"),
        (
            "models.chronos-t5-standin.source.standin = '../../../tmp/evil' is not an allowed",
            "without '..'",
        ),
    ),
    (
        "standin-name-absolute",
        _set("models.chronos-t5-standin.source.standin", "/tmp/evil"),
        ("source.standin = '/tmp/evil' is not an allowed name", "lower-case letters"),
    ),
    (
        "family-traversal",
        _set("models.persistence.family", "../../x"),
        ("models.persistence.family = '../../x' is not allowed", "lower-case letters"),
    ),
    (
        "schema-injection",
        _set("database.schema", "mimic; DROP TABLE x"),
        ("database.schema = 'mimic; DROP TABLE x' is not allowed", "lower-case letters"),
    ),
    # values the schema allows but the study cannot use
    (
        "min-horizon-observed-above-horizon",
        _set("windows.min_horizon_observed", 13),
        (
            "windows.min_horizon_observed = 13",
            "windows.horizon_hours = 3 h at grid.frequency_minutes = 15 is 12 grid steps",
            "set windows.min_horizon_observed to at most 12, or lengthen windows.horizon_hours",
        ),
    ),
    (
        "quantile-levels-without-crps-levels",
        _set("forecast.quantile_levels", [0.05, 0.5, 0.95]),
        ("forecast.quantile_levels lacks 0.1, 0.2", "add the missing levels"),
    ),
    (
        "quantile-levels-without-median",
        _set("forecast.quantile_levels", [0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9]),
        ("forecast.quantile_levels lacks 0.5", "add the missing levels"),
    ),
    (
        "method-setting-name-collision",
        _set("methods.lora-r2", {"kind": "full"}),
        ("setting 'lora-r2' has the name of a setting of methods.lora", "rename one"),
    ),
    (
        "unknown-key",
        _set("trainning", {"max_steps": 5}),
        ("config key trainning is not a known setting", "remove or rename it"),
    ),
    (
        "device-preference",
        _set("device.preference", "gpu"),
        ("device.preference = 'gpu' is not allowed", "auto, cpu, cuda or cuda:N"),
    ),
    (
        "split-sums",
        _set("split.train", 0.9),
        ("split.train + split.validation + split.test = 1.3, not 1", "add up to 1"),
    ),
]


def _no_results(workdir: Path) -> None:
    assert not (workdir / "results").exists(), "a refused config left results/"


@pytest.mark.parametrize(
    ("change", "expected"),
    [pytest.param(change, expected, id=name) for name, change, expected in CONFIG_CASES],
)
def test_bad_config_value_is_refused_before_any_job(
    checkout: Path, tmp_path: Path, change: Callable[[dict], None], expected: tuple[str, ...]
) -> None:
    config = copy.deepcopy(BASE)
    change(config)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config, allow_unicode=True))
    result = run_snakemake(checkout, "-n", "--configfile", str(bad))
    out = output_of(result)
    assert result.returncode != 0, out
    assert "Invalid configuration:" in out and "How to fix:" in out, out
    for text in expected:
        assert text in out, f"{text!r} not in:\n{out}"
    assert "Traceback" not in out and "Failed validating" not in out, out
    assert out.count("How to fix:") == 1, out
    _no_results(checkout)


def test_missing_config_file_names_it(checkout: Path) -> None:
    """Snakemake reads --configfile before the Snakefile; its own message names the file."""
    result = run_snakemake(checkout, "-n", "--configfile", "no-such-study.yaml")
    out = output_of(result)
    assert result.returncode != 0
    assert "No such file or directory: 'no-such-study.yaml'" in out, out
    _no_results(checkout)


@pytest.mark.parametrize(
    "text", ["models:\n  a: [\n b: 1\n", "training:\n\tmax_steps: 3\n"], ids=["bracket", "tab"]
)
def test_config_file_that_is_not_yaml_is_refused(checkout: Path, tmp_path: Path, text: str) -> None:
    """Snakemake parses --configfile itself (before the Snakefile): it says the file is not YAML
    (without the line); vitalfm's own reader names the file and the line."""
    from vitalfm.config import load_config
    from vitalfm.errors import ConfigError

    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    result = run_snakemake(checkout, "-n", "--configfile", str(bad))
    out = output_of(result)
    assert result.returncode != 0
    assert "Config file is not valid JSON or YAML" in out, out
    _no_results(checkout)
    with pytest.raises(ConfigError) as caught:
        load_config(bad)
    assert f"config file {bad} is not valid YAML at line " in caught.value.problem
    assert "fix the syntax there" in caught.value.fix


def test_name_pattern_is_the_schema_pattern_and_levels_are_the_metric_levels() -> None:
    from vitalfm.config import load_schema
    from vitalfm.config_rules import NAME_MAX_LENGTH, NAME_PATTERN, REQUIRED_QUANTILE_LEVELS
    from vitalfm.evaluation.quantiles import CRPS_LEVELS

    name = load_schema()["$defs"]["name"]
    assert name["pattern"] == NAME_PATTERN and name["maxLength"] == NAME_MAX_LENGTH
    assert tuple(REQUIRED_QUANTILE_LEVELS) == tuple(CRPS_LEVELS)


# --- job cases: a small prepared study ---------------------------------------------------------

#: The persistence-only test study, relative to the study's folder.
TINY = str(study_config_file("persistence"))


def tiny_config() -> dict:
    """The persistence-only test study (.test/config/persistence.yaml), to derive a variant."""
    return load_study_config(REPO, "persistence")


@pytest.fixture(scope="module")
def prepared(checkout: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny study run up to its metrics (about 15 s)."""
    study = tmp_path_factory.mktemp("prepared") / "study"
    shutil.copytree(checkout, study, symlinks=True)
    result = run_snakemake(
        study, "--configfile", TINY, "--cores", "2", "results/metrics/metrics.parquet"
    )
    assert result.returncode == 0, output_of(result)
    return study


@pytest.fixture
def study(prepared: Path, tmp_path: Path) -> Path:
    """A copy of the prepared study (mtimes kept) that a test may damage."""
    target = tmp_path / "study"
    shutil.copytree(prepared, target, symlinks=True)
    return target


def damage(path: Path, keep: int | None = 200, garbage: bytes = b"") -> None:
    """Cut ``path`` to ``keep`` bytes (or replace it by ``garbage``), keeping its mtime so that
    Snakemake does not rerun its producer by itself."""
    stat = path.stat()
    data = path.read_bytes()
    path.write_bytes(garbage if keep is None else data[:keep])
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def assert_one_message(out: str, rule: str, *expected: str) -> None:
    assert f"ERROR in rule {rule}:" in out and "How to fix:" in out, out
    for text in expected:
        assert text in out, f"{text!r} not in:\n{out}"
    assert "Traceback" not in out, out


DAMAGED_RESULTS = [
    (
        "cohort-parquet-read-by-grid",
        "results/cohort/cohort.parquet",
        "grid",
        "results/grid/grid.parquet",
        "delete results/cohort/cohort.parquet and run snakemake again: rule cohort remakes it",
    ),
    (
        "scores-parquet-read-by-metrics",
        "results/scores/test/persistence/zero_shot/seed-0.parquet",
        "metrics",
        "results/metrics/metrics.parquet",
        "rule score remakes it",
    ),
    (
        "windows-npz-read-by-score",
        "results/windows/test.npz",
        "score",
        "results/scores/test/persistence/zero_shot/seed-0.parquet",
        "delete it and rerun the windows rule",
        # the windows reader's own message
        "window file results/windows/test.npz is corrupt or incomplete",
    ),
    (
        "cohort-parquet-read-by-split",
        "results/cohort/cohort.parquet",
        "split",
        "results/splits/manifest.parquet",
        "rule cohort remakes it",
    ),
]


@pytest.mark.parametrize(
    ("damaged", "rule", "target", "fix", "problem"),
    [pytest.param(*case[1:5], *case[5:] or [None], id=case[0]) for case in DAMAGED_RESULTS],
)
def test_damaged_result_file_names_it_and_the_rule_that_remakes_it(
    study: Path, damaged: str, rule: str, target: str, fix: str, problem: str | None
) -> None:
    damage(study / damaged)
    result = run_snakemake(study, "--configfile", TINY, "--cores", "1", "--forcerun", rule, target)
    out = output_of(result)
    assert result.returncode != 0
    problem = problem or f"{damaged}, an input of rule {rule}, is damaged and cannot be read"
    assert_one_message(out, rule, problem, fix)
    assert not (study / target).exists(), "the failed job left its output"


def test_truncated_synthetic_csv_names_the_file_and_the_fix(study: Path) -> None:
    csv = study / "results/database/synthetic_mimic/CHARTEVENTS.csv.gz"
    damage(csv, keep=csv.stat().st_size // 2)
    target = "results/vitals/vitals.parquet"
    result = run_snakemake(
        study, "--configfile", TINY, "--cores", "1", "--forcerun", "vitals", target
    )
    out = output_of(result)
    assert result.returncode != 0
    assert_one_message(
        out,
        "vitals",
        "CHARTEVENTS.csv.gz of the synthetic MIMIC-III is damaged",
        "delete the folder results/database/synthetic_mimic and run snakemake again: rule "
        "synthetic_mimic remakes it",
    )
    assert not (study / target).exists()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "config.json is not valid JSON"),
        ("", "config.json is not valid JSON"),
        ('{"model_type": "t5"}', "is not a Chronos checkpoint"),
    ],
    ids=["not-json", "empty", "not-chronos"],
)
def test_model_folder_with_bad_config_json(
    study: Path, tmp_path: Path, content: str, expected: str
) -> None:
    folder = tmp_path / "chronos-small"
    folder.mkdir()
    (folder / "config.json").write_text(content)
    (folder / "model.safetensors").write_bytes(b"\0" * 16)
    config = tiny_config()
    config["models"]["local-chronos"] = {
        "family": "chronos",
        "source": {"path": str(folder)},
        "methods": ["zero_shot"],
    }
    (study / "local.yaml").write_text(yaml.safe_dump(config))
    target = "results/forecasts/test/local-chronos/zero_shot/seed-0.parquet"
    result = run_snakemake(study, "--configfile", "local.yaml", "--cores", "1", target)
    out = output_of(result)
    assert result.returncode != 0
    assert_one_message(out, "forecast", f"model folder {folder}", expected)
    assert not (study / target).exists()


# --- the external database ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "column"),
    [("chartevents", "valuenum"), ("icustays", "intime"), ("patients", "dob")],
)
def test_external_table_missing_a_column_stops_check_database(
    checkout: Path, tmp_path: Path, pg_server: Any, mimic_schema: str, table: str, column: str
) -> None:
    conn = pg_server.connect()
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"ALTER TABLE {mimic_schema}.{table} DROP COLUMN {column} CASCADE")
    conn.close()
    config = copy.deepcopy(BASE)
    config["database"] = {"source": "external", "dsn": pg_server.dsn(), "schema": mimic_schema}
    bad = tmp_path / "external.yaml"
    bad.write_text(yaml.safe_dump(config))
    target = "results/database/external_database.json"
    result = run_snakemake(checkout, "--configfile", str(bad), "--cores", "1", target)
    out = output_of(result)
    assert result.returncode != 0, out
    assert_one_message(
        out,
        "check_database",
        f"{mimic_schema}.{table} lacks column(s) {column}",
        "mimic-code's buildmimic/postgres",
    )
    assert not (checkout / target).exists()
    shutil.rmtree(checkout / "results", ignore_errors=True)


# --- a full disk -------------------------------------------------------------------------------


@contextlib.contextmanager
def tiny_tmpfs(folder: Path, size: str = "4k") -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}); see the /dev/full test")
    # not empty: Snakemake removes empty output folders after a failure (a mount point cannot go)
    (folder / "placeholder").touch()
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_full_disk_names_the_folder_that_filled_up(study: Path) -> None:
    """A real full disk: the windows job writes onto a 4 kB file system."""
    windows = study / "results/windows"
    shutil.rmtree(windows)
    with tiny_tmpfs(windows):
        target = "results/windows/test.npz"
        result = run_snakemake(study, "--configfile", TINY, "--cores", "1", target)
        out = output_of(result)
        assert result.returncode != 0
        assert_one_message(
            out,
            "windows",
            "the disk holding results/windows",
            "is full (No space left on device)",
            "free space on that disk",
        )
        assert not (study / target).exists()
        left = [p.name for p in windows.iterdir()]
        assert left == ["placeholder"], f"a partial file was left on the full disk: {left}"


def test_full_disk_through_the_script_entry(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    """The same message where no tmpfs can be mounted: the job's write hits /dev/full."""
    from vitalfm.snakemake_script import run

    out_dir = tmp_path / "results" / "cohort"
    sm = SimpleNamespace(
        log=[str(tmp_path / "job.log")],
        rule="cohort",
        input=[],
        output=[str(out_dir / "cohort.parquet")],
        config={},
    )

    def step(_sm: Any) -> None:
        with open("/dev/full", "w") as full:
            full.write("x" * 100_000)

    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    saved = sys.stdout, sys.stderr
    try:
        with pytest.raises(SystemExit) as stopped:
            run(sm, step)
    finally:
        sys.stdout, sys.stderr = saved
    assert stopped.value.code == 1
    log = (tmp_path / "job.log").read_text()
    assert "ERROR in rule cohort: rule cohort stopped: the disk holding" in log
    assert str(out_dir) in log and "No space left on device" in log
    assert "How to fix: free space on that disk" in log
    assert errno.ENOSPC == 28
