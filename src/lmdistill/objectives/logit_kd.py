import inspect
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from lmdistill import divergences
from lmdistill.objectives.base import Objective, ObjectiveParams, register


class DivergenceParams(ObjectiveParams):
    """An objective built on a divergence from `lmdistill.divergences` (final logits, or the logit lens)."""
    divergence: str = "forward_kl"
    temperature: float = Field(1.0, gt=0)
    t2_scaling: bool = Field(True, description="multiply by T^2 so gradient scale does not shrink with T (Hinton et al.)")
    chunk_size: int = Field(1024, gt=0, description="positions per chunk: bounds memory for large vocabularies")
    params: dict[str, Any] = Field(default_factory=dict, description="divergence parameters, e.g. {beta: 0.5}; "
                                   "defaults are filled in")

    @field_validator("divergence")
    @classmethod
    def _known(cls, name):
        divergences.get_divergence(name)
        return name

    @model_validator(mode="after")
    def _divergence_params(self):
        self.params = divergence_params(self.divergence, self.params)
        return self

    def scale(self, value):
        """T^2 * value when t2_scaling, else value."""
        return value * self.temperature ** 2 if self.t2_scaling else value


def divergence_params(divergence, params):
    """`params` checked against the divergence's keyword parameters, with every default filled in (the resolved
    config shows every value used); ValueError naming the valid ones."""
    signature = inspect.signature(divergences.get_divergence(divergence)).parameters
    own = {n: p.default for n, p in signature.items() if p.kind == p.KEYWORD_ONLY}
    for key in params:
        if key not in own:
            raise ValueError(f"{divergence} has no parameter '{key}'; its parameters: {list(own) or 'none'}")
    return {**own, **params}


class LogitKDParams(DivergenceParams):
    name: Literal["logit_kd"] = "logit_kd"


@register
class LogitKD(Objective):
    """Divergence between teacher and student next-token distributions on response tokens."""
    name = "logit_kd"
    Params = LogitKDParams

    def __init__(self, params, context):
        super().__init__(params, context)
        self.divergence = divergences.get_divergence(params.divergence)

    def loss(self, student, teacher, batch):
        p = self.params
        return p.scale(self.divergence(student.logits, teacher.logits, temperature=p.temperature,
                                       chunk_size=p.chunk_size, reduction="sum", **p.params))
