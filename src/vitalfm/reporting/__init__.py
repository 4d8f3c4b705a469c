"""The study's tables and figures, from the metrics, the runs' metadata and the data summaries.

:func:`vitalfm.reporting.tables.build_tables` and :func:`vitalfm.reporting.figures.build_figures`
read a results tree (``results/`` by default) and write ``results/tables/<name>.{csv,md,tex,html}``
and ``results/figures/<name>.{png,pdf}``. The names below are what the Snakemake rules
``tables`` and ``figures`` declare as outputs; this module stays free of pandas and matplotlib
so that parsing the Snakefile is fast.
"""

from __future__ import annotations

#: Every table, in the order the report lists them: {name: title}.
TABLES: dict[str, str] = {
    "findings": "The study's answer: each model's best adaptation against its zero-shot form",
    "main_comparison": "Main comparison, min-max scale: model x method setting x vital",
    "main_comparison_original": "Main comparison, original units: model x method setting x vital",
    "parameter_efficiency": "Parameter efficiency: trainable parameters, time, memory, device",
    "rank_sweep": "Rank sweep: error against adapter rank",
    "method_comparison": "PEFT method comparison",
    "seed_variance": "Training and sampling variance across seeds",
    "cohort": "Cohort selection",
    "splits": "Patient-level splits and forecasting windows",
    "vitals_grid": "Vital signs on the regular grid",
    "software_versions": "Software versions",
}
#: Every table is written in each of these formats (HTML is the report's view).
TABLE_FORMATS = ("csv", "md", "tex", "html")

#: Every figure: {name: title}.
FIGURES: dict[str, str] = {
    "rank_sweep": "Error against LoRA rank",
    "pareto": "Error against trainable parameters, with the Pareto front",
    "error_by_horizon": "Error by horizon step",
    "calibration": "Calibration: observed coverage against each quantile level",
    "example_forecasts": "Example forecasts against the truth",
    "loss_curves": "Training and validation loss curves",
}
FIGURE_FORMATS = ("png", "pdf")

#: The effective configuration (defaults filled in), written beside the tables, and its
#: highlighted HTML view for the report.
STUDY_CONFIG = "study_config.yaml"
STUDY_CONFIG_HTML = "study_config.html"

#: The alarm table and figure (rule clinical_events_report, beside tables and figures):
#: results/tables/clinical_events.{csv,md,tex,html} and results/figures/clinical_events.{png,pdf}.
CLINICAL_EVENTS = "clinical_events"
