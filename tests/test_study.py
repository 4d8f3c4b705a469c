"""The study's runs from a config: seeds, single sweep settings, the oracle, moved keys."""

from __future__ import annotations

from typing import Any

import pytest

from vitalfm.config import validate_config
from vitalfm.errors import ConfigError
from vitalfm.study import ORACLE, find_replicate, study_runs

MODELS = {
    "t5": {"family": "chronos", "source": {"standin": "chronos-t5"}},
    "bolt": {
        "family": "chronos",
        "source": {"standin": "chronos-bolt"},
        "methods": ["zero_shot", "lora-r2", "full"],
    },
    "persistence": {"family": "persistence", "source": {"scratch": True}, "methods": ["zero_shot"]},
}
METHODS = {
    "zero_shot": {"kind": "zero_shot"},
    "lora": {"kind": "lora", "rank": [1, 2, 8]},
    "full": {"kind": "full"},
}


def runs_of(**sections: Any) -> dict[str, Any]:
    cfg = validate_config({"models": MODELS, "methods": METHODS, **sections})
    return {run.run_id: run for run in study_runs(cfg)}


def test_a_model_may_list_one_setting_of_a_sweep() -> None:
    runs = runs_of()
    assert {r for r in runs if r.startswith("bolt/")} == {
        "bolt/zero_shot",
        "bolt/lora-r2",
        "bolt/full",
    }
    assert {r for r in runs if r.startswith("t5/lora")} == {
        "t5/lora-r1",
        "t5/lora-r2",
        "t5/lora-r8",
    }


def test_seeds_go_to_the_settings_named_and_the_others_run_the_first() -> None:
    runs = runs_of(training={"seeds": [3, 4, 5], "all_seeds_for": ["lora-r2", "full"]})
    assert runs["t5/lora-r2"].seeds == (3, 4, 5) and runs["t5/full"].seeds == (3, 4, 5)
    assert runs["t5/lora-r1"].seeds == (3,) and runs["t5/zero_shot"].seeds == (3,)
    assert runs["t5/full"].replicate_ids == ["t5/full/seed-3", "t5/full/seed-4", "t5/full/seed-5"]
    # a family with no parameters forecasts the same for every seed: one replicate
    everything = runs_of(training={"seeds": [0, 1]})
    assert everything["persistence/zero_shot"].seeds == (0,)
    assert everything["t5/zero_shot"].seeds == (0, 1)
    # a method name covers every setting of its sweep
    by_method = runs_of(training={"seeds": [0, 1], "all_seeds_for": ["lora"]})
    assert all(by_method[f"t5/lora-r{r}"].seeds == (0, 1) for r in (1, 2, 8))


def test_unknown_names_in_all_seeds_for_are_refused_with_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"training\.all_seeds_for names \['lora-r4'\]") as err:
        runs_of(training={"seeds": [0, 1], "all_seeds_for": ["lora-r4"]})
    assert "lora-r2" in err.value.fix


def test_the_oracle_is_a_run_of_synthetic_studies_only() -> None:
    runs = runs_of(training={"seeds": [7, 8]})
    oracle = runs[f"{ORACLE}/{ORACLE}"]
    assert oracle.is_oracle and not oracle.trains and oracle.seeds == (7,)
    assert f"{ORACLE}/{ORACLE}" not in runs_of(evaluation={"oracle": False})
    external = runs_of(database={"source": "external"})
    assert not any(run.is_oracle for run in external.values())
    with pytest.raises(ConfigError, match="reserved") as err:
        runs_of(models={**MODELS, ORACLE: MODELS["t5"]})
    assert "rename the model" in err.value.fix


def test_a_seed_the_run_does_not_replicate_is_refused() -> None:
    cfg = validate_config({"models": MODELS, "methods": METHODS, "training": {"seeds": [0, 1]}})
    assert find_replicate(cfg, "t5", "full", "1").seeds == (0, 1)
    with pytest.raises(ConfigError, match=r"no replicate with seed '9'"):
        find_replicate(cfg, "t5", "full", "9")


@pytest.mark.parametrize(
    ("section", "old", "new"),
    [
        ({"grid": {"fill": "linear"}}, "grid.fill", "windows.fill.method"),
        ({"grid": {"max_fill_gap_minutes": 60}}, "grid.max_fill_gap_minutes", "windows.fill"),
        ({"training": {"seed": 3}}, "training.seed", "training.seeds: [3]"),
    ],
)
def test_moved_settings_say_where_they_went(section: dict, old: str, new: str) -> None:
    with pytest.raises(ConfigError, match=f"{old} has moved") as err:
        validate_config(section)
    assert new in str(err.value)
