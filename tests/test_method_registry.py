"""The method registry (vitalfm.methods.registry): registration, the generated config schema,
and the rule that no module outside the registry declares a method kind."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from vitalfm.config import load_schema, validate_config
from vitalfm.errors import ConfigError
from vitalfm.methods import (
    Field,
    MethodKind,
    expand_method,
    method_entry_schema,
    method_kind,
    method_kinds,
    ranked_kinds,
    register,
    zero_shot_kind,
)
from vitalfm.methods.registry import POSITIVE_NUMBER

SRC = Path(__file__).resolve().parents[1] / "src" / "vitalfm"
#: Test-support modules build example configs whose method names equal kind names.
NOT_SCANNED = ("testing.py", "testing_slurm.py")


def test_every_kind_module_registers_one_kind() -> None:
    modules = sorted(p.stem for p in (SRC / "methods" / "kinds").glob("[!_]*.py"))
    assert sorted(method_kinds()) == modules
    for name, kind in method_kinds().items():
        assert kind.kind == name and kind.summary
        assert kind.__module__ == f"vitalfm.methods.kinds.{name}"


def test_traits() -> None:
    assert zero_shot_kind() == "zero_shot"
    assert {"lora", "dora", "vera"} <= set(ranked_kinds())
    assert not method_kind("zero_shot").trains and not method_kind("oracle").configurable
    assert method_kind("scratch").for_scratch and not method_kind("scratch").for_pretrained
    assert {k for k, v in method_kinds().items() if v.saves == "model"} == {"full", "scratch"}
    assert issubclass(method_kind("dora"), method_kind("lora"))  # DoRA is a LoRA variant


def test_a_second_kind_of_one_name_is_refused() -> None:
    class Twin(MethodKind):
        kind = "lora"
        summary = "a second lora"

    with pytest.raises(ValueError, match="registered twice"):
        register(Twin)
    assert method_kind("lora") is not Twin


def test_a_shared_field_name_must_mean_the_same() -> None:
    class Odd(MethodKind):
        kind = "odd-test-kind"
        summary = "rank as a number"
        fields = (Field("rank", POSITIVE_NUMBER, "not an integer"),)

    with pytest.raises(ValueError, match="field 'rank' differs"):
        register(Odd)
    assert "odd-test-kind" not in method_kinds()


def test_the_schema_method_entry_is_generated_from_the_registry() -> None:
    schema = load_schema()
    assert schema["properties"]["methods"]["additionalProperties"] == {"$ref": "#/$defs/method"}
    entry = schema["$defs"]["method"]
    assert entry == method_entry_schema()
    assert entry["properties"]["kind"]["enum"] == list(method_kinds(configurable_only=True))
    fields = {f.name for k in method_kinds(configurable_only=True).values() for f in k.fields}
    assert set(entry["properties"]) == {"kind", *fields}
    rank = entry["properties"]["rank"]
    assert rank["oneOf"][1]["type"] == "array"  # a sweep field also takes a list


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        ({"kind": "lorra"}, "methods.m.kind"),
        ({"kind": "lora", "rank": 0}, "methods.m.rank"),
        ({"kind": "lora", "ranks": 2}, "methods.m"),
        ({"kind": "bitfit", "rank": 2}, "kind bitfit does not use rank"),
        ({"kind": "oracle"}, "methods.m.kind"),
    ],
)
def test_bad_method_entries_are_refused_when_the_config_is_read(entry: dict, match: str) -> None:
    from vitalfm.config import read_config_file
    from vitalfm.study import study_runs

    default = read_config_file(SRC.parents[1] / "config.yaml")
    config = {**default, "methods": {**default["methods"], "m": entry}}
    with pytest.raises(ConfigError, match=match):
        study_runs(validate_config(config))


def test_the_study_cannot_name_its_own_kinds() -> None:
    with pytest.raises(ConfigError, match="added by the study itself"):
        expand_method("o", {"kind": "oracle"})


def test_the_snakefile_side_imports_no_torch() -> None:
    code = (
        "import sys, vitalfm.methods, vitalfm.study, vitalfm.config, vitalfm.job_settings;"
        "from vitalfm.methods import method_kinds, expand_method;"
        "[expand_method(k, {'kind': k}) for k, v in method_kinds().items() if v.configurable];"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _declarations(tree: ast.AST, kinds: set[str]) -> list[tuple[int, str]]:
    """Where a module lists method kinds (a collection of two or more) or branches on one (a
    comparison of something named like a kind with a kind's name)."""
    found = []
    for node in ast.walk(tree):
        items = []
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            items = node.elts
        elif isinstance(node, ast.Dict):
            items = [k for k in node.keys if k is not None]
        named = {i.value for i in items if isinstance(i, ast.Constant) and i.value in kinds}
        if len(named) >= 2:
            found.append((node.lineno, f"lists kinds {sorted(named)}"))
        if isinstance(node, ast.Compare):
            parts = [node.left, *node.comparators]
            for part in list(parts):
                if isinstance(part, ast.Tuple | ast.List | ast.Set):
                    parts.extend(part.elts)
            literal = [p.value for p in parts if isinstance(p, ast.Constant) and p.value in kinds]
            if literal and "kind" in ast.unparse(node).replace(repr(literal[0]), ""):
                found.append((node.lineno, f"branches on kind {literal[0]!r}"))
    return found


def test_no_module_outside_the_registry_declares_a_method_kind() -> None:
    """Adding a kind is one module in vitalfm/methods/kinds: no other module may list kinds or
    branch on one (it asks the registry for a trait instead)."""
    kinds = set(method_kinds())
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        if path.is_relative_to(SRC / "methods") or path.name in NOT_SCANNED:
            continue
        for line, what in _declarations(ast.parse(path.read_text()), kinds):
            offenders.append(f"{path.relative_to(SRC)}:{line}: {what}")
    assert not offenders, "\n".join(offenders)


def test_the_scan_finds_a_declaration() -> None:
    """The rule above can fail: it catches the forms it forbids."""
    kinds = set(method_kinds())
    for source in (
        'RANKED = ("lora", "dora")',
        'MARKERS = {"lora": "s", "full": "*"}',
        'x = run.method["kind"] == "zero_shot"',
        "y = spec.kind in ('lora',)",
    ):
        assert _declarations(ast.parse(source), kinds), source
    assert not _declarations(ast.parse('ORACLE = "oracle"; z = model == ORACLE'), kinds)


def test_the_readme_listing_command_shows_every_kind_with_its_fields() -> None:
    """README: `python -m vitalfm.methods` lists every kind with its fields and defaults."""
    out = subprocess.run(
        [sys.executable, "-m", "vitalfm.methods"], check=True, capture_output=True, text=True
    ).stdout
    for name, kind in method_kinds(configurable_only=True).items():
        assert f"\n{name}: {kind.summary}" in f"\n{out}"
    assert "  rank (default 2; a list is a sweep, settings named <method>-r<value>)" in out
    assert '  biases (default "added")' in out
    assert "oracle" not in out
