"""``python -m vitalfm.methods``: every method kind a config may use, with its fields.

For each kind: what it is, whether it trains and what it saves, then each field with its
default and help, as the registry declares them (so this list cannot drift from the code).
"""

from __future__ import annotations

import json
import sys
from typing import TextIO

from vitalfm.methods.registry import method_kinds


def describe_kinds(out: TextIO) -> None:
    for name, kind in method_kinds(configurable_only=True).items():
        what = "trains nothing" if not kind.trains else f"trains; saves {kind.saves}"
        sources = [
            s
            for s, ok in (("pretrained", kind.for_pretrained), ("scratch", kind.for_scratch))
            if ok
        ]
        out.write(f"{name}: {kind.summary} ({what}; for {' and '.join(sources)} models)\n")
        for field in kind.fields:
            default = "unset" if field.default is None else json.dumps(field.default)
            sweep = (
                f"; a list is a sweep, settings named <method>-{field.sweep}<value>"
                if field.sweep
                else ""
            )
            out.write(f"  {field.name} (default {default}{sweep}): {field.help}\n")


if __name__ == "__main__":
    describe_kinds(sys.stdout)
