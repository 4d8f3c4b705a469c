"""Where the study's MIMIC-III comes from: the user's server, or the synthetic one served by a
throwaway embedded PostgreSQL for the length of one job."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from vitalfm.db.connection import check_mimic_schema, external_connection, set_read_only
from vitalfm.db.embedded import EmbeddedPostgres
from vitalfm.errors import DataError

log = logging.getLogger(__name__)


@contextlib.contextmanager
def study_connection(
    database_cfg: Mapping[str, Any],
    synthetic_dir: str | Path | None = None,
    tables: Sequence[str] | None = None,
) -> Iterator[Any]:
    """Yield a read-only connection to a database holding MIMIC-III in ``database_cfg['schema']``.

    For ``source: synthetic`` a server is started, the synthetic CSVs (``tables`` only, if
    given) are loaded, and the server is stopped and deleted when the block ends or fails.
    """
    if database_cfg["source"] == "external":
        with external_connection(database_cfg) as conn:
            yield conn
        return
    from vitalfm.synthetic import load_csv_dir  # the generator is only needed in this mode

    if synthetic_dir is None or not (Path(synthetic_dir) / "MANIFEST.json").exists():
        raise DataError(
            f"the synthetic MIMIC-III in {synthetic_dir} is missing or incomplete",
            "rerun the workflow so that rule synthetic_mimic regenerates it",
        )
    check_synthetic_files(Path(synthetic_dir), tables)
    with EmbeddedPostgres() as server:
        conn = server.connect()
        try:
            started = time.perf_counter()
            load_csv_dir(conn, Path(synthetic_dir), schema=database_cfg["schema"], tables=tables)
            conn.commit()
            log.info("loaded synthetic MIMIC-III in %.1f s", time.perf_counter() - started)
            set_read_only(conn)
            check_mimic_schema(conn, database_cfg["schema"], tables or ())
            yield conn
        finally:
            conn.close()


def check_synthetic_files(folder: Path, tables: Sequence[str] | None) -> None:
    """DataError naming the first CSV of ``tables`` (default all) whose bytes differ from what
    rule synthetic_mimic wrote (the sha256 in MANIFEST.json): cut short, edited or replaced."""
    import hashlib
    import json

    try:
        manifest = json.loads((folder / "MANIFEST.json").read_text())
        entries = manifest["tables"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(
            f"{folder}/MANIFEST.json of the synthetic MIMIC-III is damaged ({err})",
            f"delete the folder {folder} and run snakemake again: rule synthetic_mimic remakes it",
        ) from None
    for table in tables if tables is not None else list(entries):
        entry = entries.get(table)
        if not isinstance(entry, dict) or "sha256" not in entry:
            continue
        path = folder / str(entry.get("file", ""))
        digest = hashlib.sha256()
        try:
            with open(path, "rb") as stream:
                while block := stream.read(1 << 20):
                    digest.update(block)
        except OSError as err:
            raise DataError(
                f"{path} of the synthetic MIMIC-III cannot be read ({err.strerror or err})",
                f"delete the folder {folder} and run snakemake again: rule synthetic_mimic "
                "remakes it",
            ) from None
        if digest.hexdigest() != entry["sha256"]:
            raise DataError(
                f"{path} of the synthetic MIMIC-III is damaged: its contents differ from what "
                "rule synthetic_mimic wrote (cut short by a full disk or an interrupted copy, "
                "or edited)",
                f"delete the folder {folder} and run snakemake again: rule synthetic_mimic "
                "remakes it",
            )
