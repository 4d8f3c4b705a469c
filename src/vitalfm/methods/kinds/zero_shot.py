"""``zero_shot``: the pretrained model forecasts as it is; nothing trains.

Every other run of a model is compared with its zero-shot run (paired differences). From-scratch
families with no parameters (persistence) use this kind too.
"""

from vitalfm.methods.bases import UntrainedMethod
from vitalfm.methods.registry import register


@register
class ZeroShot(UntrainedMethod):
    kind = "zero_shot"
    summary = "the model as it is, nothing trained"
    for_scratch = True
    is_zero_shot = True
    marker = "o"
