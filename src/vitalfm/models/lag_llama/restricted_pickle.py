"""A pickle module for ``torch.load(..., pickle_module=...)`` that only rebuilds a Lag-Llama
checkpoint.

The released ``lag-llama.ckpt`` pickles gluonts objects (``StudentTOutput``, and
``NegativeLogLikelihood`` from ``gluonts.torch.modules.loss``, a module gluonts >= 0.15 no
longer has) through ``functools.partial(object.__new__, cls, ...)`` reduces, so torch's
``weights_only`` loader refuses it. Instead of turning ``weights_only`` off for everything,
``torch.load`` gets this module: its :class:`Unpickler` resolves only an explicit allowlist

- the tensor rebuild helpers torch's own loader needs (storages are resolved by torch),
- ``collections.OrderedDict``, ``functools.partial``, ``builtins.set`` and ``builtins.object``,
- ``builtins.getattr`` limited to ``<allowed class>.__new__`` (a free ``getattr`` would let a
  pickle walk from ``object`` to any function),
- every ``gluonts.*`` name, as an inert placeholder class that only records its state,

and raises :class:`UntrustedGlobal` for anything else before it can be called.
"""

from __future__ import annotations

import _compat_pickle
import collections
import functools
import io
import pickle
from typing import IO, Any

import torch

# torch.load needs these to rebuild tensors; storage classes are resolved by torch itself.
_TORCH_GLOBALS = {
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._tensor", "_rebuild_from_type_v2"),
    ("torch", "Size"),
    ("torch", "device"),
    ("torch.serialization", "_get_layout"),
}
_PLAIN_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("functools", "partial"): functools.partial,
    ("builtins", "set"): set,
    ("builtins", "object"): object,
}


class UntrustedGlobal(pickle.UnpicklingError):
    """The pickle names a global outside the allowlist (``qualified_name`` says which)."""

    def __init__(self, qualified_name: str) -> None:
        super().__init__(f"it pickles {qualified_name}")
        self.qualified_name = qualified_name


class GluontsPlaceholder:
    """Stands in for a pickled gluonts object: keeps the state, runs nothing."""

    gluonts_name: str = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<placeholder for {self.gluonts_name}>"


_placeholders: dict[str, type[GluontsPlaceholder]] = {}


def placeholder(qualified_name: str) -> type[GluontsPlaceholder]:
    """One placeholder class per gluonts name."""
    if qualified_name not in _placeholders:
        short = qualified_name.rsplit(".", 1)[-1]
        _placeholders[qualified_name] = type(
            short, (GluontsPlaceholder,), {"gluonts_name": qualified_name}
        )
    return _placeholders[qualified_name]


def _allowed_new_owner(owner: Any) -> bool:
    return owner is object or (
        isinstance(owner, type)
        and (issubclass(owner, GluontsPlaceholder) or owner in (collections.OrderedDict, set))
    )


def _restricted_getattr(owner: Any, name: str, *default: Any) -> Any:
    """``getattr`` as the checkpoint uses it: ``cls.__new__`` of an allowed class only."""
    if name != "__new__" or default or not _allowed_new_owner(owner):
        owner_name = getattr(owner, "__qualname__", type(owner).__qualname__)
        raise UntrustedGlobal(f"builtins.getattr({owner_name}, {name!r})")
    return owner.__new__


def _torch_dtype(module: str, name: str) -> Any:
    if module == "torch":
        value = getattr(torch, name, None)
        if isinstance(value, torch.dtype):
            return value
    return None


class Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        # protocol 2 writes Python 2 names (__builtin__.set); map them as pickle does
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        else:
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) == ("builtins", "getattr"):
            return _restricted_getattr
        if (module, name) in _PLAIN_GLOBALS:
            return _PLAIN_GLOBALS[(module, name)]
        if (module, name) in _TORCH_GLOBALS:
            return super().find_class(module, name)
        dtype = _torch_dtype(module, name)
        if dtype is not None:
            return dtype
        if module == "gluonts" or module.startswith("gluonts."):
            return placeholder(f"{module}.{name}")
        raise UntrustedGlobal(f"{module}.{name}")


def load(file: IO[bytes], **kwargs: Any) -> Any:
    return Unpickler(file, **kwargs).load()


def loads(data: bytes, **kwargs: Any) -> Any:
    return Unpickler(io.BytesIO(data), **kwargs).load()


# torch.save is never given this module, but a pickle module is expected to have these.
Pickler = pickle.Pickler
dump = pickle.dump
UnpicklingError = pickle.UnpicklingError
