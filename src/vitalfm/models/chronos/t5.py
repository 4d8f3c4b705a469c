"""Chronos-T5: a T5 language model over mean-scaled, binned value tokens.

Training minimises the cross-entropy of the value tokens (the pipeline's tokenizer; the EOS
label the tokenizer appends is not scored, see :meth:`ChronosT5Forecaster.loss`); forecasting
samples token paths, by default with our own top-k loop (:meth:`ChronosT5Forecaster._sample_t5`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from vitalfm.models.base import Forecast, ModelError, SeriesBatch, TimeAxis, eval_mode
from vitalfm.models.chronos.base import STANDIN_COMMON, STANDIN_T5, ChronosForecaster
from vitalfm.models.randomness import check_seeds, row_generators, row_uniforms, seeded_rows
from vitalfm.models.series_loss import check_reduction, pooled


@ChronosForecaster.VARIANTS.register
class ChronosT5Forecaster(ChronosForecaster):
    VARIANT: ClassVar[str] = "chronos-t5"
    PIPELINE: ClassVar[str] = "ChronosPipeline"
    loss_name: ClassVar[str] = "cross_entropy"
    OPTIONS: ClassVar[dict[str, str]] = {
        "sampler": "fast (default: the engine draws among the top-k tokens, the pipeline's "
        "distribution with its own random draws, several times faster on CPU) or library "
        "(ChronosPipeline.predict itself: bit-identical to upstream for the same seed)",
    }
    #: "fast" (our top-k draw, same distribution) or "library" (the pipeline's generate).
    t5_sampler: str = "fast"

    def __init__(self, pipeline: Any, source: Any) -> None:
        super().__init__(pipeline, source)
        self._train_tokenizers: dict[int, Any] = {}

    def apply_options(self, options: dict[str, Any]) -> None:
        sampler = options.get("sampler", "fast")
        if sampler not in ("fast", "library"):
            raise ModelError(
                f"option sampler = {sampler!r} is not fast or library",
                "write `sampler: library` for upstream's own sampling, or leave it out",
            )
        self.t5_sampler = sampler

    @staticmethod
    def network_of(pipeline: Any) -> nn.Module:
        return pipeline.model.model  # the T5 inside the pipeline's ChronosModel

    def attach_network(self, module: nn.Module) -> None:
        self.pipeline.model.model = module

    @classmethod
    def standin_pipeline(cls, horizon: int) -> Any:
        from chronos import ChronosConfig, ChronosPipeline
        from chronos.chronos import ChronosModel
        from transformers import T5Config, T5ForConditionalGeneration

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
            **STANDIN_T5,
            **STANDIN_COMMON,
        )
        inner = T5ForConditionalGeneration(config)
        chronos = ChronosConfig(**chronos_config)
        return ChronosPipeline(
            tokenizer=chronos.create_tokenizer(), model=ChronosModel(chronos, inner)
        )

    # --- training ---------------------------------------------------------------------------

    def _train_tokenizer(self, horizon: int) -> Any:
        """The pipeline's tokenizer with the training horizon as its prediction length."""
        if horizon not in self._train_tokenizers:
            config = replace(self.pipeline.model.config, prediction_length=horizon)
            self._train_tokenizers[horizon] = config.create_tokenizer()
        return self._train_tokenizers[horizon]

    def loss(self, batch: SeriesBatch, reduction: str = "mean") -> torch.Tensor:
        """The cross-entropy of the value tokens: the T5's own (mean over the batch's scored
        tokens), or per series from the same logits (``reduction="none"``)."""
        check_reduction(reduction)
        device = batch.context.device
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
        if reduction == "mean":
            return out.loss
        labels = labels.to(out.logits.device)
        tokens = torch.nn.functional.cross_entropy(
            out.logits.flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="none"
        )
        return pooled(tokens.view(labels.shape), labels != -100, reduction)

    # --- forecasting ------------------------------------------------------------------------

    @torch.no_grad()
    def _sample_t5(
        self,
        context: torch.Tensor,
        horizon: int,
        num_samples: int,
        seeds: np.ndarray | None = None,
    ) -> torch.Tensor:
        """Sample paths like the pipeline's ``generate`` call, drawing only among the top-k.

        Why our own loop: ``generate`` draws each token with ``torch.multinomial`` over the
        whole 4096-token vocabulary (top-k only masks the rest), which is over half of CPU
        forecasting time, and runs the first decoder step once per path although all the
        paths of a series share it. Drawing among the top-k logits gives the same distribution
        (top-k, temperature, no top-p, EOS suppressed until the horizon as by
        ``min_new_tokens``) at a fraction of the cost; the random draws differ, so set
        ``t5_sampler = "library"`` for bit-identical pipeline output.

        With ``seeds`` (one per row), row ``i``'s paths take their uniforms [S, H] from a
        generator seeded by ``seeds[i]`` and pick each token by the inverse CDF of the top-k
        probabilities (the same distribution as ``torch.multinomial``'s draw); without, the
        tokens are drawn by ``torch.multinomial`` from torch's global generator.
        """
        config = self.pipeline.model.config
        tokenizer = self.pipeline.tokenizer
        device = next(self.module.parameters()).device
        ids, attention, scale = tokenizer.context_input_transform(context)
        ids, attention = ids.to(device), attention.to(device)
        hidden = self.module.get_encoder()(input_ids=ids, attention_mask=attention)
        hidden = hidden.last_hidden_state
        top_k = min(int(config.top_k), self.module.config.vocab_size - 1)
        # [B, S, H] per-row uniforms: column t of row i's paths draws token t
        uniforms = (
            None
            if seeds is None
            else row_uniforms(row_generators(seeds, device), (num_samples, horizon))
        )

        def step(token: torch.Tensor, past: Any, t: int) -> tuple[torch.Tensor, Any]:
            """Token ``t`` of every path (step 0: ``num_samples`` per row of ``token``, which
            holds one row per series; later: one per row, one row per path), and the cache."""
            out = self.module(
                encoder_outputs=(hidden,),
                attention_mask=attention,
                decoder_input_ids=token,
                cache=past,
                use_cache=True,
            )
            logits = out.logits[:, -1].float()
            logits[:, config.eos_token_id] = float("-inf")
            # A positive temperature keeps the order, so it applies to the top-k values only.
            values, indices = logits.topk(top_k, dim=-1)
            probs = torch.softmax(values / config.temperature, dim=-1)
            draws = num_samples if t == 0 else 1
            if uniforms is None:
                choice = torch.multinomial(probs, draws, replacement=True)
            else:
                # inverse CDF: the first index whose cumulative probability exceeds u x total
                cdf = probs.cumsum(dim=-1)
                u = uniforms[:, :, t].reshape(len(probs), draws)
                choice = torch.searchsorted(cdf, u * cdf[:, -1:], right=True)
                choice = choice.clamp_max(top_k - 1)  # u x total rounded up to the total
            return indices.gather(1, choice).reshape(-1, 1), out.cache

        # Every path of a series starts from the same decoder state: the first step runs once
        # per series and draws all its paths; then the cache is repeated for each path.
        start = torch.full(
            (len(ids), 1), self.module.config.decoder_start_token_id, dtype=torch.long
        )
        token, past = step(start.to(device), None, 0)
        past.batch_repeat_interleave(num_samples)
        hidden = hidden.repeat_interleave(num_samples, dim=0)
        attention = attention.repeat_interleave(num_samples, dim=0)
        drawn = [token]
        for t in range(1, horizon):
            token, past = step(token, past, t)
            drawn.append(token)
        tokens = torch.cat(drawn, dim=1).reshape(len(context), num_samples, horizon)
        return tokenizer.output_transform(tokens.cpu(), scale).float()

    def _sample_library(
        self,
        context: torch.Tensor,
        horizon: int,
        num_samples: int,
        seeds: np.ndarray | None = None,
    ) -> torch.Tensor:
        """``ChronosPipeline.predict``: on the whole batch from torch's global generator, or
        with ``seeds`` once per series under its own seed (slow; isolated, and bit-identical to
        the pipeline run on that series alone after ``torch.manual_seed(seed)``)."""
        if seeds is None:
            return self.pipeline.predict(
                context, prediction_length=horizon, num_samples=num_samples
            )
        parts = []
        with seeded_rows(next(self.module.parameters()).device) as reseed:
            for row, seed in enumerate(seeds):
                reseed(int(seed))
                parts.append(
                    self.pipeline.predict(
                        context[row : row + 1], prediction_length=horizon, num_samples=num_samples
                    )
                )
        return torch.cat(parts)

    @torch.no_grad()
    def predict(
        self,
        context: torch.Tensor,
        horizon: int,
        num_samples: int,
        time: TimeAxis | None = None,  # Chronos has no calendar features
        seeds: np.ndarray | None = None,
    ) -> Forecast:
        seeds = check_seeds(seeds, len(context))
        eval_mode(self.module)
        context = context.float().cpu()
        config = self.pipeline.model.config
        if self.t5_sampler == "library" or horizon > config.prediction_length:
            samples = self._sample_library(context, horizon, num_samples, seeds)
        else:
            samples = self._sample_t5(context, horizon, num_samples, seeds)
        return Forecast(median=samples.quantile(0.5, dim=1), samples=samples)
