"""Import a library's leaf module without running its package's ``__init__`` first.

Why: ``gluonts.torch/__init__.py`` imports every gluonts estimator and, through them, Lightning
(about 2.5 s), though Lag-Llama needs only its scaler and lag helper. Every model job pays
its imports (issue 15: job overhead), so a job imports only the modules it uses.

:func:`import_leaf` puts a placeholder for the package in ``sys.modules`` whose ``__init__``
runs the first time anything asks the package itself for a name (``from gluonts.torch import
X`` or ``gluonts.torch.X``): code that wants the whole package still gets it, unchanged.
Python has no public switch for this; the standard library's ``importlib.util.LazyLoader`` is
the nearest, but it defers a module's whole body and still runs ``__init__`` before a
submodule's import.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType


def import_leaf(module: str, package: str) -> ModuleType:
    """``importlib.import_module(module)``, but ``package`` (a parent of ``module``) keeps its
    ``__init__`` for when the package itself is used."""
    if not module.startswith(package + "."):
        raise ValueError(f"{module!r} is not inside package {package!r}")
    if package not in sys.modules:
        _install_placeholder(package)
    return importlib.import_module(module)


def _install_placeholder(package: str) -> None:
    spec = importlib.util.find_spec(package)  # imports the package's parents, not the package
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        raise ImportError(f"{package!r} is not an importable package")
    placeholder = importlib.util.module_from_spec(spec)

    def complete(name: str) -> object:
        """First use of the package itself: run its real ``__init__`` in the placeholder."""
        del placeholder.__dict__["__getattr__"]
        spec.loader.exec_module(placeholder)  # type: ignore[union-attr]
        return getattr(placeholder, name)

    placeholder.__dict__["__getattr__"] = complete
    sys.modules[package] = placeholder
    parent, _, child = package.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, placeholder)
