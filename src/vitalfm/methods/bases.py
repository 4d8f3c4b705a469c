"""The ways a method trains, each a base class that kinds specialise.

- :class:`PeftMethod`: an additive adapter built by peft's ``get_peft_model`` (no task type) on
  the family's attention linears (``scope: attention+ffn`` adds the FFN, ``target_modules``
  replaces both); base weights stay frozen and bit-identical. Saved as peft's own folder
  (``adapter_config.json`` + ``adapter_model.safetensors``); loading merges it into the base.
  A kind supplies :meth:`PeftMethod.peft_config` and what its saved config must say.
- :class:`SelectiveMethod`: a few existing (or added) tensors train in place; saved as
  ``tuned_parameters.safetensors`` + ``tuned_parameters.json`` (:mod:`vitalfm.methods.saving`).
  A kind supplies :meth:`SelectiveMethod.select`.
- :class:`WholeModelMethod`: every parameter trains; the family's ``save_pretrained`` saves the
  whole model, so ``save``/``load`` refuse (the caller uses the family's own).
- :class:`UntrainedMethod`: the model forecasts as it is; nothing is saved.

Torch-free at import: the torch side is imported inside the methods.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from vitalfm.methods.registry import SCOPE, TARGET_MODULES, TRAINING_OVERRIDES, Field, MethodKind

#: The fields every peft method has besides its own: where it applies, and training overrides.
PEFT_FIELDS: tuple[Field, ...] = (SCOPE, TARGET_MODULES, *TRAINING_OVERRIDES)


def _model_error(spec: Any, problem: str, fix: str) -> Exception:
    from vitalfm.models.base import ModelError

    return ModelError(f"method {spec.name!r}: {problem}", fix)


class PeftMethod(MethodKind):
    """An adapter added by peft; subclasses build its peft config."""

    saves: ClassVar[str] = "adapter"
    #: ``peft_type`` in a saved ``adapter_config.json`` of this kind.
    peft_type: ClassVar[str]
    #: Shown when peft refuses the targets.
    peft_hint: ClassVar[str] = "fix `target_modules` in config to name supported layers (nn.Linear)"

    @classmethod
    def peft_config(cls, module: Any, spec: Any, targets: Any, patterns: tuple[str, ...]) -> Any:
        """peft's config for ``spec`` on ``module`` (``patterns``: the layers to wrap)."""
        raise NotImplementedError(cls.kind)  # pragma: no cover - every kind defines it

    @classmethod
    def holds_this_kind(cls, saved: dict[str, Any]) -> bool:
        """Whether a saved ``adapter_config.json`` is an adapter of this kind."""
        return saved.get("peft_type") == cls.peft_type

    @classmethod
    def patterns(cls, module: Any, spec: Any, targets: Any) -> tuple[str, ...]:
        """The layers to wrap (checked to match): ``target_modules``, else the family's
        layers for the method's ``scope``."""
        from vitalfm.methods import modules

        patterns = modules.scope_patterns(spec, targets)
        modules.check_patterns(module, spec, patterns, "target module")
        return patterns

    @classmethod
    def adapt(cls, module: Any, spec: Any, targets: Any) -> Any:
        import peft

        from vitalfm.methods import modules

        patterns = cls.patterns(module, spec, targets)
        config = cls.peft_config(module, spec, targets, patterns)
        modules.patch_input_embeddings(module)
        try:
            return peft.get_peft_model(module, config)
        except ValueError as err:
            raise _model_error(
                spec,
                f"peft cannot apply {spec.kind} to {type(module).__name__}: {err}; its Linear "
                f"modules are: {modules.sample_names(module)}",
                cls.peft_hint,
            ) from err

    @classmethod
    def save(cls, module: Any, spec: Any, directory: Path) -> None:
        from vitalfm.methods import saving

        saving.save_peft(module, spec, Path(directory))

    @classmethod
    def load(cls, base: Any, spec: Any, directory: Path) -> Any:
        from vitalfm.methods import saving

        return saving.load_peft(base, spec, Path(directory), cls)


class SelectiveMethod(MethodKind):
    """Existing tensors of the model train in place; subclasses pick them."""

    saves: ClassVar[str] = "tensors"

    @classmethod
    def select(cls, module: Any, spec: Any, targets: Any) -> None:
        """Set ``requires_grad`` on what trains (the module arrives fully frozen)."""
        raise NotImplementedError(cls.kind)  # pragma: no cover - every kind defines it

    @classmethod
    def adapt(cls, module: Any, spec: Any, targets: Any) -> Any:
        from vitalfm.methods import modules

        module.requires_grad_(False)
        cls.select(module, spec, targets)
        if cls.trains:
            modules.require_something_trains(module, spec)
        return module

    @classmethod
    def save(cls, module: Any, spec: Any, directory: Path) -> None:
        from vitalfm.methods import saving

        saving.save_tensors(module, spec, Path(directory))

    @classmethod
    def load(cls, base: Any, spec: Any, directory: Path) -> Any:
        from vitalfm.methods import saving

        return saving.load_tensors(base, spec, Path(directory))


class WholeModelMethod(MethodKind):
    """Every parameter trains; the family saves and loads the whole model."""

    saves: ClassVar[str] = "model"
    fields: ClassVar[tuple[Field, ...]] = TRAINING_OVERRIDES

    @classmethod
    def adapt(cls, module: Any, spec: Any, targets: Any) -> Any:
        return module.requires_grad_(True)

    @classmethod
    def save(cls, module: Any, spec: Any, directory: Path) -> None:
        raise _model_error(
            spec,
            f"a fully trained ({spec.kind}) model has no adapter to save",
            "save it with the family's Forecaster.save_pretrained",
        )

    @classmethod
    def load(cls, base: Any, spec: Any, directory: Path) -> Any:
        raise _model_error(
            spec,
            f"kind {spec.kind} saves a whole model, not an adaptation",
            "load it with the family's Forecaster.load",
        )


class UntrainedMethod(SelectiveMethod):
    """Nothing trains: the model forecasts as it is (a saved form, if asked for, is empty)."""

    trains: ClassVar[bool] = False
    saves: ClassVar[str] = "nothing"

    @classmethod
    def select(cls, module: Any, spec: Any, targets: Any) -> None:
        return None
