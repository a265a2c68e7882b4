"""Per-position divergence math: each function maps a chunk of student and teacher logits s, t [c, V] (float32,
already divided by T) to per-row values [c]; the closed-form twins also return d values.sum() / d s [c, V].
`lmdistill.divergences` runs them over masked positions in chunks and registers the public divergences.
"""
import math
from functools import partial

import torch

# -----------------------------------------------------------------------------
# per-chunk math: s, t are [c, V] float32 logits already divided by T; each returns [c]

def kl_terms(la, lb):
    """a (log a - log b) entry by entry from log-probs; a term where either log-prob is -inf is 0."""
    ok = (la > -math.inf) & (lb > -math.inf)
    return la.exp() * torch.where(ok, la - lb, 0.0)


def _kl(la, lb):
    """KL(a || b) per row from log-probs; terms where either log-prob is -inf contribute 0."""
    return kl_terms(la, lb).sum(-1)


def _log_mix(la, lb, w):
    """log(w * a + (1 - w) * b) from log-probs, stably."""
    if w == 0:
        return lb
    if w == 1:
        return la
    return torch.logaddexp(la + math.log(w), lb + math.log1p(-w))


def _logps(s, t):
    return t.log_softmax(-1), s.log_softmax(-1)  # log p (teacher), log q (student)


def forward_kl(s, t):
    lp, lq = _logps(s, t)
    return _kl(lp, lq)


def reverse_kl(s, t):
    lp, lq = _logps(s, t)
    return _kl(lq, lp)


def generalized_jsd(s, t, beta):
    lp, lq = _logps(s, t)
    if beta == 0:
        return _kl(lp, lq)
    if beta == 1:
        return _kl(lq, lp)
    lm = _log_mix(lp, lq, beta)  # m = beta * p + (1 - beta) * q
    return beta * _kl(lp, lm) + (1 - beta) * _kl(lq, lm)


def symmetric_kl(s, t, lam):
    lp, lq = _logps(s, t)
    return (1 - lam) * _kl(lp, lq) + lam * _kl(lq, lp)


def skew_forward_kl(s, t, alpha):
    lp, lq = _logps(s, t)
    return _kl(lp, _log_mix(lp, lq, alpha))  # KL(p || alpha p + (1 - alpha) q)


def skew_reverse_kl(s, t, alpha):
    lp, lq = _logps(s, t)
    return _kl(lq, _log_mix(lq, lp, alpha))  # KL(q || alpha q + (1 - alpha) p)


def tvd(s, t):
    return 0.5 * (t.softmax(-1) - s.softmax(-1)).abs().sum(-1)


def akl(s, t, mu):
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
# closed-form gradients: (per-row values [c], d values.sum() / d s [c, V]) for the common divergences, so a chunk's
# backward is a few elementwise passes instead of autograd replaying the forward. q = softmax(s), and for any
# per-row loss L(q): dL/ds = q * (g - sum(q * g)) with g = dL/dq. Terms dropped by _kl (a -inf log-prob) are
# dropped from the gradient too.

def finite(*xs):
    """No entry is -inf or NaN: the usual case, where the closed forms below need not mask dropped terms."""
    return all(bool(x.amin() > -math.inf) for x in xs)


def forward_kl_grad(s, t):
    lp, lq = _logps(s, t)
    if not finite(lp, lq):
        return _forward_kl_grad_masked(lp, lq)
    p = lp.exp()
    value = lp.sub_(lq).mul_(p).sum(-1)  # in place: lp is not needed again
    return value, lq.exp_().mul_(p.sum(-1, keepdim=True)).sub_(p)


def _forward_kl_grad_masked(lp, lq):
    p, q = lp.exp(), lq.exp()
    ok = (lp > -math.inf) & (lq > -math.inf)
    p_ok = torch.where(ok, p, 0.0)
    return (p_ok * torch.where(ok, lp - lq, 0.0)).sum(-1), q * p_ok.sum(-1, keepdim=True) - p_ok


def reverse_kl_grad(s, t):
    lp, lq = _logps(s, t)
    if not finite(lp, lq):
        return _reverse_kl_grad_masked(lp, lq)
    q = lq.exp()
    r = lq.sub_(lp)
    value = (q * r).sum(-1)
    return value, r.sub_((value + q.sum(-1) - 1).unsqueeze(-1)).mul_(q)


def _reverse_kl_grad_masked(lp, lq):
    q = lq.exp()
    ok = (lp > -math.inf) & (lq > -math.inf)
    r = torch.where(ok, lq - lp, 0.0)
    value = (q * r).sum(-1)
    q_ok = torch.where(ok, q, 0.0)
    return value, q_ok * (r + 1) - q * (value + q_ok.sum(-1)).unsqueeze(-1)


def generalized_jsd_grad(s, t, beta):
    if beta == 0:
        return forward_kl_grad(s, t)
    if beta == 1:
        return reverse_kl_grad(s, t)
    lp, lq = _logps(s, t)
    if not finite(lp, lq):
        return _generalized_jsd_grad_masked(lp, lq, beta)
    p, q = lp.exp(), lq.exp()
    # m = beta p + (1 - beta) q. Where it underflows to 0 so do p and q, and their terms are 0 whatever log m is.
    lm = torch.lerp(q, p, beta).clamp_min_(torch.finfo(p.dtype).tiny).log_()
    g = lq.sub_(lm)  # log q - log m
    qg = (q * g).sum(-1)
    value = beta * lp.sub_(lm).mul_(p).sum(-1) + (1 - beta) * qg
    g.mul_(1 - beta)  # dJSD/dq
    return value, g.sub_((1 - beta) * qg.unsqueeze(-1)).mul_(q)


def _generalized_jsd_grad_masked(lp, lq, beta):
    p, q = lp.exp(), lq.exp()
    m = beta * p + (1 - beta) * q  # in probability space: where m underflows to 0, so do p and q
    lm = m.log()
    pos = m > 0
    value = (beta * (p * torch.where(pos & (lp > -math.inf), lp - lm, 0.0)).sum(-1)
             + (1 - beta) * (q * torch.where(pos, lq - lm, 0.0)).sum(-1))
    g = torch.where(pos, (1 - beta) * (lq - lm), 0.0)  # dJSD/dq
    return value, q * (g - (q * g).sum(-1, keepdim=True))


def symmetric_kl_grad(s, t, lam):
    fv, fg = forward_kl_grad(s, t)
    rv, rg = reverse_kl_grad(s, t)
    return (1 - lam) * fv + lam * rv, (1 - lam) * fg + lam * rg


_GRADS = {forward_kl: forward_kl_grad, reverse_kl: reverse_kl_grad, generalized_jsd: generalized_jsd_grad,
           symmetric_kl: symmetric_kl_grad}


def closed_form(fn):
    """The closed-form (values, gradient) twin of a per-row function (maybe a partial), or None."""
    base, params = (fn.func, fn.keywords) if isinstance(fn, partial) else (fn, {})
    return partial(_GRADS[base], **params) if base in _GRADS else None


PER_ROW = {f.__name__: f for f in (forward_kl, reverse_kl, generalized_jsd, symmetric_kl, skew_forward_kl,
                                   skew_reverse_kl, tvd, akl)}
