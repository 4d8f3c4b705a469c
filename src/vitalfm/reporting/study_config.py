"""The effective configuration (every default filled in, the database password redacted),
written beside the tables as YAML and as a highlighted HTML page for the report."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from vitalfm.db.dsn import redact_dsn
from vitalfm.io import write_text
from vitalfm.reporting import STUDY_CONFIG, STUDY_CONFIG_HTML


def write_study_config(cfg: Mapping[str, Any], out: Path) -> None:
    """``out/study_config.yaml`` and its HTML view."""
    text = "# The study's configuration with every default filled in (as validated).\n"
    shown = _plain(dict(cfg))
    if isinstance(shown.get("database"), dict) and "dsn" in shown["database"]:
        shown["database"]["dsn"] = redact_dsn(shown["database"]["dsn"])
    text += yaml.safe_dump(shown, sort_keys=False)
    write_text(text, out / STUDY_CONFIG)
    write_text(_config_html(text), out / STUDY_CONFIG_HTML)


def _config_html(text: str) -> str:
    """The YAML as a standalone highlighted page (the report shows HTML inline)."""
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import YamlLexer

    return highlight(text, YamlLexer(), HtmlFormatter(full=True, title="Effective configuration"))


def _plain(obj: Any) -> Any:
    """Snakemake hands over its own mapping types; YAML wants plain dicts and lists."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
