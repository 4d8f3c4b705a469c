"""A synthetic MIMIC-III: deterministic generator, PhysioNet-style CSV files, PostgreSQL loaders.

No MIMIC-III data can be shipped, so the study (and its tests) run on a generated database with
the real schema and conventions: see :mod:`vitalfm.synthetic.generator` for what is modelled.

>>> write_csv_dir({"n_patients": 120, "seed": 1}, "out/mimic")      # doctest: +SKIP
>>> load_csv_dir(conn, "out/mimic", schema="mimiciii")             # doctest: +SKIP
>>> load_direct(conn, {"n_patients": 20000}, schema="mimiciii")    # doctest: +SKIP
"""

from vitalfm.synthetic.generator import (
    BATCH_PATIENTS,
    GENERATOR_VERSION,
    Batch,
    iter_batches,
    synthetic_settings,
)
from vitalfm.synthetic.latent_stays import StayTruth
from vitalfm.synthetic.sinks import (
    MANIFEST,
    csv_file_name,
    load_csv_dir,
    load_direct,
    read_manifest,
    table_row_counts,
    write_csv_dir,
)

__all__ = [
    "BATCH_PATIENTS",
    "GENERATOR_VERSION",
    "MANIFEST",
    "Batch",
    "StayTruth",
    "csv_file_name",
    "iter_batches",
    "load_csv_dir",
    "load_direct",
    "read_manifest",
    "synthetic_settings",
    "table_row_counts",
    "write_csv_dir",
]
