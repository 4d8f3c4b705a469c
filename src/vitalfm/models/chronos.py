"""The Chronos family: Chronos-T5, Chronos-Bolt and Chronos-2, through chronos-forecasting.

Checkpoints (hub ids, local folders and our stand-ins alike) are opened with the library's
own ``BaseChronosPipeline.from_pretrained``, which picks the pipeline class from the
checkpoint's config. Forecasting goes through the pipeline's ``predict``; training calls the
same network the pipeline holds, with each variant's own objective:

- Chronos-T5: cross-entropy over the mean-scaled, binned value tokens (the pipeline's
  tokenizer; the EOS label the tokenizer appends is not scored, see :meth:`ChronosForecaster.loss`);
- Chronos-Bolt: its quantile (pinball) loss, relative to the context's level (see
  ``_bolt_loss`` for why not its own normalisation);
- Chronos-2: the model's own quantile loss on the horizon.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors import SafetensorError
from torch import nn

from vitalfm.models.base import (
    Forecast,
    Forecaster,
    ModelError,
    ModelSource,
    SeriesBatch,
    TargetModules,
    TimeAxis,
)

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")

# Stand-ins: the released architectures and config formats, scaled down so that the
# `pretrain` rule can train them in a few CPU minutes. Released sizes for comparison:
# chronos-t5-tiny d_model 256, 4+4 layers; chronos-bolt-tiny the same; chronos-2 d_model 768, 12 L.
# Chronos-T5 and Chronos-Bolt stand-ins share one T5 shape.
_STANDIN_T5 = dict(d_model=64, d_kv=16, d_ff=256, num_layers=2, num_decoder_layers=2, num_heads=4)
_STANDIN_CHRONOS2 = dict(d_model=64, d_kv=16, d_ff=256, num_layers=2, num_heads=4)
BOLT_QUANTILES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
# The 21 levels of amazon/chronos-2.
CHRONOS2_QUANTILES = [0.01, 0.05] + [round(0.05 * i, 2) for i in range(2, 19)] + [0.95, 0.99]


def _patch_bolt_for_peft() -> None:
    """peft (>=0.2x) with transformers 5 asks Bolt for input embeddings it does not declare."""
    from chronos.chronos_bolt import ChronosBoltModelForForecasting

    if "get_input_embeddings" not in ChronosBoltModelForForecasting.__dict__:
        ChronosBoltModelForForecasting.get_input_embeddings = lambda self: self.shared  # type: ignore[method-assign]


def check_local_checkpoint(path: Path) -> None:
    """A clear error for a local folder that cannot be a released Chronos checkpoint."""
    if not path.is_dir():
        raise ModelError(
            f"model folder {path} does not exist",
            "point `source: {path: ...}` at a folder holding config.json and model.safetensors",
        )
    missing = [] if (path / "config.json").is_file() else ["config.json"]
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        missing.append(" or ".join(WEIGHT_FILES[::2]))
    if missing:
        raise ModelError(
            f"model folder {path} lacks {', '.join(missing)}",
            "copy the complete released checkpoint there (e.g. `huggingface-cli download "
            "amazon/chronos-t5-small --local-dir <folder>` on a machine with internet)",
        )
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise ModelError(
            f"model folder {path}: config.json is not valid JSON ({err})",
            "copy the released checkpoint's config.json there again (a download or copy "
            "was cut short, or the file was edited by hand)",
        ) from None
    if not isinstance(config, dict) or "chronos_config" not in config:
        raise ModelError(
            f"model folder {path} is not a Chronos checkpoint (config.json has no chronos_config)",
            "use `family: chronos` only for Chronos-T5, Chronos-Bolt or Chronos-2 checkpoints",
        )


def context_level(context: torch.Tensor) -> torch.Tensor:
    """[B] mean absolute value of each context's observed points (1 for none, floored at 1e-3).

    What the relative pinball losses divide by: it comes from the context only, so a target
    cannot change its own weight.
    """
    return torch.nan_to_num(context.abs().nanmean(dim=-1), nan=1.0).clamp_min(1e-3)


class ChronosForecaster(Forecaster):
    family: ClassVar[str] = "chronos"
    #: "fast" (our top-k draw, same distribution) or "library" (the pipeline's generate).
    t5_sampler: str = "fast"
    VARIANTS: ClassVar[dict[str, str]] = {
        "ChronosPipeline": "chronos-t5",
        "ChronosBoltPipeline": "chronos-bolt",
        "Chronos2Pipeline": "chronos-2",
    }

    def __init__(self, pipeline: Any, source: ModelSource) -> None:
        variant = self.VARIANTS.get(type(pipeline).__name__)
        if variant is None:
            raise ModelError(
                f"{type(pipeline).__name__} is not a supported Chronos pipeline",
                "use a Chronos-T5, Chronos-Bolt or Chronos-2 checkpoint",
            )
        self.pipeline = pipeline
        module = pipeline.model.model if variant == "chronos-t5" else pipeline.model
        super().__init__(module, source, variant)
        self.loss_name = "cross_entropy" if variant == "chronos-t5" else "quantile_loss"
        self._train_tokenizers: dict[int, Any] = {}
        if variant == "chronos-bolt":
            self._bolt_quantiles = [float(q) for q in pipeline.model.chronos_config.quantiles]
        if variant == "chronos-2":
            self._output_patch_size = int(pipeline.model.chronos_config.output_patch_size)

    # --- loading and saving ---------------------------------------------------------------

    @classmethod
    def load(cls, source: ModelSource, device: torch.device) -> ChronosForecaster:
        from chronos import BaseChronosPipeline

        _patch_bolt_for_peft()
        location = source.location
        if source.hub is None:
            check_local_checkpoint(Path(location))
        try:
            pipeline = BaseChronosPipeline.from_pretrained(
                location, device_map=str(device), dtype=torch.float32
            )
        except (OSError, ValueError, RuntimeError, SafetensorError) as err:
            if source.hub is None:
                raise ModelError(
                    f"cannot load the Chronos checkpoint in {location}: {err}",
                    "check that the folder holds a complete, uncorrupted released checkpoint",
                ) from None
            raise ModelError(
                f"cannot load hub model {location!r}: it is not in the local Hugging Face cache "
                f"and the hub cannot be reached or has no such model ({type(err).__name__})",
                "check the id; offline, download it elsewhere (`huggingface-cli download "
                f"{location} --local-dir <folder>`) and set `source: {{path: <folder>}}`",
            ) from None
        return cls(pipeline, source)

    @classmethod
    def standin_names(cls) -> tuple[str, ...]:
        return ("chronos-t5", "chronos-bolt", "chronos-2")

    @classmethod
    def standin(cls, name: str, horizon: int, seed: int) -> ChronosForecaster:
        """A randomly initialised small member of the named variant, in the released format."""
        from chronos import ChronosBoltPipeline, ChronosConfig, ChronosPipeline
        from chronos.chronos import ChronosModel
        from chronos.chronos2 import Chronos2Model, Chronos2Pipeline
        from chronos.chronos2.config import Chronos2CoreConfig
        from chronos.chronos_bolt import ChronosBoltModelForForecasting
        from transformers import T5Config, T5ForConditionalGeneration

        _patch_bolt_for_peft()
        torch.manual_seed(seed)
        common = dict(dropout_rate=0.1, feed_forward_proj="relu", initializer_factor=0.05)
        source = ModelSource(standin=name)
        if name == "chronos-t5":
            chronos_config = dict(
                tokenizer_class="MeanScaleUniformBins",
                tokenizer_kwargs={"low_limit": -15.0, "high_limit": 15.0},
                n_tokens=4096,
                n_special_tokens=2,
                pad_token_id=0,
                eos_token_id=1,
                use_eos_token=True,
                model_type="seq2seq",
                context_length=512,
                prediction_length=horizon,
                num_samples=20,
                temperature=1.0,
                top_k=50,
                top_p=1.0,
            )
            config = T5Config(
                vocab_size=4096,
                pad_token_id=0,
                eos_token_id=1,
                decoder_start_token_id=0,
                chronos_config=chronos_config,
                architectures=["T5ForConditionalGeneration"],
                **_STANDIN_T5,
                **common,
            )
            inner = T5ForConditionalGeneration(config)
            chronos = ChronosConfig(**chronos_config)
            pipeline = ChronosPipeline(
                tokenizer=chronos.create_tokenizer(), model=ChronosModel(chronos, inner)
            )
        elif name == "chronos-bolt":
            config = T5Config(
                vocab_size=2,
                pad_token_id=0,
                eos_token_id=1,
                decoder_start_token_id=0,
                is_encoder_decoder=True,
                architectures=["ChronosBoltModelForForecasting"],
                chronos_pipeline_class="ChronosBoltPipeline",
                chronos_config=dict(
                    context_length=512,
                    prediction_length=horizon,
                    input_patch_size=16,
                    input_patch_stride=16,
                    quantiles=BOLT_QUANTILES,
                    use_reg_token=True,
                ),
                **_STANDIN_T5,
                **common,
            )
            pipeline = ChronosBoltPipeline(model=ChronosBoltModelForForecasting(config))
        elif name == "chronos-2":
            config = Chronos2CoreConfig(
                rope_theta=10000.0,
                attn_implementation="sdpa",
                architectures=["Chronos2Model"],
                chronos_pipeline_class="Chronos2Pipeline",
                chronos_config=dict(
                    context_length=512,
                    input_patch_size=16,
                    input_patch_stride=16,
                    output_patch_size=16,
                    quantiles=CHRONOS2_QUANTILES,
                    use_reg_token=True,
                    use_arcsinh=True,
                    max_output_patches=4,
                    time_encoding_scale=512,
                ),
                **_STANDIN_CHRONOS2,
                **common,
            )
            pipeline = Chronos2Pipeline(model=Chronos2Model(config))
        else:
            raise ModelError(
                f"unknown Chronos stand-in {name!r}",
                f"use one of {', '.join(cls.standin_names())}",
            )
        pipeline.model.eval()
        return cls(pipeline, source)

    def save_pretrained(self, directory: Path) -> None:
        module = self.module
        if hasattr(module, "peft_config"):
            raise ModelError(
                "cannot save an adapter-wrapped model as a full checkpoint",
                "merge the adapter first (vitalfm.models.adaptation.merge_for_inference)",
            )
        module.save_pretrained(directory)

    def set_module(self, module: nn.Module) -> None:
        super().set_module(module)
        if self.variant == "chronos-t5":
            self.pipeline.model.model = module
        else:
            self.pipeline.model = module

    # --- adaptation targets ----------------------------------------------------------------

    def target_modules(self) -> TargetModules:
        if self.variant == "chronos-2":
            return TargetModules(
                attention=(
                    "self_attention.q",
                    "self_attention.k",
                    "self_attention.v",
                    "self_attention.o",
                ),
                ffn=("mlp.wi", "mlp.wo"),
                # time attention (layer.0) and group attention (layer.1) norms
                norms=(r"encoder\.block\.\d+\.layer\.[01]\.layer_norm",),
                bias_linears=(
                    "self_attention.q",
                    "self_attention.k",
                    "self_attention.v",
                    "self_attention.o",
                    "mlp.wi",
                    "mlp.wo",
                ),
            )
        # T5 naming, shared by Chronos-T5 and Chronos-Bolt: q/k/v/o in every attention block
        # (encoder self, decoder self, cross), wi/wo in the feed-forward blocks.
        return TargetModules(
            attention=("q", "k", "v", "o"),
            ffn=("wi", "wo"),
            # norms of the encoder self-attention and decoder self- and cross-attention
            norms=(
                r"(encoder\.block\.\d+\.layer\.0|decoder\.block\.\d+\.layer\.[01])\.layer_norm",
            ),
            bias_linears=("q", "k", "v", "o", "wi", "wo"),
        )

    # --- training and forecasting ----------------------------------------------------------

    def _train_tokenizer(self, horizon: int) -> Any:
        """The pipeline's tokenizer with the training horizon as its prediction length."""
        if horizon not in self._train_tokenizers:
            config = replace(self.pipeline.model.config, prediction_length=horizon)
            self._train_tokenizers[horizon] = config.create_tokenizer()
        return self._train_tokenizers[horizon]

    def loss(self, batch: SeriesBatch) -> torch.Tensor:
        device = batch.context.device
        if self.variant == "chronos-t5":
            tokenizer = self._train_tokenizer(batch.target.shape[-1])
            ids, attention, scale = tokenizer.context_input_transform(batch.context.cpu())
            labels, label_mask = tokenizer.label_input_transform(batch.target.cpu(), scale)
            labels[label_mask == 0] = -100
            if tokenizer.config.use_eos_token:
                # Forecasting never samples EOS (it is suppressed until the horizon ends), so
                # its label would only teach the model to end every series after H tokens:
                # on the default study it made the whole fall of the validation CE while CE
                # on the value tokens rose. Train and validate on the value tokens only.
                labels[:, -1] = -100
            out = self.module(
                input_ids=ids.to(device),
                attention_mask=attention.to(device),
                labels=labels.to(device),
            )
            return out.loss
        if self.variant == "chronos-bolt":
            return self._bolt_loss(batch)
        patches = -(-batch.target.shape[-1] // self._output_patch_size)
        return self.module(
            context=batch.context, future_target=batch.target, num_output_patches=patches
        ).loss

    def _bolt_loss(self, batch: SeriesBatch) -> torch.Tensor:
        """Bolt's pinball loss, scaled by the context's mean absolute value.

        Bolt's own loss divides errors by the context's standard deviation (floored at 1e-5),
        so one flat context (SpO2 at 100 %, a filled gap) outweighs a whole batch by orders
        of magnitude. The same quantile loss relative to the series' level, as Chronos-T5
        scales its inputs, keeps every series' weight bounded.
        """
        preds = self.module(context=batch.context).quantile_preds[..., : batch.target.shape[-1]]
        target = batch.target.to(preds.dtype)
        observed = ~torch.isnan(target)
        scale = context_level(batch.context)
        levels = torch.tensor(self._bolt_quantiles, device=preds.device).view(1, -1, 1)
        error = torch.where(observed, target, 0.0).unsqueeze(1) - preds
        pinball = 2 * torch.maximum(levels * error, (levels - 1) * error).sum(dim=1)
        pinball = pinball / scale.unsqueeze(-1) * observed
        return pinball.sum() / observed.sum().clamp_min(1)

    @torch.no_grad()
    def _sample_t5(self, context: torch.Tensor, horizon: int, num_samples: int) -> torch.Tensor:
        """Sample paths like the pipeline's ``generate`` call, drawing only among the top-k.

        Why our own loop: ``generate`` draws each token with ``torch.multinomial`` over the
        whole 4096-token vocabulary (top-k only masks the rest), which is over half of CPU
        forecasting time. Drawing among the top-k logits gives the same distribution
        (top-k, temperature, no top-p, EOS suppressed until the horizon as by
        ``min_new_tokens``) at a fraction of the cost; the random draws differ, so set
        ``t5_sampler = "library"`` for bit-identical pipeline output.
        """
        config = self.pipeline.model.config
        tokenizer = self.pipeline.tokenizer
        device = next(self.module.parameters()).device
        ids, attention, scale = tokenizer.context_input_transform(context)
        ids, attention = ids.to(device), attention.to(device)
        encoded = self.module.get_encoder()(input_ids=ids, attention_mask=attention)
        hidden = encoded.last_hidden_state.repeat_interleave(num_samples, dim=0)
        attention = attention.repeat_interleave(num_samples, dim=0)
        token = torch.full(
            (hidden.shape[0], 1),
            self.module.config.decoder_start_token_id,
            dtype=torch.long,
            device=device,
        )
        past, drawn = None, []
        top_k = min(int(config.top_k), self.module.config.vocab_size - 1)
        for _ in range(horizon):
            out = self.module(
                encoder_outputs=(hidden,),
                attention_mask=attention,
                decoder_input_ids=token,
                past_key_values=past,
                use_cache=True,
            )
            past = out.past_key_values
            logits = out.logits[:, -1].float()
            logits[:, config.eos_token_id] = float("-inf")
            # A positive temperature keeps the order, so it applies to the top-k values only.
            values, indices = logits.topk(top_k, dim=-1)
            choice = torch.multinomial(torch.softmax(values / config.temperature, dim=-1), 1)
            token = indices.gather(1, choice)
            drawn.append(token)
        tokens = torch.cat(drawn, dim=1).reshape(len(context), num_samples, horizon)
        return tokenizer.output_transform(tokens.cpu(), scale).float()

    @torch.no_grad()
    def predict(
        self,
        context: torch.Tensor,
        horizon: int,
        num_samples: int,
        time: TimeAxis | None = None,  # Chronos has no calendar features
    ) -> Forecast:
        self.module.eval()
        context = context.float().cpu()
        if self.variant == "chronos-t5":
            config = self.pipeline.model.config
            if self.t5_sampler == "library" or horizon > config.prediction_length:
                samples = self.pipeline.predict(
                    context, prediction_length=horizon, num_samples=num_samples
                )
            else:
                samples = self._sample_t5(context, horizon, num_samples)
            return Forecast(median=samples.quantile(0.5, dim=1), samples=samples)
        levels = tuple(float(q) for q in self.pipeline.quantiles)
        if self.variant == "chronos-bolt":
            quantiles = self.pipeline.predict(context, prediction_length=horizon)
        else:
            outputs = self.pipeline.predict(
                context[:, None, :], prediction_length=horizon, batch_size=len(context)
            )
            quantiles = torch.cat(outputs, dim=0)  # each (1, Q, H)
        median = quantiles[:, levels.index(0.5)]
        return Forecast(median=median, quantiles=quantiles, quantile_levels=levels)


FORECASTER = ChronosForecaster
