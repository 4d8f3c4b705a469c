"""The baselines: families built from a seeded random init, not pretrained.

Persistence (:mod:`.persistence`, the naive forecast, nothing to train), N-HiTS
(:mod:`.nhits`), N-BEATS (:mod:`.nbeats`) and DLinear (:mod:`.dlinear`). A config gives them
``source: {scratch: true}``; method kind ``scratch`` trains every parameter on the study's
windows (persistence runs ``zero_shot``). What they share: the saved form, options and
forecasting path (:mod:`.scratch`), input filling and scaling and the pinball loss
(:mod:`.inputs`), option checks (:mod:`.options`) and the doubly residual network of N-BEATS
and N-HiTS (:mod:`.residual`). Each family is registered, with trait ``baseline``, in
:mod:`vitalfm.models.registry`.
"""
