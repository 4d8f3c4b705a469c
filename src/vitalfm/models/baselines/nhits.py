"""N-HiTS (Challu et al., AAAI 2023) as a from-scratch baseline: the group's benchmark family.

N-HiTS is N-BEATS (:mod:`.nbeats`) with two changes per stack: multi-rate input
sampling (each block max-pools its input with the stack's kernel, so early stacks see a
coarse context) and hierarchical interpolation (each block emits ``ceil(horizon / ratio)``
knots per output, linearly interpolated to the horizon, so early stacks forecast the slow
part and later ones the detail). The authors' group trains N-HiTS on ICU vitals (arXiv
2311.04770) and the follow-up LoRA paper compares against a ~700K-parameter N-HiTS.

Here it forecasts the study's quantile levels directly (pinball loss), with the observed mask
as a second input. Our own implementation for the reasons given in :mod:`.nbeats`
(neuralforecast and darts bring ray/optuna or numba/statsmodels/shap and their own Lightning
training loops). :meth:`NHitsForecaster.parameter_count` sizes a configuration without
building it.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from torch import nn

from vitalfm.models.baselines.options import choice, fraction, positive_int, positive_int_list
from vitalfm.models.baselines.residual import DoublyResidualNet, ResidualBlock, block_parameters
from vitalfm.models.baselines.scratch import QuantileForecaster


def default_rates(stacks: int) -> list[int]:
    """Halving per stack down to 1, e.g. [4, 2, 1] for three stacks (the paper's pattern)."""
    return [2 ** (stacks - 1 - i) for i in range(stacks)]


class NHitsForecaster(QuantileForecaster):
    family: ClassVar[str] = "nhits"
    OPTIONS: ClassVar[dict[str, str]] = {
        "stacks": "number of stacks (default 3)",
        "blocks": "blocks per stack (default 1)",
        "layers": "fully connected hidden layers per block (default 2)",
        "hidden_size": "units per hidden layer (default 64; 512 in the paper and in darts)",
        "pooling": (
            "input pooling kernel per stack: a list with one value per stack, or one value for "
            "all (default halving to 1, e.g. [4, 2, 1])"
        ),
        "downsample": (
            "forecast downsampling ratio per stack: a block emits ceil(horizon / ratio) knots "
            "per quantile, interpolated to the horizon (default halving to 1, e.g. [4, 2, 1])"
        ),
        "pooling_mode": "max (the paper's) or average",
        "interpolation": "linear (the paper's) or nearest",
        "dropout": "dropout after each hidden layer, in [0, 1) (default 0)",
    }
    DEFAULTS: ClassVar[dict[str, Any]] = {
        "stacks": 3,
        "blocks": 1,
        "layers": 2,
        "hidden_size": 64,
        "pooling": None,
        "downsample": None,
        "pooling_mode": "max",
        "interpolation": "linear",
        "dropout": 0.0,
    }

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        out = dict(options)
        for name in ("stacks", "blocks", "layers", "hidden_size"):
            positive_int(cls.family, name, options[name])
        stacks = options["stacks"]
        for name in ("pooling", "downsample"):
            value = options[name]
            if value is None:
                value = default_rates(stacks)
            elif isinstance(value, int) and not isinstance(value, bool):
                value = [positive_int(cls.family, name, value)] * stacks
            out[name] = positive_int_list(cls.family, name, value, stacks)
        out["pooling_mode"] = choice(
            cls.family, "pooling_mode", options["pooling_mode"], ("max", "average")
        )
        out["interpolation"] = choice(
            cls.family, "interpolation", options["interpolation"], ("linear", "nearest")
        )
        out["dropout"] = fraction(cls.family, "dropout", options["dropout"])
        return out

    @staticmethod
    def knots(horizon_steps: int, ratio: int) -> int:
        return max(1, math.ceil(horizon_steps / ratio))

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
                pool=pool,
                pool_mode=architecture["pooling_mode"],
                knots=cls.knots(horizon_steps, ratio),
                interpolation=architecture["interpolation"],
                dropout=architecture["dropout"],
            )
            for pool, ratio in zip(architecture["pooling"], architecture["downsample"], strict=True)
            for _ in range(architecture["blocks"])
        ]
        return DoublyResidualNet(blocks)

    @classmethod
    def parameter_count(
        cls, options: dict[str, Any], context_steps: int, horizon_steps: int, n_quantiles: int
    ) -> int:
        """Parameters of the network these options build, without building it."""
        arch = cls.resolve_options(options)
        return arch["blocks"] * sum(
            block_parameters(
                context_steps,
                horizon_steps,
                n_quantiles,
                arch["hidden_size"],
                arch["layers"],
                pool=pool,
                knots=cls.knots(horizon_steps, ratio),
            )
            for pool, ratio in zip(arch["pooling"], arch["downsample"], strict=True)
        )
