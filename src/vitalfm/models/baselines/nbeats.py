"""N-BEATS (Oreshkin et al., ICLR 2020), generic architecture, as a from-scratch baseline.

Stacks of blocks; each block is an MLP whose output gives a backcast of its input and a
forecast, and blocks are chained doubly residually (each block sees the context minus what
the blocks before it explained; the forecasts add up). The authors' group used N-BEATS on ICU
vitals (arXiv 2306.14016, 2311.04770). Here it forecasts the study's quantile levels directly
and trains on the pinball loss, with the observed mask as a second input (see
:mod:`vitalfm.models.baselines.inputs`).

Why our own implementation: the maintained ones do not fit the stack. neuralforecast pulls in
ray, optuna and tensorboardX, darts pulls numba, statsmodels, scikit-learn, shap and xarray,
both train through their own Lightning loops rather than this engine's, and gluonts has
N-BEATS only for MXNet. The network is a few linear layers (:class:`ResidualBlock`), shared
with N-HiTS, which is N-BEATS plus input pooling and forecast interpolation.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from vitalfm.models.baselines.options import fraction, positive_int
from vitalfm.models.baselines.residual import DoublyResidualNet, ResidualBlock, block_parameters
from vitalfm.models.baselines.scratch import QuantileForecaster


class NBeatsForecaster(QuantileForecaster):
    family: ClassVar[str] = "nbeats"
    OPTIONS: ClassVar[dict[str, str]] = {
        "stacks": "number of stacks (default 2)",
        "blocks": "blocks per stack (default 2); the network is stacks x blocks blocks",
        "layers": "fully connected hidden layers per block (default 2; the paper uses 4)",
        "hidden_size": "units per hidden layer (default 64; the paper uses 512)",
        "dropout": "dropout after each hidden layer, in [0, 1) (default 0)",
    }
    DEFAULTS: ClassVar[dict[str, Any]] = {
        "stacks": 2,
        "blocks": 2,
        "layers": 2,
        "hidden_size": 64,
        "dropout": 0.0,
    }

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        for name in ("stacks", "blocks", "layers", "hidden_size"):
            positive_int(cls.family, name, options[name])
        return {**options, "dropout": fraction(cls.family, "dropout", options["dropout"])}

    @classmethod
    def build_module(
        cls,
        architecture: dict[str, Any],
        context_steps: int | None,
        horizon_steps: int | None,
        quantile_levels: tuple[float, ...],
    ) -> nn.Module:
        assert context_steps is not None and horizon_steps is not None
        blocks = [
            ResidualBlock(
                context_steps,
                horizon_steps,
                len(quantile_levels),
                architecture["hidden_size"],
                architecture["layers"],
                dropout=architecture["dropout"],
            )
            for _ in range(architecture["stacks"] * architecture["blocks"])
        ]
        return DoublyResidualNet(blocks)

    @classmethod
    def parameter_count(
        cls, options: dict[str, Any], context_steps: int, horizon_steps: int, n_quantiles: int
    ) -> int:
        """Parameters of the network these options build, without building it."""
        arch = cls.resolve_options(options)
        block = block_parameters(
            context_steps, horizon_steps, n_quantiles, arch["hidden_size"], arch["layers"]
        )
        return arch["stacks"] * arch["blocks"] * block
