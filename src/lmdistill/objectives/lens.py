"""DistillLens (arXiv 2602.13567): align the teacher's and the student's logit lenses at intermediate layers.

For each (teacher layer, student layer) pair, each model's own LM head turns its hidden state at that layer into
a next-token distribution (the logit lens); a divergence compares the two at every response position. The loss
is the mean over response tokens, then the (weighted) mean over pairs. Only response positions are projected,
and the projection to the vocabulary happens inside chunks of positions with each chunk's backward right after
its forward (`lmdistill.divergences`), so the [pairs x positions x vocab] lens logits never exist: the extra
memory is O(chunk_size x vocab) plus one gradient buffer the size of the student's LM head.
"""
from typing import Literal

import torch
from pydantic import Field

from lmdistill import divergences
from lmdistill.teachers.outputs import lens_input, output_head
from lmdistill.objectives.base import LayerPairs, Objective, PairParams, register
from lmdistill.objectives.logit_kd import DivergenceParams


class LensParams(DivergenceParams, PairParams):
    name: Literal["lens"] = "lens"
    divergence: str = Field("generalized_jsd", description="default: JSD with beta 0.5, as DistillLens")
    layers: str | list[tuple[int, int]] = Field(
        "uniform:5", description="'uniform:K' (K evenly spaced pairs, final layer excluded), 'last', or "
                                 "[[teacher, student], ...] hidden_states indices")
    final_norm: bool = Field(True, description="apply each model's final norm before its LM head (the canonical "
                             "logit lens, our default); false feeds the raw residual stream to the head, as "
                             "DistillLens's reference code does. On SmolLM2 the raw intermediate states are 2-10x the "
                             "norm of the final one and their lens is near one-hot on wrong tokens "
                             "(benchmarks/results/lens_quality)")
    chunk_size: int = Field(64, gt=0, description="positions per chunk (all pairs' rows together): each chunk holds "
                            "~8 [chunk x vocab] float32 buffers. 64 keeps the lens's peak memory within 1.2x plain "
                            "KD at SmolLM2's vocabulary (benchmarks/step.py); larger chunks suit GPUs")


@register
class LogitLens(LayerPairs, Objective):
    name = "lens"
    Params = LensParams

    def __init__(self, params, context):
        super().__init__(params, context)
        self.divergence = divergences.get_divergence(params.divergence)

    def loss(self, student, teacher, batch):
        # Every pair's rows go through one chunked call, so the student's LM head gets one gradient buffer.
        p, n = self.params, len(student.targets)
        s_in = torch.cat([lens_input(student.lm, student.hidden[s], s, p.final_norm) for _, s in self.pairs])
        with torch.no_grad():
            t_in = torch.cat([lens_input(teacher.lm, teacher.hidden[t], t, p.final_norm) for t, _ in self.pairs])
        weights = torch.tensor(self.pair_factors(), device=s_in.device).repeat_interleave(n)
        return p.scale(self.divergence(
            s_in, t_in, temperature=p.temperature, chunk_size=p.chunk_size, reduction="sum", weights=weights,
            student_head=output_head(student.lm, self.context.vocab_size),
            teacher_head=output_head(teacher.lm, self.context.vocab_size), **p.params))
