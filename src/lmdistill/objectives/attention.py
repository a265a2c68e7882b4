"""MiniLM-style attention transfer (Wang et al. 2020), with MiniLMv2's relation heads for the value relation.

For each (teacher layer, student layer) pair, in hidden_states indices (l >= 1 = the self-attention inside decoder
layer l-1, whose block outputs hidden_states[l]):
- attention distributions: KL(A_T || A_S) per student head and query row, A = softmax over keys of the layer's
  attention logits (causal, padding masked). Head counts may differ: student head h's target is sum_j M[h, j] A_T[j]
  with M[h, j] = n_S * |[h/n_S, (h+1)/n_S) ∩ [j/n_T, (j+1)/n_T)| (`head_map`: row-stochastic, the identity for equal
  counts, pairwise means when n_T = 2 n_S);
- value relation: V = the layer's v_proj output [B, L, kv_heads * head_dim] split into R relation heads (MiniLMv2),
  VR_r = softmax(V_r V_r^T / sqrt(d_r)) over the same keys, KL(VR_T || VR_S) per relation head and row. Widths and
  head counts may differ between the models: only R must divide both widths.
Rows are the query positions that predict a response token (`teachers.response_positions`); keys are the non-padding
positions up to the query. The loss is the SUM over rows of the mean over heads of the KL, summed as
attention_weight * AT + value_weight * VR and averaged over layer pairs (pair_weights, normalised): a per-token sum,
like every objective. Everything is in log space (log_softmax, -inf on hidden keys, whose terms are 0).

The models stay on their own attention implementation (sdpa by default): only the mapped layers are switched, while
ResponseLM runs them for this objective, to a function that runs the original kernel unchanged and computes the
layer's attention logits beside it (`teachers/capture.py`; the forward is bit-identical). Values come from forward hooks
on the mapped layers' v_proj, removed after each forward. Cost per mapped layer and model: one extra
[B, heads, L, L] float32 matmul (transient) and [N, heads, L] float32 kept for the loss (N response rows); the value
relation makes [B, R, L, L] (transient) and keeps [N, R, L]. The teacher cache stores neither, so a run combining
it with this objective stops before loading any model (`CachedTeacher.refuses`).
"""
import math
from typing import Literal

import torch
from pydantic import Field, model_validator

from lmdistill.divergence_rows import kl_terms
from lmdistill.errors import UserError
from lmdistill.objectives.base import LayerPairs, Objective, PairParams, register
from lmdistill.objectives.needs import Needs
from lmdistill.teachers.outputs import Request
from lmdistill.unused import refuse_unused

RELATIONS = ("attention", "value")


class AttentionParams(PairParams):
    name: Literal["attention"] = "attention"
    layers: str | list[tuple[int, int]] = Field(
        "last", description="'last', 'uniform:K', 'all' or [[teacher, student], ...] hidden_states indices >= 1: "
                            "index l is the self-attention inside decoder layer l-1")
    relations: list[Literal["attention", "value"]] = Field(
        default_factory=lambda: list(RELATIONS), min_length=1,
        description="attention: the attention distributions (MiniLM AT); value: the value relation (MiniLM VR)")
    relation_heads: int | None = Field(None, gt=0, description="relation heads R of the value relation (MiniLMv2); "
                                       "must divide both models' value widths. Default: the student's head count")
    attention_weight: float = Field(1.0, ge=0)
    value_weight: float = Field(1.0, ge=0)

    @model_validator(mode="after")
    def _attention(self):
        if isinstance(self.layers, list) and any(min(pair) < 1 for pair in self.layers):
            raise ValueError("layers: index 0 is the embeddings, which have no attention; attention layers are "
                             "hidden_states indices >= 1 (l = the self-attention inside decoder layer l-1)")
        if len(set(self.relations)) != len(self.relations):
            raise ValueError("relations: list each of 'attention' and 'value' at most once")
        if not any(self.relation_weight(r) > 0 for r in self.relations):
            raise ValueError("every listed relation has weight 0 (attention_weight, value_weight)")
        value = "value" in self.relations
        refuse_unused(self, [("attention_weight", "attention" in self.relations, "with 'attention' in relations"),
                             ("value_weight", value, "with 'value' in relations"),
                             ("relation_heads", value, "with 'value' in relations")])
        return self

    def relation_weight(self, relation):
        return self.attention_weight if relation == "attention" else self.value_weight


def head_map(n_student, n_teacher):
    """[n_S, n_T] float64, M[h, j] = n_S * |[h/n_S, (h+1)/n_S) ∩ [j/n_T, (j+1)/n_T)|, exactly (in units of
    1/(n_S n_T)): the share of teacher head j in student head h's target."""
    m = torch.zeros(n_student, n_teacher, dtype=torch.float64)
    for h in range(n_student):
        for j in range(n_teacher):
            overlap = min((h + 1) * n_teacher, (j + 1) * n_student) - max(h * n_teacher, j * n_student)
            m[h, j] = max(overlap, 0) / n_teacher
    return m


def mix_heads(log_probs, m):
    """log(sum_j M[h, j] exp(log_probs[:, j])) per student head h: [N, n_T, L] -> [N, n_S, L], over the few j
    with M[h, j] > 0 (log-sum-exp: a key every teacher head hides stays -inf)."""
    if m.shape[0] == m.shape[1] and torch.equal(m, torch.eye(len(m), dtype=m.dtype)):
        return log_probs
    out = []
    for row in m:
        js = row.nonzero().squeeze(1)
        log_w = row[js].log().to(log_probs)[None, :, None]
        out.append(torch.logsumexp(log_probs[:, js.to(log_probs.device)] + log_w, dim=1))
    return torch.stack(out, dim=1)


