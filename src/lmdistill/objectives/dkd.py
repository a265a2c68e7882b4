"""Decoupled knowledge distillation (DKD; Zhao et al., CVPR 2022), with the next token as the target class.

KL(p || q) over the vocabulary splits into a target-class part and a non-target part:
    TCKD = KL([p_t, 1 - p_t] || [q_t, 1 - q_t])          (binary: the target token against all the others)
    NCKD = KL(p_hat || q_hat)                             (over the non-target tokens, each renormalised)
    DKD  = alpha * TCKD + beta * NCKD                     (alpha = beta = 1 gives TCKD + NCKD; classic KD is
                                                           TCKD + (1 - p_t) * NCKD)
with p = softmax(teacher / T), q = softmax(student / T) at every response position and t the response token there.
Everything is computed in log space (log(1 - p_t) as a log-sum-exp over the other tokens), in chunks of positions
recomputed in backward, so memory stays O(chunk x vocab).
"""
from typing import Literal

import torch
from pydantic import Field
from torch.utils.checkpoint import checkpoint

from lmdistill.divergence_rows import kl_terms  # the target inside NCKD and masked entries give 0
from lmdistill.objectives.base import Objective, ObjectiveParams, register


class DKDParams(ObjectiveParams):
    name: Literal["dkd"] = "dkd"
    alpha: float = Field(1.0, ge=0, description="weight of the target-class term TCKD")
    beta: float = Field(1.0, ge=0, description="weight of the non-target term NCKD (the DKD paper uses 1-8)")
    temperature: float = Field(1.0, gt=0)
    t2_scaling: bool = Field(True, description="multiply by T^2, as the DKD reference does")
    chunk_size: int = Field(256, gt=0, description="positions per chunk: bounds memory for large vocabularies")


def dkd_per_position(student_logits, teacher_logits, targets, alpha, beta, temperature=1.0):
    """alpha * TCKD + beta * NCKD at each row; logits [N, V] (any float dtype, computed in >= float32), targets [N]."""
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    s, t = student_logits.to(dtype) / temperature, teacher_logits.detach().to(dtype) / temperature
    target = targets.unsqueeze(-1)
    ls, lt = s.logsumexp(-1), t.logsumexp(-1)
    s_rest, t_rest = s.scatter(-1, target, -torch.inf), t.scatter(-1, target, -torch.inf)  # the non-target tokens
    ls_rest, lt_rest = s_rest.logsumexp(-1), t_rest.logsumexp(-1)
    log_pt, log_qt = t.gather(-1, target).squeeze(-1) - lt, s.gather(-1, target).squeeze(-1) - ls
    log_p_rest, log_q_rest = lt_rest - lt, ls_rest - ls  # log(1 - p_t), log(1 - q_t)
    tckd = kl_terms(log_pt, log_qt) + kl_terms(log_p_rest, log_q_rest)
    nckd = kl_terms(t_rest - lt_rest.unsqueeze(-1), s_rest - ls_rest.unsqueeze(-1)).sum(-1)
    return alpha * tckd + beta * nckd


@register
class DecoupledKD(Objective):
    name = "dkd"
    Params = DKDParams

    def loss(self, student, teacher, batch):
        p = self.params
        total = student.logits.new_zeros((), dtype=torch.promote_types(student.logits.dtype, torch.float32))
        for start in range(0, len(student.targets), p.chunk_size):
            rows = slice(start, start + p.chunk_size)
            values = checkpoint(dkd_per_position, student.logits[rows], teacher.logits[rows], student.targets[rows],
                                p.alpha, p.beta, p.temperature, use_reentrant=False)
            total = total + values.sum()
        return total * p.temperature ** 2 if p.t2_scaling else total
