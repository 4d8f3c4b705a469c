"""``scratch``: every parameter of a from-scratch baseline trains from a seeded random init.

Only for models with ``source: {scratch: true}`` (N-HiTS, N-BEATS, DLinear): it is not an
adaptation of pretrained weights. It trains and saves like ``full``.
"""

from vitalfm.methods.bases import WholeModelMethod
from vitalfm.methods.registry import register


@register
class Scratch(WholeModelMethod):
    kind = "scratch"
    summary = "a baseline trained from a random init (source: {scratch: true} only)"
    for_pretrained = False
    for_scratch = True
    marker = "h"
