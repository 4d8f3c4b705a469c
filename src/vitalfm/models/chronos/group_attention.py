"""Chronos-2's group attention when every series is its own group: the value projection.

Chronos-2 attends along the batch axis, masked so that a series sees only the series of its
own group. The engine always gives each series its own group (no cross-learning: a patient's
forecast depends on that patient alone), and then the attention is trivial: each (time step,
head, series) has one unmasked key, itself, so its softmax weight is exactly 1 and the output
is the series' own value projection. The library still builds the batch x batch scores, their
softmax and a batch x batch dropout mask per head and time step, about a fifth of a training
step on the stand-in (bench/chronos_training.py). :class:`OwnGroupAttention` computes the
same output without them: bit-identical in evaluation, and in training the same distribution
(attention dropout drops the single weight of each (series, time step, head); the random
stream differs). The q and k projections get no gradient either way (a softmax over one key
does not depend on its score). Where the groups are not singletons it runs the library's own
forward, so the module is correct for any caller.

The replacement keeps the library module's children under the same names, so state dicts,
peft target names, checkpoints and ``save_pretrained`` are unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F


class OwnGroupAttention(nn.Module):
    """Drop-in for ``chronos.chronos2.layers.GroupSelfAttention`` (same children)."""

    def __init__(self, library: nn.Module) -> None:
        super().__init__()
        self.self_attention = library.self_attention
        self.layer_norm = library.layer_norm
        self.dropout = library.dropout
        self._library_forward = type(library).forward

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor,
        output_attentions: bool = False,
    ) -> Any:
        if output_attentions or not _one_series_per_group(attention_mask):
            return self._library_forward(self, hidden_states, attention_mask, output_attentions)
        from chronos.chronos2.layers import AttentionOutput

        attention = self.self_attention
        values = attention.v(self.layer_norm(hidden_states))  # [batch, time, heads * d_kv]
        if attention.training and attention.dropout > 0:
            batch, time, _ = values.shape
            weights = values.new_ones(batch, time, attention.n_heads, 1)
            weights = F.dropout(weights, p=attention.dropout, training=True)
            values = (values.view(batch, time, attention.n_heads, -1) * weights).flatten(2)
        output = hidden_states + self.dropout(attention.o(values))
        return AttentionOutput(hidden_states=output, attn_weights=None)


def _one_series_per_group(mask: torch.Tensor) -> bool:
    """Whether the additive group-time mask [time, 1, batch, batch] lets a series see only
    itself: no off-diagonal entry is unmasked at any time step."""
    rows = mask.shape[-1]
    if rows == 1:
        return True
    open_somewhere = mask.amax(dim=(0, 1)) > torch.finfo(mask.dtype).min / 2  # [batch, batch]
    open_somewhere.fill_diagonal_(False)
    return not bool(open_somewhere.any())


def use_own_group_attention(model: nn.Module) -> int:
    """Replace every group attention of a Chronos-2 model in place; returns how many."""
    from chronos.chronos2.layers import GroupSelfAttention

    replaced = 0
    for block in model.encoder.block:
        for index, layer in enumerate(block.layer):
            if isinstance(layer, GroupSelfAttention):
                block.layer[index] = OwnGroupAttention(layer)
                replaced += 1
    return replaced
