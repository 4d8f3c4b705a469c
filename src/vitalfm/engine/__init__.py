"""The training and forecasting library every model family shares: the training loop
(:mod:`~vitalfm.engine.train`, its settings and results, its checkpoints), training data,
batched forecasting and the device a process claims. It knows nothing of Snakemake, rules or
the config file: :mod:`vitalfm.steps` decides which files, which run and what to record."""
