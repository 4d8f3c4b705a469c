"""Per-series random streams for the sampling families (issue 17: patient isolation).

A series' sample paths must depend only on its own context, time axis and seed, never on its
position in the batch or on the other series sharing it. ``predict(..., seeds=...)`` therefore
takes one seed per row (int64 in ``[0, 2**63)``), and every random draw for row ``i`` comes
from a stream seeded by ``seeds[i]`` alone. Two ways are used, by what does the drawing:

* our own samplers (Chronos-T5's fast top-k draw, Lag-Llama's Student-t) draw from one
  ``torch.Generator`` per row on the model's device (:func:`row_generators`);
* a library's ``Distribution.sample`` (uni2ts's mixture, gluonts' Student-t, the Chronos
  pipeline), which only reads torch's global generators, runs once per row on that row's
  parameters with the device's global generator reseeded by the row's seed, inside a
  ``fork_rng`` block that restores the global state afterwards (:func:`seeded_rows`,
  :func:`sample_rows`). The library's own distribution and draws are kept unchanged.

With ``seeds=None`` the families draw from torch's global generator as before (the engine
seeds it per batch), so upstream-equality tests seeded with ``torch.manual_seed`` still hold.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch

from vitalfm.models.base import ModelError

#: Seeds are int64 values in [0, SEED_LIMIT).
SEED_LIMIT = 2**63


def check_seeds(seeds: np.ndarray | None, rows: int) -> np.ndarray | None:
    """``seeds`` as int64 [rows] (None stays None); ModelError if it is not one valid seed per
    row."""
    if seeds is None:
        return None
    fix = (
        f"pass seeds=None or a numpy int64 array of {rows} seeds (one per series) in "
        "[0, 2**63), e.g. np.arange(rows, dtype=np.int64)"
    )
    array = np.asarray(seeds)
    if array.dtype.kind not in "iu" or array.shape != (rows,):
        raise ModelError(
            f"seeds must be one integer per series: got {array.dtype} of shape {array.shape} "
            f"for a batch of {rows}",
            fix,
        )
    if array.size and (array.min() < 0 or array.max() >= SEED_LIMIT):
        raise ModelError(f"seeds must lie in [0, 2**63): got {array.min()} .. {array.max()}", fix)
    return array.astype(np.int64)


def row_generators(seeds: np.ndarray, device: torch.device) -> list[torch.Generator]:
    """One generator per row on ``device``, row ``i``'s seeded by ``seeds[i]``."""
    return [torch.Generator(device=device).manual_seed(int(seed)) for seed in seeds]


def row_uniforms(generators: list[torch.Generator], shape: tuple[int, ...]) -> torch.Tensor:
    """[rows, *shape] uniforms in [0, 1), row ``i`` drawn from ``generators[i]`` alone."""
    return torch.stack([torch.rand(shape, generator=g, device=g.device) for g in generators])


def row_normals(generators: list[torch.Generator], shape: tuple[int, ...]) -> torch.Tensor:
    """[rows, *shape] standard normals, row ``i`` drawn from ``generators[i]`` alone."""
    return torch.stack([torch.randn(shape, generator=g, device=g.device) for g in generators])


def row_student_t(
    df: torch.Tensor,
    loc: torch.Tensor,
    scale: torch.Tensor,
    generators: list[torch.Generator],
    normals: torch.Tensor,
) -> torch.Tensor:
    """One Student-t draw per path; paths are rows' consecutive blocks of equal size.

    ``df, loc, scale`` [paths] (paths = rows x paths per row, row-major), ``normals`` the
    paths' standard normals for this draw (drawn by the caller from the rows' generators).
    The draw is ``loc + scale * Z / sqrt(V / df)`` with ``V ~ Chi2(df) = 2 Gamma(df / 2)``, as
    ``torch.distributions.StudentT`` draws it (the chi-square clamped at the smallest normal
    float, as ``Gamma.rsample`` does); row ``i``'s gamma variates come from
    ``generators[i]`` alone.
    """
    per_row = len(df) // len(generators)
    concentration = (0.5 * df).reshape(len(generators), per_row)
    gamma = torch.stack(
        [
            torch._standard_gamma(c, generator=g)
            for c, g in zip(concentration, generators, strict=True)
        ]
    ).reshape(-1)
    chi2 = (2.0 * gamma).clamp_min(torch.finfo(gamma.dtype).tiny)
    return loc + scale * normals * torch.rsqrt(chi2 / df)


@contextmanager
def seeded_rows(device: torch.device) -> Iterator[Callable[[int], None]]:
    """Yield ``reseed(seed)``, which reseeds torch's global generators of the CPU and of
    ``device`` with ``seed``; their states before the block are restored after it.

    For library samplers that only read the global generators: call ``reseed(seeds[i])``
    before drawing row ``i`` (its parameters alone), so that its draws come from its own seed.
    """
    if device.type == "cpu":
        devices: list[int] = []
        generators = [torch.default_generator]
    elif device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
        generators = [torch.default_generator, torch.cuda.default_generators[devices[0]]]
    else:
        raise ModelError(
            f"per-series seeds are implemented for CPU and CUDA devices, not {device.type}",
            "forecast on the CPU or a CUDA device, or without seeds",
        )

    def reseed(seed: int) -> None:
        for generator in generators:
            generator.manual_seed(seed)

    with torch.random.fork_rng(devices=devices, device_type="cuda"):
        yield reseed


def sample_rows(
    distribution_of: Callable[[slice], torch.distributions.Distribution],
    seeds: np.ndarray,
    sample_shape: tuple[int, ...],
    device: torch.device,
) -> torch.Tensor:
    """``distribution.sample(sample_shape)`` of a batch whose rows are drawn one by one, row
    ``i`` under its own seed (:func:`seeded_rows`).

    ``distribution_of(rows)`` builds the batch's distribution restricted to ``rows`` (a slice
    of the batch dimension, which follows the sample dimensions in the result).
    """
    parts = []
    with seeded_rows(device) as reseed:
        for row, seed in enumerate(seeds):
            reseed(int(seed))
            parts.append(distribution_of(slice(row, row + 1)).sample(torch.Size(sample_shape)))
    return torch.cat(parts, dim=len(sample_shape))
