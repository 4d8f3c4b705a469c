"""``full``: every parameter of the pretrained model trains (full fine-tuning)."""

from vitalfm.methods.bases import WholeModelMethod
from vitalfm.methods.registry import register


@register
class Full(WholeModelMethod):
    kind = "full"
    summary = "full fine-tuning: every parameter trains"
    marker = "*"
