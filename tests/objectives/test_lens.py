"""DistillLens's logit-lens objective: the chunked lens loss against naive float64 references (on tiny models:
test_lens_models.py; real runs: test_lens_runs.py)."""
import weakref

import pytest
import torch

from lmdistill import divergences as D
from divergence_reference import per_position
from tolerance import EPS32, EPS64, divergence_magnitudes, divergence_terms, worst

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.numerical]


# -----------------------------------------------------------------------------
# the chunked projection + divergence (divergences with heads) against the naive float64 computation

B, L, DS, DT, V = 3, 7, 6, 10, 40
DIVERGENCES = [("generalized_jsd", {"beta": 0.5}), ("reverse_kl", {}), ("forward_kl", {}), ("symmetric_kl", {"lam": 0.3}),
               ("tvd", {}), ("skew_forward_kl", {"alpha": 0.1})]
IDS = [n for n, _ in DIVERGENCES]


def make(seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    hs, ht = torch.randn(B, L, DS, generator=g), torch.randn(B, L, DT, generator=g)
    ws, bs = torch.randn(V, DS, generator=g), torch.randn(V, generator=g)
    wt = torch.randn(V, DT, generator=g)
    mask = torch.rand(B, L, generator=g) < 0.7
    weights = torch.rand(B, L, generator=g) + 0.5
    return [x.to(dtype) for x in (hs, ht, ws, bs, wt)] + [mask, weights]


def chunked(name, params, hs, ht, ws, bs, wt, mask, weights, chunk_size, temperature=1.0):
    """Value and gradients (hs, ws, bs) of the chunked loss; the teacher's inputs and weights ask for gradients too."""
    hs, ws, bs, ht, wt = (x.clone().requires_grad_(True) for x in (hs, ws, bs, ht, wt))
    student_head = D.Head(lambda h: h @ ws.T + bs, (ws, bs))
    teacher_head = D.Head(lambda h: h @ wt.T, (wt,))
    value = D.get_divergence(name)(hs, ht, mask, temperature, chunk_size=chunk_size, weights=weights,
                                   student_head=student_head, teacher_head=teacher_head, **params)
    value.backward()
    assert ht.grad is None and wt.grad is None  # nothing reaches the teacher
    return value.detach(), hs.grad, ws.grad, bs.grad


def naive(name, params, hs, ht, ws, bs, wt, mask, weights, temperature=1.0):
    """The whole [B, L, V] logits in float64, the divergence per position, the weighted mean over the mask."""
    hs, ws, bs = (x.detach().double().requires_grad_(True) for x in (hs, ws, bs))
    s = (hs @ ws.T + bs) / temperature
    t = ht.double() @ wt.double().T / temperature
    per = per_position(name, s, t, **params)
    value = (per * weights.double())[mask].sum() / mask.sum()
    value.backward()
    return value.detach(), hs.grad, ws.grad, bs.grad


def logit_error(h, w, b=None, eps=EPS32):
    """Any-order bound on the error of the lens logits h @ w.T (+ b) per position: a dot product over the width
    (width + 1 roundings) and the bias (1), of terms of total size sum_k |h_k w_vk| + |b_v|, largest over v."""
    h, w = h.detach().double(), w.detach().double()
    size = h.abs() @ w.abs().T + (0 if b is None else b.detach().double().abs())
    return worst(h.shape[-1] + 1 + (b is not None), size.amax(-1), eps)


def chunked_bounds(hs, ht, ws, bs, wt, mask, weights, temperature, eps=EPS32):
    """Bounds on the value and entry by entry on the gradients (hs, ws, bs) of the weighted lens loss, for two
    computations of it (any order; float32 against float64: the float64 side is exact to eps64, far below).
    A logit off by delta moves its log-probability by <= 2 delta / T, an absolute log-probability error that
    divergence_magnitudes weighs as it does the log-softmax's own: the value's error is
    w_max (worst(divergence_terms(V, n) + 1, M) + M 2 (delta_s + delta_t) / T) (the + 1: the weight's product);
    a logit-gradient entry's is E = w sizes (worst(divergence_terms(V), 1) + 2 (delta_s + delta_t) / T) on its
    sizes (divergence_magnitudes, over n and T). The head's backward then sums them: hs.grad over V (g @ ws),
    ws.grad over the n positions (g.T @ hs), bs.grad over the n positions, each E carried by |ws| or |hs| plus the
    any-order bound of that sum on the terms' sizes."""
    s64, t64 = hs.double() @ ws.double().T + bs.double(), ht.double() @ wt.double().T
    m, sizes = divergence_magnitudes(s64, t64, mask, temperature)
    delta = logit_error(hs, ws, bs, eps) + logit_error(ht, wt, eps=eps)  # [B, L]
    w = torch.where(mask, weights.double(), 0.0)
    n, vocab = int(mask.sum()), s64.shape[-1]
    value = w.max().item() * (worst(divergence_terms(vocab, n) + 1, m, eps) + m * 2 * delta[mask].max().item()
                              / temperature)
    g_size = w[..., None] * sizes  # [B, L, V]
    e = g_size * (worst(divergence_terms(vocab), 1.0, eps) + 2 * delta[..., None] / temperature)
    h, wa = hs.double().abs(), ws.double().abs()
    grad_hs = e @ wa + worst(vocab + 1, g_size @ wa, eps)
    grad_ws = (torch.einsum("blv,blk->vk", e, h) + worst(n + 1, torch.einsum("blv,blk->vk", g_size, h), eps))
    grad_bs = e.sum((0, 1)) + worst(n, g_size.sum((0, 1)), eps)
    return value, (grad_hs, grad_ws, grad_bs)


def assert_within(got, want, bound):
    """Entry by entry, plus the smallest normal number of got's dtype (a probability that underflows there)."""
    err = (got.double() - want.double()).abs()
    bound = bound + torch.finfo(got.dtype).tiny
    assert (err <= bound).all(), f"max error / bound {(err / bound).max().item():.3g}"


@pytest.mark.parametrize("name,params", DIVERGENCES, ids=IDS)
def test_chunked_lens_loss_matches_naive_float64(name, params):
    inputs = make(0)
    n = int(inputs[-2].sum())
    assert n % 3 and n % 5  # chunk sizes that do not divide the number of positions
    want = naive(name, params, *inputs, temperature=2.0)
    # V = 40, n = 13-15 positions, heads of width 6 (with a bias) and 10; T = 2
    value_tol, grad_bounds = chunked_bounds(*inputs, temperature=2.0)
    for chunk_size in (1, 3, 5, n, 1000):
        got = chunked(name, params, *inputs, chunk_size=chunk_size, temperature=2.0)
        assert_within(got[0], want[0], value_tol)
        for g, w, bound in zip(got[1:], want[1:], grad_bounds):
            assert_within(g, w, bound)
    # float64 inputs: the same bounds with EPS64
    value_tol, grad_bounds = chunked_bounds(*inputs, temperature=2.0, eps=EPS64)
    got = chunked(name, params, *make(0, torch.float64), chunk_size=3, temperature=2.0)
    assert_within(got[0], want[0], value_tol)
    for g, w, bound in zip(got[1:], want[1:], grad_bounds):
        assert_within(g, w, bound)


@pytest.mark.parametrize("name,params", DIVERGENCES[:2], ids=IDS[:2])
def test_masked_positions_are_ignored(name, params):
    hs, ht, ws, bs, wt, mask, weights = make(1)
    value, grad_hs, _, _ = chunked(name, params, hs, ht, ws, bs, wt, mask, weights, chunk_size=4)
    assert (grad_hs[~mask] == 0).all() and (grad_hs[mask] != 0).any()
    hs2, ht2, weights2 = hs.clone(), ht.clone(), weights.clone()
    hs2[~mask], ht2[~mask], weights2[~mask] = 1e3, float("nan"), float("nan")
    value2 = chunked(name, params, hs2, ht2, ws, bs, wt, mask, weights2, chunk_size=4)[0]
    assert torch.equal(value, value2)


def test_weights_scale_positions():
    hs, ht, ws, bs, wt, mask, _ = make(2)
    ones = torch.ones(B, L)
    base = chunked("generalized_jsd", {"beta": 0.5}, hs, ht, ws, bs, wt, mask, ones, chunk_size=4)
    doubled = chunked("generalized_jsd", {"beta": 0.5}, hs, ht, ws, bs, wt, mask, 2 * ones, chunk_size=4)
    # a weight of 2 doubles every term, and doubling is exact and commutes with rounding: exactly twice
    for a, b in zip(base, doubled):
        torch.testing.assert_close(2 * a, b, rtol=0, atol=0)
    # weights of 1 against none, both on the gradient path: the same computation, exactly (a forward without
    # gradients computes the values by another formula, the log-space one, and may round differently)
    unweighted = chunked("generalized_jsd", {"beta": 0.5}, hs, ht, ws, bs, wt, mask, None, chunk_size=4)
    for a, b in zip(unweighted, base):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_no_vocab_sized_tensor_is_held_between_forward_and_backward():
    # SmolLM2's vocabulary: what the graph holds from forward to backward is the gradient w.r.t. the inputs and the
    # head's parameters, never the [positions x vocab] lens logits (or any chunk's intermediates)
    g = torch.Generator().manual_seed(3)
    n, d, vocab = 40, 8, 49152
    hs = torch.randn(n, d, generator=g).requires_grad_(True)
    ht = torch.randn(n, d, generator=g)
    ws = torch.randn(vocab, d, generator=g).requires_grad_(True)
    wt = torch.randn(vocab, d, generator=g)
    saved = []

    def pack(x):
        saved.append(weakref.ref(x))
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        value = D.generalized_jsd(hs, ht, chunk_size=16, student_head=D.Head(lambda h: h @ ws.T, (ws,)),
                                  teacher_head=D.Head(lambda h: h @ wt.T))
    held = [x for x in (r() for r in saved) if x is not None]
    assert all(x.shape[-1] != vocab for x in held if x.ndim == 2 and x.shape[0] != vocab)
    assert sum(x.numel() for x in held) <= n * d + vocab * d  # grad_hs + grad_ws: 9 x vocab, not 40 x vocab
    value.backward()
    assert hs.grad.shape == hs.shape and ws.grad.shape == ws.shape


def test_heads_must_give_the_same_vocabulary():
    hs, ht, ws, bs, wt, mask, _ = make(4)
    student_head, teacher_head = D.Head(lambda h: h @ ws.T), D.Head(lambda h: h @ wt.T)
    with pytest.raises(ValueError, match="same shape"):
        D.generalized_jsd(hs, ht, mask, student_head=student_head, teacher_head=D.Head(lambda h: (h @ wt.T)[:, :-1]))
    with pytest.raises(ValueError, match="positions' shape"):
        D.generalized_jsd(hs, ht[:, :-1], student_head=student_head, teacher_head=teacher_head)
