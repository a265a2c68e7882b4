"""Token-level divergences between teacher and student next-token distributions.

Every divergence has the signature

    f(student_logits, teacher_logits, mask=None, temperature=1.0, *, chunk_size=1024, reduction="mean",
      weights=None, student_head=None, teacher_head=None, **params) -> scalar float32 tensor

with logits of shape [..., V] and an optional bool mask of shape [...]. Notation: p = softmax(teacher / T),
q = softmax(student / T). The divergence is computed per position, multiplied by `weights` [...] when given,
and summed over positions where mask is true; reduction="mean" divides by the number of such positions,
reduction="sum" does not (the training loop normalises by a global token count). There is no T^2 factor here:
the caller applies it.

Teacher logits are detached: gradients reach the student logits only. Positions are selected by the mask
first, then processed in chunks of `chunk_size` positions, each upcast to float32 (float64 inputs stay
float64). When grad is needed, each chunk's backward runs right after its forward (`_Chunked`), so only the
gradient w.r.t. the inputs is kept, never a chunk's float32 [chunk, V] intermediates, and nothing is recomputed
in backward. Memory therefore stays bounded for 50k-256k vocabularies.

With a `Head` (student_head and/or teacher_head), that side's input is a hidden state [..., d] instead of logits
and the head maps each chunk to logits inside the chunk: the logit lens of DistillLens, at O(chunk x V) extra
memory, with gradients reaching the student's hidden states and its head's parameters. The teacher's head runs
without gradients.

KL terms are sum_v a_v (log a_v - log b_v), with terms where either log-probability is -inf dropped: a_v = 0
contributes 0 (xlogy convention), and a teacher -inf logit (masked / padded vocab entry) is excluded from the
reverse-KL sum as in DistiLLM's and MiniLLM's `inf_mask` instead of making the loss +inf.
"""
from functools import partial

import torch

from lmdistill import divergence_rows
from lmdistill.chunked import Head, chunked_sum  # noqa: F401 (Head is part of this module's interface)
from lmdistill.errors import did_you_mean

DEFAULT_CHUNK_SIZE = 1024


# -----------------------------------------------------------------------------
# shared driver

def _rows(x, shape, mask, what):
    """x [..., k] or [...] (shape = the positions' shape) as rows [n, k] or [n], keeping the rows where mask is true."""
    if x.shape[:len(shape)] != shape:
        raise ValueError(f"{what} {tuple(x.shape)} must have the positions' shape {tuple(shape)}")
    x = x.reshape(-1, *x.shape[len(shape):])
    return x if mask is None else x[mask]


def _reduce(fn, student, teacher, mask, temperature, *, chunk_size=DEFAULT_CHUNK_SIZE, reduction="mean",
            weights=None, student_head=None, teacher_head=None):
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if student_head is None and teacher_head is None and student.shape != teacher.shape:
        raise ValueError(f"student logits {tuple(student.shape)} and teacher logits "
                         f"{tuple(teacher.shape)} must have the same shape")
    positions = student.shape[:-1]
    if mask is not None:
        if mask.shape != positions:
            raise ValueError(f"mask {tuple(mask.shape)} must have the inputs' shape without the last "
                             f"dimension {tuple(positions)}")
        mask = mask.reshape(-1).to(device=student.device, dtype=torch.bool)
    s = _rows(student, positions, mask, "student inputs")
    rows = [_rows(teacher.detach(), positions, mask, "teacher inputs")]
    if weights is not None:
        rows.append(_rows(weights.detach().to(student.device), positions, mask, "weights"))
    n = s.shape[0]
    params = tuple(student_head.params) if student_head is not None else ()

    def logits(sc, tc):
        ls = student_head.fn(sc) if student_head is not None else sc
        if teacher_head is not None:
            with torch.no_grad():
                tc = teacher_head.fn(tc)
        if ls.shape != tc.shape:
            raise ValueError(f"student logits {tuple(ls.shape)} and teacher logits {tuple(tc.shape)} must have "
                             f"the same shape")
        dtype = torch.promote_types(ls.dtype, torch.float32)
        ls, tc = ls.to(dtype), tc.to(dtype)
        return (ls, tc) if temperature == 1 else (ls / temperature, tc / temperature)

    if n == 0:  # a zero that is still part of the graph
        zero = s.sum() + sum((p.sum() * 0 for p in params), torch.zeros((), device=s.device))
        return zero.to(torch.promote_types(s.dtype, torch.float32))
    total = chunked_sum(logits, fn, chunk_size, s, rows, params, divergence_rows.closed_form(fn))
    return total / n if reduction == "mean" else total


def _check_unit(name, value):
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


# -----------------------------------------------------------------------------
# public divergences

def forward_kl(student_logits, teacher_logits, mask=None, temperature=1.0, **driver):
    """KL(p || q) = sum_v p (log p - log q): mean-seeking; the classic Hinton KD objective."""
    return _reduce(divergence_rows.forward_kl, student_logits, teacher_logits, mask, temperature, **driver)


def reverse_kl(student_logits, teacher_logits, mask=None, temperature=1.0, **driver):
    """KL(q || p) = sum_v q (log q - log p): mode-seeking (MiniLLM, GKD beta=1)."""
    return _reduce(divergence_rows.reverse_kl, student_logits, teacher_logits, mask, temperature, **driver)


