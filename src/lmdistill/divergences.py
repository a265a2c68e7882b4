"""Token-level divergences between teacher and student next-token distributions.

Every divergence has the signature

    f(student_logits, teacher_logits, mask=None, temperature=1.0, *, chunk_size=1024,
      reduction="mean", **params) -> scalar float32 tensor

with logits of shape [..., V] and an optional bool mask of shape [...]. Notation: p = softmax(teacher / T),
q = softmax(student / T). The divergence is computed per position and summed over positions where mask is
true; reduction="mean" divides by the number of such positions, reduction="sum" does not (the training loop
normalises by a global token count). There is no T^2 factor here: the caller applies it.

Teacher logits are detached: gradients reach the student logits only. Positions are selected by the mask
first, then processed in chunks of `chunk_size` positions, each upcast to float32 (float64 inputs stay
float64); when grad is needed each chunk runs under activation checkpointing, so only the chunk's input
logits are kept for backward and the float32 [chunk, V] intermediates are recomputed. Memory therefore stays
bounded for 50k-256k vocabularies.

KL terms are sum_v a_v (log a_v - log b_v), with terms where either log-probability is -inf dropped: a_v = 0
contributes 0 (xlogy convention), and a teacher -inf logit (masked / padded vocab entry) is excluded from the
reverse-KL sum as in DistiLLM's and MiniLLM's `inf_mask` instead of making the loss +inf.
"""
import math
from functools import partial

import torch
from torch.utils.checkpoint import checkpoint

from lmdistill.errors import did_you_mean

DEFAULT_CHUNK_SIZE = 1024


# -----------------------------------------------------------------------------
# per-chunk math: s, t are [c, V] float32 logits already divided by T; each returns [c]

def _kl(la, lb):
    """KL(a || b) per row from log-probs; terms where either log-prob is -inf contribute 0."""
    ok = (la > -math.inf) & (lb > -math.inf)
    return (la.exp() * torch.where(ok, la - lb, 0.0)).sum(-1)


def _log_mix(la, lb, w):
    """log(w * a + (1 - w) * b) from log-probs, stably."""
    if w == 0:
        return lb
    if w == 1:
        return la
    return torch.logaddexp(la + math.log(w), lb + math.log1p(-w))


def _logps(s, t):
    return t.log_softmax(-1), s.log_softmax(-1)  # log p (teacher), log q (student)


def _forward_kl(s, t):
    lp, lq = _logps(s, t)
    return _kl(lp, lq)


def _reverse_kl(s, t):
    lp, lq = _logps(s, t)
    return _kl(lq, lp)


def _generalized_jsd(s, t, beta):
    lp, lq = _logps(s, t)
    if beta == 0:
        return _kl(lp, lq)
    if beta == 1:
        return _kl(lq, lp)
    lm = _log_mix(lp, lq, beta)  # m = beta * p + (1 - beta) * q
    return beta * _kl(lp, lm) + (1 - beta) * _kl(lq, lm)


def _symmetric_kl(s, t, lam):
    lp, lq = _logps(s, t)
    return (1 - lam) * _kl(lp, lq) + lam * _kl(lq, lp)


def _skew_forward_kl(s, t, alpha):
    lp, lq = _logps(s, t)
    return _kl(lp, _log_mix(lp, lq, alpha))  # KL(p || alpha p + (1 - alpha) q)


def _skew_reverse_kl(s, t, alpha):
    lp, lq = _logps(s, t)
    return _kl(lq, _log_mix(lq, lp, alpha))  # KL(q || alpha q + (1 - alpha) p)


def _tvd(s, t):
    return 0.5 * (t.softmax(-1) - s.softmax(-1)).abs().sum(-1)


def _akl(s, t, mu):
    lp, lq = _logps(s, t)
    p, q = lp.exp(), lq.exp().detach()
    p_sorted, idx = p.sort(dim=-1, descending=True, stable=True)  # stable: ties ordered by vocab id, on any device
    gap = (p_sorted - q.gather(-1, idx)).abs()
    tail = p_sorted.cumsum(-1) > mu
    tail[:, 0] = False  # the top-1 token is always head
    g_head = gap.masked_fill(tail, 0.0).sum(-1)
    g_tail = gap.masked_fill(~tail, 0.0).sum(-1)
    denom = (g_head + g_tail).clamp_min(torch.finfo(gap.dtype).tiny)  # 0 only when p == q, where both KLs are 0
    return (g_head / denom) * _kl(lp, lq) + (g_tail / denom) * _kl(lq, lp)


# -----------------------------------------------------------------------------
# shared driver

def _reduce(fn, student_logits, teacher_logits, mask, temperature, chunk_size, reduction):
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} must have the same shape")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    V = student_logits.shape[-1]
    s = student_logits.reshape(-1, V)
    t = teacher_logits.detach().reshape(-1, V)
    if mask is not None:
        if mask.shape != student_logits.shape[:-1]:
            raise ValueError(f"mask {tuple(mask.shape)} must have the logits' shape without the vocab "
                             f"dimension {tuple(student_logits.shape[:-1])}")
        m = mask.reshape(-1).to(device=s.device, dtype=torch.bool)
        s, t = s[m], t[m]
    n = s.shape[0]
    dtype = torch.promote_types(s.dtype, torch.float32)
    if n == 0:
        return s.to(dtype).sum()  # zero that is still part of the graph

    def chunk_loss(sc, tc):
        return fn(sc.to(dtype) / temperature, tc.to(dtype) / temperature).sum()

    use_ckpt = torch.is_grad_enabled() and s.requires_grad
    total = torch.zeros((), dtype=dtype, device=s.device)
    for sc, tc in zip(s.split(chunk_size), t.split(chunk_size)):
        if use_ckpt:
            total = total + checkpoint(chunk_loss, sc, tc, use_reentrant=False, preserve_rng_state=False)
        else:
            total = total + chunk_loss(sc, tc)
    return total / n if reduction == "mean" else total


