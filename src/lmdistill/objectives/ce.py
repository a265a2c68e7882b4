from typing import Literal

import torch.nn.functional as F

from lmdistill.objectives.base import Objective, ObjectiveParams, register
from lmdistill.objectives.needs import Needs


class CEParams(ObjectiveParams):
    name: Literal["ce"] = "ce"


@register
class CrossEntropy(Objective):
    """The task loss: next-token cross-entropy on response tokens (SFT)."""
    name = "ce"
    Params = CEParams
    cross_tokenizer = True

    def needs(self):
        return Needs(teacher=None)  # reads no teacher output

    def loss(self, student, teacher, batch):
        return F.cross_entropy(student.logits.float(), student.targets, reduction="sum")
