"""The MOIRAI family: MOIRAI 1.x and Moirai-2, through uni2ts.

One class per variant on a shared base:

- :class:`MoiraiForecaster` (:mod:`.base`): the family's class. Checkpoints (hub ids, local
  folders and our stand-ins alike) are uni2ts's ``config.json`` + ``model.safetensors`` (or a
  sharded safetensors save or a ``pytorch_model.bin``: :mod:`vitalfm.models.checkpoints`); the
  config chooses the variant class (MOIRAI 1.x: ``patch_sizes`` + ``distr_output``; Moirai-2:
  ``patch_size`` + ``quantile_levels``) and the weights are opened with that variant's uni2ts
  module class's own ``from_pretrained``;
- :class:`Moirai1Forecaster` (:mod:`.moirai1`): the mixture's NLL, sampled forecasts;
- :class:`Moirai2Forecaster` (:mod:`.moirai2`): our relative pinball loss, quantile forecasts.

Inputs are packed exactly as uni2ts's forecast modules pack them (``MoiraiForecast._convert``
/ ``Moirai2Forecast._convert``), and forecasting runs those modules on the whole batch;
missing values follow each variant's released inference code (:mod:`.inputs`). The variants
register in the order imported here (the stand-ins' order).
"""

from vitalfm.models.moirai.base import MoiraiForecaster
from vitalfm.models.moirai.inputs import moirai2_inputs, moirai_inputs
from vitalfm.models.moirai.moirai1 import Moirai1Forecaster
from vitalfm.models.moirai.moirai2 import Moirai2Forecaster

__all__ = [
    "Moirai1Forecaster",
    "Moirai2Forecaster",
    "MoiraiForecaster",
    "moirai2_inputs",
    "moirai_inputs",
]
