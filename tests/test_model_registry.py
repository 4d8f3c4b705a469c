"""The model-family registry (vitalfm.models.registry) and the variant registries of families
with several variants (vitalfm.models.variants): explicit registration that refuses
duplicates, one-line errors naming the registered families, traits, and no torch for the
Snakefile's side."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from vitalfm.config import validate_config
from vitalfm.errors import ConfigError
from vitalfm.models.registry import (
    FAMILIES,
    FamilyRegistry,
    baseline_families,
    forecaster_class,
    get_family,
    naive_reference_family,
)
from vitalfm.models.variants import Variants
from vitalfm.study import study_runs

MODELS = Path(__file__).resolve().parents[1] / "src" / "vitalfm" / "models"
EVERY_FAMILY = ("chronos", "moirai", "lag_llama", "persistence", "nhits", "nbeats", "dlinear")


def test_every_family_is_registered_once_with_its_traits() -> None:
    assert FAMILIES.names() == EVERY_FAMILY
    assert baseline_families() == ("persistence", "nhits", "nbeats", "dlinear")
    assert [f.name for f in FAMILIES if f.pretrained] == ["chronos", "moirai", "lag_llama"]
    assert [f.name for f in FAMILIES if not f.has_parameters] == ["persistence"]
    assert naive_reference_family() == "persistence"


@pytest.mark.parametrize("name", EVERY_FAMILY)
def test_each_registered_forecaster_imports_and_declares_its_family(name: str) -> None:
    forecaster = forecaster_class(name)
    assert forecaster.family == name
    module, class_name = get_family(name).forecaster.split(":")
    assert forecaster.__name__ == class_name and forecaster.__module__.startswith(module)


def test_baselines_live_in_the_baselines_package() -> None:
    for family in FAMILIES:
        in_baselines = family.forecaster.startswith("vitalfm.models.baselines.")
        assert in_baselines == family.baseline, family.name


def test_registration_refuses_duplicates_and_malformed_entries() -> None:
    registry = FamilyRegistry()
    registry.register("toy", "vitalfm.toy:ToyForecaster")
    with pytest.raises(ValueError, match="'toy' is already registered"):
        registry.register("toy", "vitalfm.other:OtherForecaster")
    with pytest.raises(ValueError, match="already registered"):
        FAMILIES.register("chronos", "vitalfm.models.chronos:ChronosForecaster")
    with pytest.raises(ValueError, match="lower-case identifier"):
        registry.register("Toy-2", "vitalfm.toy:ToyForecaster")
    with pytest.raises(ValueError, match="not 'module:Class'"):
        registry.register("toy2", "vitalfm.toy.ToyForecaster")
    with pytest.raises(ValueError, match="a pretrained family has parameters"):
        registry.register("toy3", "vitalfm.toy:Toy", has_parameters=False)
    registry.register("naive", "vitalfm.toy:Naive", baseline=True, naive_reference=True)
    with pytest.raises(ValueError, match="naive is already the naive reference"):
        registry.register("naive2", "vitalfm.toy:Naive2", baseline=True, naive_reference=True)
    assert registry.names() == ("toy", "naive")


def test_a_registered_class_must_declare_the_registered_name() -> None:
    registry = FamilyRegistry()
    wrong = registry.register("chronos2", "vitalfm.models.chronos:ChronosForecaster")
    with pytest.raises(TypeError, match="declares family = 'chronos'"):
        wrong.forecaster_class()


def test_an_unknown_family_is_one_line_naming_the_registered_ones() -> None:
    with pytest.raises(ConfigError) as err:
        forecaster_class("prophet")
    message = str(err.value)
    assert "unknown model family 'prophet'" in message
    assert ", ".join(sorted(EVERY_FAMILY)) in message
    assert "src/vitalfm/models/registry.py" in message
    with pytest.raises(ConfigError) as err:
        study_runs(
            validate_config(
                {
                    "models": {"m": {"family": "prophet", "source": {"standin": "p"}}},
                    "methods": {"zero_shot": {"kind": "zero_shot"}},
                }
            )
        )
    problem, fix = err.value.problem, err.value.fix
    assert problem == "config key models.m.family = 'prophet' is an unknown model family"
    assert ", ".join(sorted(EVERY_FAMILY)) in fix and "\n" not in fix


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"family": "chronos", "source": {"scratch": True}}, "cannot be built from scratch"),
        ({"family": "nhits", "source": {"standin": "nhits"}}, "is a standin, but family nhits"),
        ({"family": "dlinear", "source": {"hub": "x/y"}}, "is a hub, but family dlinear"),
    ],
)
def test_the_study_checks_the_source_against_the_family(model: dict, message: str) -> None:
    config = {
        "models": {"m": {**model, "methods": ["scratch"]}},
        "methods": {"scratch": {"kind": "scratch"}},
    }
    with pytest.raises(ConfigError, match=message):
        study_runs(validate_config(config))


def test_no_module_outside_the_registry_lists_the_families() -> None:
    """Traits replace lists of family names: no other source module may hold a tuple, list
    or set of two or more registered family names (as study.py's UNTRAINED_FAMILIES did)."""
    names = set(EVERY_FAMILY)
    found = []
    for path in sorted((MODELS.parent).rglob("*.py")):
        if path == MODELS / "registry.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Tuple | ast.List | ast.Set):
                values = [e.value for e in node.elts if isinstance(e, ast.Constant)]
                if len(names.intersection(v for v in values if isinstance(v, str))) >= 2:
                    found.append(f"{path.relative_to(MODELS.parent)}:{node.lineno}")
    assert found == []


def test_the_adapter_save_guard_is_written_once() -> None:
    """Forecaster.save_pretrained refuses an adapter-wrapped module for every family."""
    sources = [path.read_text() for path in MODELS.rglob("*.py")]
    assert sum(text.count("cannot save an adapter-wrapped model") for text in sources) == 1


def test_variants_refuse_a_second_class_under_one_name() -> None:
    variants: Variants[type] = Variants("toy")

    @variants.register
    class First:
        VARIANT = "one"

    class Again:
        VARIANT = "one"

    with pytest.raises(ValueError, match="toy variant 'one' is already registered"):
        variants.register(Again)
    assert variants.names() == ("one",) and variants.get("one") is First
    assert variants.get("two") is None


def test_the_snakefile_side_imports_no_torch() -> None:
    """What parsing the Snakefile runs (the config check, the study's runs for every family of
    the default config, the family traits) imports no torch."""
    code = (
        "import sys, vitalfm.config, vitalfm.job_settings, vitalfm.profiles, vitalfm.recovery,"
        " vitalfm.reporting, vitalfm.study;"
        "from vitalfm.config import read_config_file, validate_config;"
        "from vitalfm.models.registry import FAMILIES;"
        "runs = vitalfm.study.study_runs(validate_config(read_config_file('config.yaml')));"
        "assert {r.family for r in runs} >= set(FAMILIES.names()), 'a family is not in config';"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=MODELS.parents[2])