def _check_unit(name, value):
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


# -----------------------------------------------------------------------------
# public divergences

def forward_kl(student_logits, teacher_logits, mask=None, temperature=1.0, *,
               chunk_size=DEFAULT_CHUNK_SIZE, reduction="mean"):
    """KL(p || q) = sum_v p (log p - log q): mean-seeking; the classic Hinton KD objective."""
    return _reduce(_forward_kl, student_logits, teacher_logits, mask, temperature, chunk_size, reduction)


def reverse_kl(student_logits, teacher_logits, mask=None, temperature=1.0, *,
               chunk_size=DEFAULT_CHUNK_SIZE, reduction="mean"):
    """KL(q || p) = sum_v q (log q - log p): mode-seeking (MiniLLM, GKD beta=1)."""
    return _reduce(_reverse_kl, student_logits, teacher_logits, mask, temperature, chunk_size, reduction)


def generalized_jsd(student_logits, teacher_logits, mask=None, temperature=1.0, *, beta=0.5,
                    chunk_size=DEFAULT_CHUNK_SIZE, reduction="mean"):
    """Generalized Jensen-Shannon divergence, exactly TRL's `GKDTrainer.generalized_jsd_loss` convention
    (huggingface/trl, trl/trainer/gkd_trainer.py; Agarwal et al. 2024, GKD, Eq. 1):

        m = beta * p + (1 - beta) * q            (built in log space with logaddexp)
        JSD(beta) = beta * KL(p || m) + (1 - beta) * KL(q || m)

    with beta=0 special-cased to forward KL(p || q) and beta=1 to reverse KL(q || p). Note these two special
    cases are not limits of the formula (which tends to 0 at both ends); they are JSD/beta as beta -> 0 and
    JSD/(1-beta) as beta -> 1. beta=0.5 is the ordinary symmetric JSD, bounded by log 2.
    """
    _check_unit("beta", beta)
    return _reduce(partial(_generalized_jsd, beta=beta), student_logits, teacher_logits, mask, temperature,
                   chunk_size, reduction)


def symmetric_kl(student_logits, teacher_logits, mask=None, temperature=1.0, *, lam=0.5,
                 chunk_size=DEFAULT_CHUNK_SIZE, reduction="mean"):
    """(1 - lam) * KL(p || q) + lam * KL(q || p), DistiLLM's `symmetric_kl` convention
    (jongwooko/distillm, distillm/losses.py, whose default is lam=0.9): lam=0 is FKL, lam=1 is RKL."""
    _check_unit("lam", lam)
    return _reduce(partial(_symmetric_kl, lam=lam), student_logits, teacher_logits, mask, temperature,
                   chunk_size, reduction)


def skew_forward_kl(student_logits, teacher_logits, mask=None, temperature=1.0, *, alpha=0.1,
                    chunk_size=DEFAULT_CHUNK_SIZE, reduction="mean"):
    """Skew KL of DistiLLM (Ko et al. 2024): KL(p || alpha * p + (1 - alpha) * q), as in
    `skewed_forward_kl` of jongwooko/distillm distillm/losses.py (mixture weight `lam` on the teacher).
    alpha=0 is forward KL; gradients flow through q inside the mixture."""
    _check_unit("alpha", alpha)
    return _reduce(partial(_skew_forward_kl, alpha=alpha), student_logits, teacher_logits, mask, temperature,
                   chunk_size, reduction)


def skew_reverse_kl(student_logits, teacher_logits, mask=None, temperature=1.0, *, alpha=0.1,
                    chunk_size=DEFAULT_CHUNK_SIZE, reduction="mean"):
    """Skew reverse KL of DistiLLM (Ko et al. 2024): KL(q || alpha * q + (1 - alpha) * p), as in
    `skewed_reverse_kl` of jongwooko/distillm distillm/losses.py (`mixed = (1-lam)*teacher + lam*student`):
    alpha is the share of the *student* in the mixture, so alpha=0 is reverse KL and the default 0.1 is a
    mildly skewed RKL. Gradients flow through q both outside and inside the mixture."""
    _check_unit("alpha", alpha)
    return _reduce(partial(_skew_reverse_kl, alpha=alpha), student_logits, teacher_logits, mask, temperature,
                   chunk_size, reduction)


def tvd(student_logits, teacher_logits, mask=None, temperature=1.0, *,
        chunk_size=DEFAULT_CHUNK_SIZE, reduction="mean"):
    """Total variation distance 0.5 * sum_v |p - q|, in [0, 1]."""
    return _reduce(_tvd, student_logits, teacher_logits, mask, temperature, chunk_size, reduction)


def akl(student_logits, teacher_logits, mask=None, temperature=1.0, *, mu=0.5,
        chunk_size=DEFAULT_CHUNK_SIZE, reduction="mean"):
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
    return _reduce(partial(_akl, mu=mu), student_logits, teacher_logits, mask, temperature, chunk_size,
                   reduction)


DIVERGENCES = {f.__name__: f for f in (forward_kl, reverse_kl, generalized_jsd, symmetric_kl, skew_forward_kl,
                                       skew_reverse_kl, tvd, akl)}


def get_divergence(name):
    """The divergence function registered under `name`; ValueError naming the valid ones otherwise."""
    if name not in DIVERGENCES:
        raise ValueError(f"unknown divergence '{name}'{did_you_mean(name, DIVERGENCES)}; "
                         f"valid: {', '.join(DIVERGENCES)}")
    return DIVERGENCES[name]
