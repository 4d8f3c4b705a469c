"""``oracle``: the synthetic study's reference bound, added by the study itself.

Not a method a config can name: with the synthetic database the study adds one run of this
kind, the generator's own predictive distribution (:mod:`vitalfm.synthetic.oracle`).
"""

from vitalfm.methods.bases import UntrainedMethod
from vitalfm.methods.registry import register


@register
class Oracle(UntrainedMethod):
    kind = "oracle"
    summary = "the synthetic generator's own forecasts (added by the study)"
    configurable = False
    for_pretrained = False
    marker = "o"
