"""A job imports only the library modules it uses (issue 15: job overhead), and the libraries
still work whole when some other code asks for them."""

from __future__ import annotations

import subprocess
import sys

import pytest

from vitalfm.lazy_imports import import_leaf


def _python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    return done.stdout.strip()


def test_lag_llama_imports_no_lightning_and_gluonts_torch_still_works_whole() -> None:
    out = _python(
        "import sys\n"
        "import vitalfm.models.lag_llama as lag\n"
        "print('lightning' in sys.modules)\n"
        "import gluonts.torch\n"
        "from gluonts.torch import DLinearEstimator\n"
        "from gluonts.torch.scaler import MeanScaler\n"
        "print('lightning' in sys.modules, DLinearEstimator.__name__,"
        " MeanScaler is lag.features.MeanScaler, gluonts.torch.scaler.MeanScaler is MeanScaler)\n"
    )
    assert out.splitlines() == ["False", "True DLinearEstimator True True"]


def test_a_leaf_import_of_a_package_already_loaded_is_a_plain_import() -> None:
    import json.decoder

    assert import_leaf("json.decoder", "json") is json.decoder


def test_a_leaf_must_lie_inside_its_package() -> None:
    with pytest.raises(ValueError, match="is not inside package"):
        import_leaf("gluonts.torch.scaler", "gluonts.torch.model")
