"""The Chronos family: Chronos-T5, Chronos-Bolt and Chronos-2, through chronos-forecasting.

One class per variant on a shared base, as chronos-forecasting has one pipeline class per
variant on ``BaseChronosPipeline``:

- :class:`ChronosForecaster` (:mod:`.base`): the family's class. Checkpoints (hub ids, local
  folders and our stand-ins alike) are opened with the library's own
  ``BaseChronosPipeline.from_pretrained``, and the checkpoint's config chooses the variant
  class (:meth:`ChronosForecaster.variant_for_config`);
- :class:`ChronosT5Forecaster` (:mod:`.t5`): cross-entropy over the mean-scaled, binned value
  tokens, sampled forecasts;
- :class:`ChronosBoltForecaster` (:mod:`.bolt`): its quantile (pinball) loss relative to the
  context's level, quantile forecasts;
- :class:`Chronos2Forecaster` (:mod:`.chronos2`): the model's own quantile loss on the
  horizon, quantile forecasts.

Forecasting goes through the pipeline's ``predict``; training calls the same network the
pipeline holds. The variants register in the order imported here (the stand-ins' order).
"""

# The import order is the variants' registration order (and the stand-ins').
# isort: off
from vitalfm.models.chronos.base import ChronosForecaster, check_local_checkpoint
from vitalfm.models.chronos.t5 import ChronosT5Forecaster
from vitalfm.models.chronos.bolt import ChronosBoltForecaster
from vitalfm.models.chronos.chronos2 import Chronos2Forecaster

# isort: on

__all__ = [
    "Chronos2Forecaster",
    "ChronosBoltForecaster",
    "ChronosForecaster",
    "ChronosT5Forecaster",
    "check_local_checkpoint",
]
