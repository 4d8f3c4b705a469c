"""Number formatting and one table written four ways: CSV, Markdown, LaTeX (booktabs) and HTML.

A :class:`Table` holds display strings (numbers already formatted, e.g. ``"0.0412 [0.0391,
0.0436]"``) and a mask of cells to emphasise (the best setting). CSV keeps the strings and
names the emphasised columns in a ``best`` column; Markdown and LaTeX set them in bold. Names
with LaTeX's special characters (``lora_r2``, ``95%``) are escaped by pandas' Styler.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from vitalfm.io import write_text

MISSING = "–"


def fmt_number(value: float | None, digits: int = 4) -> str:
    """``digits`` significant digits; the dash for a missing value."""
    if value is None or not math.isfinite(float(value)):
        return MISSING
    return f"{float(value):.{digits}g}"


def fmt_ci(value: float | None, low: float | None, high: float | None, digits: int = 4) -> str:
    """``"value [low, high]"``, or just the value when the interval is missing."""
    text = fmt_number(value, digits)
    if text == MISSING:
        return text
    if low is None or high is None or not (np.isfinite(low) and np.isfinite(high)):
        return text
    return f"{text} [{fmt_number(low, digits)}, {fmt_number(high, digits)}]"


def fmt_int(value: float | None) -> str:
    if value is None or not math.isfinite(float(value)):
        return MISSING
    return f"{round(float(value)):d}"


def fmt_count(value: float | None) -> str:
    """Thousands separated, so parameter counts read at a glance."""
    if value is None or not math.isfinite(float(value)):
        return MISSING
    return f"{round(float(value)):,d}"


def fmt_size(parameters: float | None) -> str:
    """Model size in millions of parameters (``"0.29 M"``)."""
    if parameters is None or not math.isfinite(float(parameters)):
        return MISSING
    if parameters == 0:
        return "0"
    return f"{float(parameters) / 1e6:.3g} M"


def fmt_percent(value: float | None, digits: int = 3) -> str:
    if value is None or not math.isfinite(float(value)):
        return MISSING
    return f"{float(value):.{digits}g}%"


def parse_ci(text: str) -> tuple[float, float, float]:
    """The inverse of :func:`fmt_ci` (NaN for missing parts); used by tests and readers."""
    text = text.strip()
    if text == MISSING:
        return math.nan, math.nan, math.nan
    if "[" not in text:
        return float(text), math.nan, math.nan
    value, rest = text.split("[", 1)
    low, high = rest.rstrip("]").split(",")
    return float(value), float(low), float(high)


@dataclass
class Table:
    """One table: display strings, what to emphasise, and what it counts."""

    name: str
    title: str
    frame: pd.DataFrame  # every cell a string
    notes: list[str] = field(default_factory=list)
    bold: pd.DataFrame | None = None  # bool, same shape as ``frame``

    def __post_init__(self) -> None:
        self.frame = self.frame.reset_index(drop=True).astype(str)
        if self.bold is None:
            self.bold = pd.DataFrame(False, index=self.frame.index, columns=self.frame.columns)
        else:
            self.bold = (
                self.bold.reset_index(drop=True)
                .reindex(index=self.frame.index, columns=self.frame.columns)
                .eq(True)  # cells a builder did not mark (NaN) are not bold
            )

    @property
    def caption(self) -> str:
        return " ".join([self.title + ".", *self.notes])


def _csv_frame(table: Table) -> pd.DataFrame:
    frame = table.frame.copy()
    if table.bold is not None and table.bold.to_numpy().any():
        frame["best"] = [
            ";".join(col for col in table.frame.columns if row[col])
            for _, row in table.bold.iterrows()
        ]
    return frame


def to_markdown(table: Table) -> str:
    frame = table.frame.copy()
    for col in frame.columns:
        frame[col] = [
            (f"**{v}**" if b else v).replace("|", r"\|")
            for v, b in zip(frame[col], table.bold[col], strict=True)
        ]
    frame.columns = [str(c).replace("|", r"\|") for c in frame.columns]
    body = frame.to_markdown(index=False, disable_numparse=True) if len(frame) else _empty_md(frame)
    notes = "\n".join(f"- {note}" for note in table.notes)
    return f"**{table.title}**\n\n{body}\n\n{notes}\n"


def _empty_md(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    return f"{header}\n{rule}"


def to_latex(table: Table) -> str:
    """A booktabs ``longtable`` (the main comparison runs over pages), every name escaped."""
    frame = table.frame
    styler = frame.style.hide(axis="index")
    styler = styler.format(escape="latex").format_index(escape="latex", axis=1)
    bold = table.bold
    styler = styler.apply(lambda _: np.where(bold.to_numpy(), "textbf:--rwrap;", ""), axis=None)
    column_format = "".join("r" if _numeric_looking(frame[c]) else "l" for c in frame.columns)
    caption = _latex_escape(table.caption)
    return styler.to_latex(
        hrules=True,
        environment="longtable",
        caption=caption,
        label=f"tab:{table.name}",
        column_format=column_format or "l",
    )


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def _latex_escape(text: str) -> str:
    """Escape a caption (Styler escapes cells and headers, but not the caption it is given)."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def _numeric_looking(column: pd.Series) -> bool:
    values = [v for v in column if v != MISSING]
    if not values:
        return False
    return all(v[:1].isdigit() or v[:1] in "-+." for v in values)


_HTML_STYLE = """
body { font-family: system-ui, sans-serif; font-size: 13px; margin: 1em; }
table { border-collapse: collapse; }
th, td { padding: 2px 8px; border-bottom: 1px solid #ddd; text-align: left; white-space: nowrap; }
th { border-bottom: 2px solid #444; position: sticky; top: 0; background: #fff; }
caption { caption-side: top; text-align: left; font-weight: bold; padding-bottom: 6px; }
ul { color: #444; }
"""


def to_html(table: Table) -> str:
    """A standalone page (the report shows HTML inline; CSV/Markdown/LaTeX are for papers)."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.frame.columns)
    rows = []
    for i in range(len(table.frame)):
        cells = []
        for col in table.frame.columns:
            text = html.escape(table.frame.at[i, col])
            cells.append(f"<td><b>{text}</b></td>" if table.bold.at[i, col] else f"<td>{text}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in table.notes)
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(table.title)}</title><style>{_HTML_STYLE}</style></head><body>\n"
        f"<table><caption>{html.escape(table.title)}</caption>\n"
        f"<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody></table>\n"
        f"<ul>{notes}</ul>\n</body></html>\n"
    )


def write_table(table: Table, out_dir: str | Path) -> dict[str, Path]:
    """Write ``<name>.csv/.md/.tex/.html`` atomically; returns {format: path}."""
    out = Path(out_dir)
    paths = {fmt: out / f"{table.name}.{fmt}" for fmt in ("csv", "md", "tex", "html")}
    write_text(_csv_frame(table).to_csv(index=False), paths["csv"])
    write_text(to_markdown(table), paths["md"])
    write_text(to_latex(table), paths["tex"])
    write_text(to_html(table), paths["html"])
    return paths
