"""The model card (README.md) written beside every saved adapter and fine-tuned model.

Hugging Face and peft users expect a ``README.md`` in a folder that ``save_pretrained`` wrote:
what the base model is, what was trained, on which data, how well it did, and how to load it.
peft writes an empty template there; the finetune step replaces it with this card, built from
the run's own metadata, so the folder can travel without the rest of the study.
"""

from __future__ import annotations

import json
from typing import Any

#: Hub-style front matter keys per family: the library a user loads the folder with.
LIBRARY = {"chronos": "chronos-forecasting", "moirai": "uni2ts", "lag_llama": "lag-llama"}


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


def _number(value: Any) -> str:
    return f"{value:.5g}" if isinstance(value, float) else str(value)


def _uni2ts_module(variant: Any) -> tuple[str, str]:
    """uni2ts's package and module class for a MOIRAI variant."""
    return ("moirai2", "Moirai2Module") if variant == "moirai-2" else ("moirai", "MoiraiModule")


def _load_with_libraries(meta: dict[str, Any], saves: str, base: str) -> str | None:
    """How to load the folder with the family's own library (None where only vitalfm can)."""
    family, variant = meta.get("family"), meta.get("variant")
    if saves == "adapter" and variant == "chronos-2":
        return (
            "from chronos import Chronos2Pipeline\n\n"
            "# loads the base named in adapter_config.json and merges the adapter into it\n"
            'pipeline = Chronos2Pipeline.from_pretrained("<this folder>")'
        )
    if saves == "adapter" and variant == "chronos-t5":
        return (
            "from chronos import ChronosPipeline\n"
            "from peft import PeftModel\n\n"
            f'pipeline = ChronosPipeline.from_pretrained("{base}")\n'
            "pipeline.model.model = PeftModel.from_pretrained(\n"
            '    pipeline.model.model, "<this folder>"\n'
            ").merge_and_unload()"
        )
    if saves == "adapter" and family == "moirai":
        package, module = _uni2ts_module(variant)
        return (
            f"from peft import PeftModel\nfrom uni2ts.model.{package} import {module}\n\n"
            f'module = {module}.from_pretrained("{base}")\n'
            'module = PeftModel.from_pretrained(module, "<this folder>").merge_and_unload()'
        )
    if saves == "model" and family == "chronos":
        return (
            "from chronos import BaseChronosPipeline\n\n"
            'pipeline = BaseChronosPipeline.from_pretrained("<this folder>")'
        )
    if saves == "model" and family == "moirai":
        package, module = _uni2ts_module(variant)
        return (
            f"from uni2ts.model.{package} import {module}\n\n"
            f'module = {module}.from_pretrained("<this folder>")'
        )
    return None


def _load_with_vitalfm(meta: dict[str, Any], saves: str) -> str:
    family = meta.get("family")
    if saves == "adapter":
        return (
            "models:\n"
            f"  {meta.get('model', 'my-model')}-adapted:\n"
            f"    family: {family}\n"
            "    source: {adapter: <this folder>}   # base: from adapter_config.json\n"
            "    methods: [zero_shot]"
        )
    if saves == "model":
        return (
            "models:\n"
            f"  {meta.get('model', 'my-model')}-tuned:\n"
            f"    family: {family}\n"
            "    source: {path: <this folder>}\n"
            "    methods: [zero_shot]"
        )
    return ""


def model_card(meta: dict[str, Any], saves: str, base_reference: str | None) -> str:
    """The card's markdown for a finetune run's metadata ``meta``.

    ``saves`` is what the method saved ("adapter", "tensors" or "model"); ``base_reference``
    the hub id or absolute folder of the base model (None for models trained from scratch).
    """
    method = meta.get("method", {})
    training = meta.get("training", {})
    data = meta.get("data", {})
    parameters = meta.get("parameters", {})
    family = str(meta.get("family"))
    tags = ["time-series-forecasting", "vitalfm", str(method.get("kind"))]
    front = {"library_name": "peft" if saves == "adapter" else LIBRARY.get(family, "vitalfm")}
    if base_reference:
        front["base_model"] = base_reference
    lines = ["---"]
    lines += [f"{key}: {json.dumps(value)}" for key, value in front.items()]
    lines += ["tags:", *(f"- {json.dumps(tag)}" for tag in tags), "---", ""]
    lines += [
        f"# {meta.get('run')} (seed {meta.get('seed')})",
        "",
        f"{'An adapter' if saves == 'adapter' else 'A model'} trained by the vitalfm workflow "
        "to forecast ICU vital signs. What it is, from the run's metadata.json:",
        "",
        f"- **Base model:** `{base_reference or 'none (random init)'}` "
        f"({family}, variant {meta.get('variant')}; source `{meta.get('source')}`).",
        f"- **Method:** `{method.get('name')}` = "
        + ", ".join(f"{key} {value}" for key, value in method.items() if key != "name")
        + f"; {_count(parameters.get('trainable'))} of {_count(parameters.get('total'))} "
        "parameters trained.",
        "- **Data:** the study's training windows: "
        f"{_count(data.get('train_series'))} series of {data.get('context_steps')} context and "
        f"{data.get('horizon_steps')} horizon steps; vitals "
        f"{', '.join(sorted(data.get('minmax_ranges', {})))}.",
        f"- **Training:** {training.get('steps')} steps; the weights kept are those of step "
        f"{training.get('best_step')}, chosen on the validation windows' "
        f"{training.get('selection_metric')} (min-max scaled).",
        f"- **Validation:** {training.get('selection_metric')} "
        f"{_number(training.get('best_validation_score'))}, loss "
        f"{_number(training.get('best_validation_loss'))} "
        "at that step. Test scores are in the study's tables "
        "(`results/tables/`), computed after this folder was written.",
        f"- **Software:** vitalfm at git {meta.get('git_revision')}; "
        + ", ".join(f"{name} {ver}" for name, ver in sorted(meta.get("software", {}).items())),
        "",
        "## How to load it",
        "",
    ]
    library = _load_with_libraries(meta, saves, base_reference or "")
    if library:
        lines += ["With the family's own library:", "", "```python", library, "```", ""]
    if saves == "tensors":
        lines += [
            "This method trains a few named tensors of the base model "
            "(`tuned_parameters.safetensors`, indexed by `tuned_parameters.json`): copy each into "
            "the base's parameter of the same name. In vitalfm, the study's `forecast` rule does "
            "this for the run.",
            "",
        ]
    vitalfm = _load_with_vitalfm(meta, saves)
    if vitalfm:
        lines += ["In a vitalfm study (`config.yaml`):", "", "```yaml", vitalfm, "```", ""]
    return "\n".join(lines)
