"""Every YAML block in README.md is a config a user can paste: it passes the schema and the
study's own checks (families, sources, methods) as it is written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from vitalfm.config import validate_config
from vitalfm.study import study_runs

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```yaml\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_has_config_blocks() -> None:
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_a_readme_config_block_is_valid_as_written(block: str) -> None:
    fragment = yaml.safe_load(block)
    config = validate_config(fragment)
    assert study_runs(config, oracle=False)
