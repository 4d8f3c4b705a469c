"""What a step receives (vitalfm.steps): the settings a rule hands it, parsed and checked once,
the operations kept out of them, and no step that reads or validates the config itself."""

from __future__ import annotations

import inspect
import json
from types import SimpleNamespace
from typing import Any

import pytest

from vitalfm import job_settings
from vitalfm.config import validate_config
from vitalfm.job_settings import Operations
from vitalfm.snakemake_script import operations_of, settings_of, synthetic_dir_of
from vitalfm.steps import SettingsError, settings_for

#: The rule modules of vitalfm.steps (standalone is the config-reading helper for tests).
RULE_MODULES = ("database", "cohort", "preprocess", "models", "evaluation", "report")


def test_settings_are_parsed_from_the_rules_json_or_taken_as_given() -> None:
    cfg = validate_config({})
    text = job_settings.split(cfg)
    assert settings_for(text, "split", ["split"]) == {"split": cfg["split"]}
    assert settings_for({"split": cfg["split"]}, "split", ["split"]) == {"split": cfg["split"]}


def test_missing_keys_are_named_with_the_builder_to_use() -> None:
    with pytest.raises(SettingsError) as err:
        settings_for('{"grid": {}}', "windows", ["grid", "windows", "vitals"])
    assert err.value.problem == (
        "the settings given to step windows lack windows, vitals (they hold grid)"
    )
    assert "vitalfm.job_settings.windows" in err.value.fix
    with pytest.raises(SettingsError) as err:
        settings_for({}, "figures", ["models"])
    assert "vitalfm.job_settings.report" in err.value.fix  # tables and figures share one


def test_operations_hold_exactly_the_keys_that_rerun_nothing() -> None:
    cfg = validate_config(
        {
            "device": {"preference": "cpu", "lock_dir": "/tmp/locks"},
            "training": {"checkpoint_every": 7, "keep_checkpoints": True},
            "vitals": {"stays_per_query": 3},
            "database": {"connect_timeout_s": 9},
        }
    )
    assert job_settings.operations(cfg) == Operations(
        device_preference="cpu",
        device_lock_dir="/tmp/locks",
        checkpoint_every=7,
        keep_checkpoints=True,
        stays_per_query=3,
        connect_timeout_s=9,
    )
    every = json.dumps(
        [
            json.loads(job_settings.report(cfg)),
            json.loads(job_settings.cohort(cfg)),
            json.loads(job_settings.vitals(cfg)),
        ]
    )
    for key in ("lock_dir", "checkpoint_every", "keep_checkpoints", "stays_per_query"):
        assert key not in every, key
    assert "connect_timeout_s" not in every


def test_report_and_metrics_settings_keep_the_configs_order() -> None:
    """The runs of the tables are in the order of ``models`` and ``methods``."""
    models = {
        "zeta": {"family": "persistence", "source": {"scratch": True}, "methods": ["zero_shot"]},
        "alpha": {"family": "chronos", "source": {"standin": "chronos-bolt"}},
    }
    cfg = validate_config({"models": models})
    for settings in (job_settings.report(cfg), job_settings.metrics(cfg)):
        assert list(json.loads(settings)["models"]) == ["zeta", "alpha"]
    assert list(json.loads(job_settings.report(cfg))) == [k for k in cfg if k != "device"]
    # the other rules' settings stay sorted: reordering a YAML file reruns none of them
    assert job_settings.split(cfg) == json.dumps(
        {"split": cfg["split"]}, sort_keys=True, separators=(",", ":")
    )


def test_method_overrides_are_resolved_into_the_training_settings() -> None:
    from vitalfm.study import find_replicate

    cfg = validate_config(
        {
            "methods": {"full": {"kind": "full", "learning_rate": 0.0003}},
            "training": {"learning_rate": 0.003, "max_steps": 10},
        }
    )
    run = find_replicate(cfg, "chronos-t5-standin", "full", 0)
    training = json.loads(job_settings.finetune(cfg, run, 0))["training"]
    assert (training["learning_rate"], training["max_steps"]) == (0.0003, 10)
    assert "checkpoint_every" not in training and "seeds" not in training


def test_scripts_hand_steps_the_params_settings_and_the_configs_operations() -> None:
    cfg = validate_config({"device": {"preference": "cpu"}})
    sm: Any = SimpleNamespace(
        params=SimpleNamespace(settings=job_settings.split(cfg)),
        config=cfg,
        input=SimpleNamespace(database="results/database/synthetic_mimic"),
    )
    assert settings_of(sm) == job_settings.split(cfg)
    assert operations_of(sm).device_preference == "cpu"
    assert synthetic_dir_of(sm) == "results/database/synthetic_mimic"
    sm.input.database = "results/database/external_database.json"
    assert synthetic_dir_of(sm) is None


@pytest.mark.parametrize("name", RULE_MODULES)
def test_no_step_reads_or_validates_the_config(name: str) -> None:
    import importlib

    source = inspect.getsource(importlib.import_module(f"vitalfm.steps.{name}"))
    for forbidden in ("validate_config", "snakemake", "load_config", "read_config_file"):
        assert forbidden not in source, f"vitalfm.steps.{name} uses {forbidden}"
