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
