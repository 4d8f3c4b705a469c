"""Evaluation: metrics on observed target points, per-patient scores, the study's summaries.

Modules import downward only (quantiles <- metric_registry <- metrics <- scoring; bootstrap,
metrics <- run_summary <- paired <- summary):

- :mod:`~vitalfm.evaluation.quantiles`: the forecasts' quantile levels, intervals, columns.
- :mod:`~vitalfm.evaluation.metric_registry`: every metric, one record each.
- :mod:`~vitalfm.evaluation.metrics`: the registry's arithmetic (terms, ratios, comparisons).
- :mod:`~vitalfm.evaluation.scoring`: rule ``score`` (forecasts -> per-patient sums).
- :mod:`~vitalfm.evaluation.bootstrap`: resampling patients and seeds as count weights.
- :mod:`~vitalfm.evaluation.run_summary`: one run on one split, over seeds and the bootstrap.
- :mod:`~vitalfm.evaluation.paired`: differences against a reference, the oracle gap closed.
- :mod:`~vitalfm.evaluation.summary`: rule ``metrics`` (every run on validation and test).
- :mod:`~vitalfm.evaluation.events`: clinical events (truth, onset, forecast probability).
- :mod:`~vitalfm.evaluation.event_windows`: rule ``events`` (each window's event facts).
- :mod:`~vitalfm.evaluation.event_metrics`: rule ``event_metrics`` (AUROC, AUPRC, Brier,
  alarms, lead time, with intervals and paired differences).

Nothing is imported here, so that the config check can read the quantile levels while the
Snakefile is parsed without loading numpy or pandas.
"""
