"""Objectives that compare next-token distributions over different vocabularies (crosstok/uld.py): they work
whether or not teacher and student share a tokenizer. With another tokenizer, they read the teacher's rows at the
groups the batch's alignment gives (`ModelOutputs.alignment`); with the same one, every position is its own group."""
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from lmdistill import divergences
from lmdistill.crosstok.rows import identity_alignment
from lmdistill.crosstok.uld import HybridRows, group_loss, uld_rows
from lmdistill.objectives.base import Objective, ObjectiveParams, register
from lmdistill.objectives.logit_kd import divergence_params
from lmdistill.teachers.outputs import output_head


class ULDParams(ObjectiveParams):
    name: Literal["uld"] = "uld"
    temperature: float = Field(1.0, gt=0, description="divides both models' logits")
    chunk_size: int = Field(64, gt=0, description="groups per chunk: each holds a few [chunk x vocab] float32 buffers")


class GoldParams(ULDParams):
    name: Literal["gold"] = "gold"
    divergence: str = Field("generalized_jsd", description="the exact divergence on the tokens both vocabularies "
                            "share (renormalised over them); any of lmdistill.divergences")
    params: dict[str, Any] = Field(default_factory=dict, description="its parameters, e.g. {beta: 0.5}")
    exact_weight: float = Field(1.0, ge=0, description="weight of the exact divergence on the shared tokens")
    uld_weight: float = Field(1.0, ge=0, description="weight of ULD on the tokens the vocabularies do not share")

    @model_validator(mode="after")
    def _divergence_params(self):
        self.params = divergence_params(self.divergence, self.params)
        return self


def teacher_inputs(teacher, vocab_size):
    """(logits or final hidden states, the head that maps the latter to logits inside each chunk, or None)."""
    if teacher.logits is not None:
        return teacher.logits, None
    return teacher.final, output_head(teacher.lm, vocab_size)


@register
class ULD(Objective):
    """Universal Logit Distillation: L1 between the sorted next-token probabilities of the two models per aligned
    group (Boizard et al. 2024)."""
    name = "uld"
    Params = ULDParams
    cross_tokenizer = True

    def rows_fn(self):
        return uld_rows

    def loss(self, student, teacher, batch):
        p = self.params
        a = teacher.alignment or identity_alignment(len(student.targets), student.targets.device)
        inputs, head = teacher_inputs(teacher, self.context.teacher_vocab or self.context.vocab_size)
        return group_loss(self.rows_fn(), student.logits, student.targets, a.student, inputs, teacher.targets,
                          a.teacher, head, p.temperature, p.chunk_size)


@register
class Gold(ULD):
    """As TRL GOLD's hybrid: an exact divergence on the tokens both vocabularies share (the same bytes), ULD on the
    rest. `shared_mass` sums the teacher's probability on the shared tokens over the groups seen (for the log)."""
    name = "gold"
    Params = GoldParams

    def __init__(self, params, context):
        super().__init__(params, context)
        every = torch.arange(context.vocab_size)  # one tokenizer: every token is shared, under its own id
        student_ids, teacher_ids = context.shared_tokens or (every, every)
        exact = divergences.per_row(params.divergence, **params.params)
        self.hybrid = HybridRows(exact, student_ids, teacher_ids, context.vocab_size,
                                 context.teacher_vocab or context.vocab_size, params.exact_weight, params.uld_weight)

    def rows_fn(self):
        return self.hybrid

    def take_stats(self):
        """shared_mass: the teacher's mean probability on the tokens both vocabularies share, per aligned group."""
        stats = {"shared_mass": (self.hybrid.shared_mass, self.hybrid.groups)}
        self.hybrid.shared_mass, self.hybrid.groups = 0.0, 0
        return stats