def attention_kl(student_logits, teacher_logits, m):
    """[N] mean over student heads of KL(sum_j M[h, j] A_T[j] || A_S[h]), from attention logits [N, heads, L] with
    -inf on hidden keys; the teacher is detached."""
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    with torch.autocast(student_logits.device.type, enabled=False):
        log_q = torch.log_softmax(student_logits.to(dtype), dim=-1)
        log_p = mix_heads(torch.log_softmax(teacher_logits.detach().to(dtype), dim=-1), m)
        return kl_terms(log_p, log_q).sum(-1).mean(-1)


def key_mask(where, attention_mask=None):
    """[N, L] bool: for each response row (b, t) of `where` [B, L-1], the keys k <= t that are not padding."""
    n_rows = where.shape[1]
    keys = torch.arange(n_rows + 1, device=where.device)
    allowed = (keys[None, :] <= keys[:n_rows, None]).unsqueeze(0).expand(len(where), -1, -1)
    if attention_mask is not None:
        allowed = allowed & attention_mask.bool()[:, None, :]
    return allowed[where]


def relation_logits(values, heads, where, attention_mask=None):
    """[N, R, L] value-relation logits V_r V_r^T / sqrt(d_r) at the response rows, -inf on hidden keys, from
    values [B, L, width] split into R = heads relation heads of width d_r = width / R."""
    batch, length, width = values.shape
    d = width // heads
    v = values.view(batch, length, heads, d).transpose(1, 2)
    scores = torch.matmul(v, v.transpose(2, 3)) / math.sqrt(d)
    rows = scores[:, :, :-1].transpose(1, 2)[where]
    return rows.masked_fill(~key_mask(where, attention_mask)[:, None, :], -torch.inf)


def value_relation_kl(student_values, teacher_values, heads, where, attention_mask=None):
    """[N] mean over relation heads of KL(VR_T || VR_S) at the response rows; the teacher is detached."""
    dtype = torch.promote_types(student_values.dtype, torch.float32)
    with torch.autocast(student_values.device.type, enabled=False):
        log_q = torch.log_softmax(relation_logits(student_values.to(dtype), heads, where, attention_mask), dim=-1)
        log_p = torch.log_softmax(relation_logits(teacher_values.detach().to(dtype), heads, where, attention_mask),
                                  dim=-1)
        return kl_terms(log_p, log_q).sum(-1).mean(-1)


def n_heads(config):
    return config.num_attention_heads


def value_width(config):
    """Width of the v_proj output: kv heads x head dim."""
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    return kv * (getattr(config, "head_dim", None) or config.hidden_size // heads)


def common_divisors(a, b):
    return [r for r in range(1, min(a, b) + 1) if a % r == 0 and b % r == 0]


@register
class AttentionTransfer(LayerPairs, Objective):
    name = "attention"
    Params = AttentionParams

    def __init__(self, params, context):
        super().__init__(params, context)
        t_cfg, s_cfg = context.teacher_config, context.student_config
        for role, cfg, layers in (("teacher", t_cfg, [t for t, _ in self.pairs]),
                                  ("student", s_cfg, [s for _, s in self.pairs])):
            bad = [layer for layer in layers if not 1 <= layer <= cfg.num_hidden_layers]
            if bad:
                raise UserError(f"objective attention: {role} layer {bad[0]} does not exist; attention layers are "
                                f"hidden_states indices 1..{cfg.num_hidden_layers} (l = decoder layer l-1)")
        self.relations = [r for r in RELATIONS if r in params.relations and params.relation_weight(r) > 0]
        self.head_map = head_map(n_heads(s_cfg), n_heads(t_cfg))
        self.relation_heads = self._relation_heads(params.relation_heads, s_cfg, t_cfg) \
            if "value" in self.relations else None

    @staticmethod
    def _relation_heads(wanted, s_cfg, t_cfg):
        ws, wt = value_width(s_cfg), value_width(t_cfg)
        heads = wanted if wanted is not None else n_heads(s_cfg)
        if ws % heads or wt % heads:
            what = f"relation_heads {heads}" if wanted is not None else \
                f"the default relation_heads (the student's {heads} heads)"
            raise UserError(f"objective attention: {what} does not divide both value widths (student {ws}, teacher "
                            f"{wt}); set relation_heads to a common divisor: "
                            f"{', '.join(map(str, common_divisors(ws, wt)))}")
        return heads

    def needs(self):
        """No hidden states: the attention logits and values of the paired layers are captured instead."""
        def side(index):
            layers = tuple(sorted({pair[index] for pair in self.pairs}))
            return Request(attention=layers if "attention" in self.relations else (),
                           values=layers if "value" in self.relations else ())
        return Needs(student=side(1), teacher=side(0))

    def loss(self, student, teacher, batch):
        p = self.params
        total = student.logits.new_zeros((), dtype=torch.promote_types(student.logits.dtype, torch.float32))
        for (t, s), factor in zip(self.pairs, self.pair_factors()):
            if factor == 0:
                continue
            if "attention" in self.relations:
                kl = attention_kl(captured(student, "attentions", s, "student"),
                                  captured(teacher, "attentions", t, "teacher"), self.head_map)
                total = total + factor * p.attention_weight * kl.sum()
            if "value" in self.relations:
                kl = value_relation_kl(captured(student, "values", s, "student"),
                                       captured(teacher, "values", t, "teacher"), self.relation_heads,
                                       student.where, student.attention_mask)
                total = total + factor * p.value_weight * kl.sum()
        return total


def captured(outputs, kind, layer, role):
    found = getattr(outputs, kind)
    if layer not in found:
        raise RuntimeError(f"objective attention: the {role}'s {kind} at layer {layer} were not captured; the "
                           f"{role}'s call must get the objectives' needs().{role} request")
    return found[layer]