def generalized_jsd(student_logits, teacher_logits, mask=None, temperature=1.0, *, beta=0.5, **driver):
    """Generalized Jensen-Shannon divergence, exactly TRL's `GKDTrainer.generalized_jsd_loss` convention
    (huggingface/trl, trl/trainer/gkd_trainer.py; Agarwal et al. 2024, GKD, Eq. 1):

        m = beta * p + (1 - beta) * q            (built in log space with logaddexp)
        JSD(beta) = beta * KL(p || m) + (1 - beta) * KL(q || m)

    with beta=0 special-cased to forward KL(p || q) and beta=1 to reverse KL(q || p). Note these two special
    cases are not limits of the formula (which tends to 0 at both ends); they are JSD/beta as beta -> 0 and
    JSD/(1-beta) as beta -> 1. beta=0.5 is the ordinary symmetric JSD, bounded by log 2.
    """
    _check_unit("beta", beta)
    per_row_fn = partial(divergence_rows.generalized_jsd, beta=beta)
    return _reduce(per_row_fn, student_logits, teacher_logits, mask, temperature, **driver)


def symmetric_kl(student_logits, teacher_logits, mask=None, temperature=1.0, *, lam=0.5, **driver):
    """(1 - lam) * KL(p || q) + lam * KL(q || p), DistiLLM's `symmetric_kl` convention
    (jongwooko/distillm, distillm/losses.py, whose default is lam=0.9): lam=0 is FKL, lam=1 is RKL."""
    _check_unit("lam", lam)
    per_row_fn = partial(divergence_rows.symmetric_kl, lam=lam)
    return _reduce(per_row_fn, student_logits, teacher_logits, mask, temperature, **driver)


def skew_forward_kl(student_logits, teacher_logits, mask=None, temperature=1.0, *, alpha=0.1, **driver):
    """Skew KL of DistiLLM (Ko et al. 2024): KL(p || alpha * p + (1 - alpha) * q), as in
    `skewed_forward_kl` of jongwooko/distillm distillm/losses.py (mixture weight `lam` on the teacher).
    alpha=0 is forward KL; gradients flow through q inside the mixture."""
    _check_unit("alpha", alpha)
    per_row_fn = partial(divergence_rows.skew_forward_kl, alpha=alpha)
    return _reduce(per_row_fn, student_logits, teacher_logits, mask, temperature, **driver)


def skew_reverse_kl(student_logits, teacher_logits, mask=None, temperature=1.0, *, alpha=0.1, **driver):
    """Skew reverse KL of DistiLLM (Ko et al. 2024): KL(q || alpha * q + (1 - alpha) * p), as in
    `skewed_reverse_kl` of jongwooko/distillm distillm/losses.py (`mixed = (1-lam)*teacher + lam*student`):
    alpha is the share of the *student* in the mixture, so alpha=0 is reverse KL and the default 0.1 is a
    mildly skewed RKL. Gradients flow through q both outside and inside the mixture."""
    _check_unit("alpha", alpha)
    per_row_fn = partial(divergence_rows.skew_reverse_kl, alpha=alpha)
    return _reduce(per_row_fn, student_logits, teacher_logits, mask, temperature, **driver)


def tvd(student_logits, teacher_logits, mask=None, temperature=1.0, **driver):
    """Total variation distance 0.5 * sum_v |p - q|, in [0, 1]."""
    return _reduce(divergence_rows.tvd, student_logits, teacher_logits, mask, temperature, **driver)


def akl(student_logits, teacher_logits, mask=None, temperature=1.0, *, mu=0.5, **driver):
    """Adaptive KL of Wu et al. 2024, "Rethinking Kullback-Leibler Divergence in Knowledge Distillation for
    Large Language Models" (arXiv:2404.02657), following the authors' reference `get_ratio`/`AKL` in
    wutaiqiang/LLM_KD_AKL, AKL.py:

        sort p descending; head = tokens whose cumulative teacher mass is <= mu, plus always the top-1 token;
        tail = the rest.  g_head = sum_head |p - q|, g_tail = sum_tail |p - q|   (q detached: no gradient)
        AKL = g_head / (g_head + g_tail) * KL(p || q) + g_tail / (g_head + g_tail) * KL(q || p)

    i.e. FKL is weighted by the head gap, RKL by the tail gap. Ties in p are ordered by vocab id (stable sort;
    the reference's unstable sort leaves that to the backend). Two deliberate deviations: the reference
    replaces +-inf logits by 0 before computing the weights (which gives masked vocab entries mass); here they
    keep probability 0. And when g_head + g_tail == 0 (p == q exactly) the reference divides 0/0 = NaN; here
    both weights are 0 (both KLs are 0 there anyway).
    """
    _check_unit("mu", mu)
    return _reduce(partial(divergence_rows.akl, mu=mu), student_logits, teacher_logits, mask, temperature, **driver)


DIVERGENCES = {f.__name__: f for f in (forward_kl, reverse_kl, generalized_jsd, symmetric_kl, skew_forward_kl,
                                       skew_reverse_kl, tvd, akl)}


def per_row(name, **params):
    """The per-position function of a registered divergence: (student [c, V], teacher [c, V] logits, already divided
    by T) -> [c]. For objectives that build their own rows (cross-tokenizer losses) and call `chunked_sum`."""
    get_divergence(name)
    return partial(divergence_rows.PER_ROW[name], **params) if params else divergence_rows.PER_ROW[name]


def get_divergence(name):
    """The divergence function registered under `name`; ValueError naming the valid ones otherwise."""
    if name not in DIVERGENCES:
        raise ValueError(f"unknown divergence '{name}'{did_you_mean(name, DIVERGENCES)}; "
                         f"valid: {', '.join(DIVERGENCES)}")
    return DIVERGENCES[name]
