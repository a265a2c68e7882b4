import math
import weakref
from functools import partial

import pytest
import torch

from lmdistill import divergence_rows, divergences as D
from divergence_reference import reference
from tolerance import EPS32, EPS64, divergence_magnitudes as magnitudes, divergence_terms, worst


pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.numerical]


CASES = [
    ("forward_kl", {}),
    ("reverse_kl", {}),
    ("generalized_jsd", {"beta": 0.0}),
    ("generalized_jsd", {"beta": 0.1}),
    ("generalized_jsd", {"beta": 0.5}),
    ("generalized_jsd", {"beta": 0.9}),
    ("generalized_jsd", {"beta": 1.0}),
    ("symmetric_kl", {"lam": 0.0}),
    ("symmetric_kl", {"lam": 0.5}),
    ("symmetric_kl", {"lam": 0.9}),
    ("symmetric_kl", {"lam": 1.0}),
    ("skew_forward_kl", {"alpha": 0.0}),
    ("skew_forward_kl", {"alpha": 0.1}),
    ("skew_forward_kl", {"alpha": 0.5}),
    ("skew_reverse_kl", {"alpha": 0.0}),
    ("skew_reverse_kl", {"alpha": 0.1}),
    ("skew_reverse_kl", {"alpha": 0.5}),
    ("tvd", {}),
    ("akl", {"mu": 0.1}),
    ("akl", {"mu": 0.5}),
    ("akl", {"mu": 0.9}),
]
IDS = [name + "".join(f"-{k}{v}" for k, v in p.items()) for name, p in CASES]
B, L, V = 3, 5, 50


def make(seed, shape=(B, L, V), scale=3.0, p_mask=0.7):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(*shape, generator=g) * scale
    t = torch.randn(*shape, generator=g) * scale
    mask = torch.rand(shape[:-1], generator=g) < p_mask
    mask.view(-1)[0] = True
    return s, t, mask


def value_and_grad(name, s, t, mask=None, temperature=1.0, **kw):
    s = s.clone().requires_grad_(True)
    out = D.get_divergence(name)(s, t, mask, temperature, **kw)
    out.backward()
    return out.detach(), s.grad


def reference_value_and_grad(name, s, t, mask=None, temperature=1.0, **params):
    s64 = s.detach().double().requires_grad_(True)
    out = reference(name, s64, t.detach().double(), mask, temperature, **params)
    out.backward()
    return out.detach(), s64.grad


def assert_value_close(val, ref, magnitude, positions, vocab=V, eps=EPS32):
    """Two computations of a divergence averaged over `positions`: any-order bound (float32 against float64:
    the float64 side is exact to eps64, far below)."""
    tol = worst(divergence_terms(vocab, positions), magnitude, eps)
    torch.testing.assert_close(val.double(), ref.double(), rtol=0, atol=tol)


def assert_grad_close(g, g_ref, sizes, vocab=V, eps=EPS32):
    """Entry by entry, the any-order bound of divergence_terms(vocab) on that entry's term sizes (`magnitudes`),
    plus the smallest normal number of g's dtype (a probability that underflows there is flushed or subnormal)."""
    bound = worst(divergence_terms(vocab), sizes, eps) + torch.finfo(g.dtype).tiny
    err = (g.double() - g_ref.double()).abs()
    assert (err <= bound).all(), f"max error / bound {(err / bound).max().item():.3g}"


# -----------------------------------------------------------------------------
# values and gradients against the float64 reference


@pytest.mark.parametrize("name,params", CASES, ids=IDS)
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_matches_reference(name, params, temperature):
    s, t, mask = make(0)
    val, grad = value_and_grad(name, s, t, mask, temperature, **params)
    ref, ref_grad = reference_value_and_grad(name, s, t, mask, temperature, **params)
    assert val.dtype == torch.float32
    m, sizes = magnitudes(s, t, mask, temperature)  # V = 50, 11 positions, M = 20-30
    assert_value_close(val, ref, m, int(mask.sum()))
    assert_grad_close(grad, ref_grad, sizes)


@pytest.mark.parametrize("name,params", CASES, ids=IDS)
def test_no_mask_means_all_positions(name, params):
    s, t, _ = make(1)
    val = D.get_divergence(name)(s, t, **params)
    assert_value_close(val, reference(name, s, t, **params), magnitudes(s, t)[0], B * L)


# -----------------------------------------------------------------------------
# chunking, masking, gradient routing


@pytest.mark.parametrize("name,params", CASES, ids=IDS)
def test_chunk_sizes_agree(name, params):
    s, t, mask = make(2)
    n = int(mask.sum())
    assert n % 3 and n % 7  # chunk sizes below must not divide the number of positions
    base_val, base_grad = value_and_grad(name, s, t, mask, chunk_size=10**6, **params)
    m, sizes = magnitudes(s, t, mask)  # two float32 orders of the same sums: the any-order bound
    for cs in (1, 3, 7, n, n + 5):
        val, grad = value_and_grad(name, s, t, mask, chunk_size=cs, **params)
        assert_value_close(val, base_val, m, n)
        assert_grad_close(grad, base_grad, sizes)
    with torch.no_grad():  # the non-checkpointed path gives the same value
        assert_value_close(D.get_divergence(name)(s, t, mask, chunk_size=3, **params), base_val, m, n)


@pytest.mark.parametrize("name,params", CASES, ids=IDS)
def test_masked_positions_ignored(name, params):
    s, t, mask = make(3)
    val, grad = value_and_grad(name, s, t, mask, chunk_size=4, **params)
    assert (grad[~mask] == 0).all()
    s2, t2 = s.clone(), t.clone()
    s2[~mask] = torch.randn_like(s2[~mask]) * 10
    t2[~mask] = torch.randn_like(t2[~mask]) * 10
    t2[..., :7] = torch.where(mask[..., None], t2[..., :7], -math.inf)
    val2, _ = value_and_grad(name, s2, t2, mask, chunk_size=4, **params)
    assert torch.equal(val, val2)


@pytest.mark.parametrize("name,params", CASES, ids=IDS)
def test_teacher_gets_no_grad(name, params):
    s, t, mask = make(4)
    s.requires_grad_(True)
    t.requires_grad_(True)
    D.get_divergence(name)(s, t, mask, chunk_size=4, **params).backward()
    assert s.grad is not None
    assert t.grad is None or (t.grad == 0).all()


@pytest.mark.parametrize("name,params", CASES, ids=IDS)
def test_teacher_neg_inf_logits(name, params):
    # banned / padded vocab entries have teacher probability exactly 0: no NaN or inf anywhere, and KL terms
    # at those entries are dropped (exact for FKL, TVD and the mixtures; RKL terms would otherwise be +inf)
    s, t, mask = make(5)
    t[..., -5:] = -math.inf
    t[0, 0, :10] = -math.inf
    val, grad = value_and_grad(name, s, t, mask, chunk_size=4, **params)
    assert torch.isfinite(val) and torch.isfinite(grad).all()
    ref, ref_grad = reference_value_and_grad(name, s, t, mask, **params)
    m, sizes = magnitudes(s, t, mask)
    assert_value_close(val, ref, m, int(mask.sum()))
    assert_grad_close(grad, ref_grad, sizes)


# -----------------------------------------------------------------------------
# precision


@pytest.mark.parametrize("name,params", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs(name, params, dtype):
    s, t, mask = make(6)
    s, t = s.to(dtype), t.to(dtype)
    val, grad = value_and_grad(name, s, t, mask, chunk_size=4, **params)
    assert val.dtype == torch.float32 and grad.dtype == dtype
    # the bf16/fp16 inputs are exactly representable in float64, so the only error is float32 arithmetic
    ref, ref_grad = reference_value_and_grad(name, s, t, mask, **params)
    assert_value_close(val, ref, magnitudes(s, t, mask)[0], int(mask.sum()))
    assert torch.isfinite(grad).all()


def test_large_vocab_no_blowup():
    # V=49152, a few positions: between forward and backward only the gradient w.r.t. the input logits is held
    Vb = 49152
    s, t, mask = make(7, shape=(2, 3, Vb), scale=4.0, p_mask=1.0)
    mask[1, 2] = False
    saved = []

    def pack(x):
        saved.append(weakref.ref(x))
        return x

    for name, params in [("forward_kl", {}), ("generalized_jsd", {"beta": 0.5}), ("akl", {"mu": 0.5})]:
        saved.clear()
        sg = s.clone().requires_grad_(True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
            out = D.get_divergence(name)(sg, t, mask, chunk_size=2, **params)
        # each chunk's float32 and bool [2, V] intermediates are freed once its backward has run; what the graph
        # still holds is the [N, V] gradient (keeping every chunk's intermediates would be 3-5x more)
        held = sum(x.numel() * x.element_size() for x in (r() for r in saved) if x is not None)
        assert 0 < held <= 2 * int(mask.sum()) * Vb * 4 + 64
        out.backward()
        # (the brute-force AKL reference is O(V^2): use the float64 path of the implementation for it instead)
        s64 = s.double().requires_grad_(True)
        fn = D.akl if name == "akl" else lambda *a, **k: reference(name, *a, **k)
        ref = fn(s64, t.double(), mask, **params)
        ref.backward()
        # V = 49152, 5 positions, M from the logits (scale 4): the any-order bound is 3 V EPS = 1.8e-2 relative to
        # the terms, still far below an O(1) bug; the probabilistic bound would be 1.8e-4
        m, sizes = magnitudes(s, t, mask)
        assert_value_close(out, ref.detach(), m, int(mask.sum()), vocab=Vb)
        assert torch.isfinite(sg.grad).all() and (sg.grad[1, 2] == 0).all()
        assert_grad_close(sg.grad, s64.grad, sizes, vocab=Vb)


# -----------------------------------------------------------------------------
# limits and identities


def _all(name, s, t, mask, **kw):
    return D.get_divergence(name)(s, t, mask, chunk_size=4, **kw)


def test_special_cases_reduce_to_kl():
    s, t, mask = make(8)
    m, n = magnitudes(s, t, mask)[0], int(mask.sum())
    close = partial(assert_value_close, magnitude=m, positions=n)  # V = 50, 11 positions, M = 30: 6e-4
    fkl, rkl = _all("forward_kl", s, t, mask), _all("reverse_kl", s, t, mask)
    close(_all("generalized_jsd", s, t, mask, beta=0.0), fkl)
    close(_all("generalized_jsd", s, t, mask, beta=1.0), rkl)
    close(_all("symmetric_kl", s, t, mask, lam=0.0), fkl)
    close(_all("symmetric_kl", s, t, mask, lam=1.0), rkl)
    close(_all("skew_forward_kl", s, t, mask, alpha=0.0), fkl)
    close(_all("skew_reverse_kl", s, t, mask, alpha=0.0), rkl)
    zero = torch.tensor(0.0)
    close(_all("skew_forward_kl", s, t, mask, alpha=1.0), zero)
    close(_all("skew_reverse_kl", s, t, mask, alpha=1.0), zero)
    assert _all("generalized_jsd", s, t, mask, beta=0.5) <= math.log(2) + worst(divergence_terms(V, n), m)
    # TRL's special cases are limits of JSD(beta)/beta as beta -> 0 and JSD(beta)/(1-beta) as beta -> 1
    # (the formula itself tends to 0); checked on mild logits, where the expansion converges quickly.
    # rtol=1e-2 bounds an approximation, not rounding. With m = q + beta (p - q), expanding log(1 + x):
    # KL(q || m) = beta^2 chi2(p || q) / 2 + O(beta^3) and KL(p || m) = KL(p || q) - beta chi2(p || q) + O(beta^2),
    # so JSD(beta) / beta = KL(p || q) - (beta / 2) chi2(p || q) + O(beta^2): relative deviation
    # beta chi2 / (2 KL), 1.7e-3 here (chi2 = 0.90, KL = 0.27; on the reverse side chi2(q || p) / (2 KL(q || p)) =
    # 1.2, 1.2e-3). Float32 rounding adds what JSD(beta)'s error becomes after dividing by beta: log q - log m
    # share the log-softmax's error (m is formed from q), so each term rounds by ~EPS (3 + |log m|), summed
    # with weights q: EPS (3 + H(q)) <= 1e-6 per position (H(q) <= ln 50), / beta = 1e-3, 4e-3 of KL (measured:
    # 3e-4). 1.7e-3 + 4e-3 < 1e-2; a missing beta or temperature factor is off by O(1).
    s, t, mask = make(8, scale=0.5)
    fkl, rkl = _all("forward_kl", s, t, mask), _all("reverse_kl", s, t, mask)
    torch.testing.assert_close(_all("generalized_jsd", s, t, mask, beta=1e-3) / 1e-3, fkl, rtol=1e-2, atol=0)
    torch.testing.assert_close(_all("generalized_jsd", s, t, mask, beta=1 - 1e-3) / 1e-3, rkl, rtol=1e-2, atol=0)


@pytest.mark.parametrize("name,params", CASES, ids=IDS)
def test_zero_when_student_equals_teacher(name, params):
    _, t, mask = make(9)
    val, grad = value_and_grad(name, t, t, mask, chunk_size=4, **params)
    # the exact value and gradient are 0: the float32 ones are the error of two computations (V = 50, the mask's
    # positions, M from the logits)
    m, sizes = magnitudes(t, t, mask)
    assert_value_close(val, torch.tensor(0.0), m, int(mask.sum()))
    assert_grad_close(grad, torch.zeros_like(grad), sizes)


def test_tvd_in_unit_interval():
    for scale in (0.1, 3.0, 50.0):
        s, t, mask = make(10, scale=scale)
        per_pos = [D.tvd(s[i, j], t[i, j]).item() for i in range(B) for j in range(L)]
        # TVD's terms |p_v - q_v| / 2 sum to <= 1: magnitude 1, V = 50 (1.9e-5)
        assert all(0.0 <= v <= 1.0 + worst(divergence_terms(V), 1.0) for v in per_pos)
    s = torch.full((1, V), -30.0)
    t = s.clone()
    s[0, 0] = t[0, 1] = 30.0  # disjoint point masses: TVD = 1
    assert_value_close(D.tvd(s, t), torch.tensor(1.0), 1.0, 1)


@pytest.mark.parametrize("name,params", CASES, ids=IDS)
def test_temperature_scaling(name, params):
    s, t, mask = make(11)
    for T in (0.5, 2.0, 4.0):  # dividing by a power of 2 is exact: two float32 computations of the same sums
        assert_value_close(D.get_divergence(name)(s, t, mask, T, **params),
                           D.get_divergence(name)(s / T, t / T, mask, 1.0, **params),
                           magnitudes(s, t, mask, T)[0], int(mask.sum()))


@pytest.mark.parametrize("name,params", CASES, ids=IDS)
def test_empty_mask(name, params):
    s, t, _ = make(12)
    s.requires_grad_(True)
    mask = torch.zeros(B, L, dtype=torch.bool)
    for reduction in ("mean", "sum"):
        out = D.get_divergence(name)(s, t, mask, reduction=reduction, **params)
        assert out.dtype == torch.float32 and out.shape == () and out.item() == 0.0
        out.backward()
        assert s.grad is not None and (s.grad == 0).all()
    with torch.no_grad():
        assert D.get_divergence(name)(s, t, mask, **params).item() == 0.0


@pytest.mark.parametrize("name,params", CASES, ids=IDS)
def test_sum_is_mean_times_count(name, params):
    s, t, mask = make(13)
    mean = D.get_divergence(name)(s, t, mask, chunk_size=4, reduction="mean", **params)
    total = D.get_divergence(name)(s, t, mask, chunk_size=4, reduction="sum", **params)
    # the same sum, then / n and * n: two roundings of a value of size |total|
    torch.testing.assert_close(total, mean * mask.sum(), rtol=0, atol=worst(2, abs(total.item())))


def test_any_leading_shape():
    s, t, mask = make(14)
    val = D.forward_kl(s, t, mask)
    n = int(mask.sum())
    assert_value_close(D.forward_kl(s[mask], t[mask]), val, magnitudes(s, t, mask)[0], n)  # [N, V] with no mask
    assert_value_close(D.forward_kl(s[0, 0], t[0, 0]), reference("forward_kl", s[0, 0], t[0, 0]),
                       magnitudes(s[0, 0], t[0, 0])[0], 1)


# -----------------------------------------------------------------------------
# registry and argument errors


def test_registry():
    assert set(D.DIVERGENCES) == {"forward_kl", "reverse_kl", "generalized_jsd", "symmetric_kl",
                                  "skew_forward_kl", "skew_reverse_kl", "tvd", "akl"}
    for name, fn in D.DIVERGENCES.items():
        assert D.get_divergence(name) is fn


def test_unknown_divergence():
    with pytest.raises(ValueError) as e:
        D.get_divergence("forward_kll")
    msg = str(e.value)
    assert "forward_kll" in msg and "did you mean 'forward_kl'" in msg and "akl" in msg and "\n" not in msg
    with pytest.raises(ValueError, match="unknown divergence 'bogus'"):
        D.get_divergence("bogus")


def test_bad_arguments():
    s, t, mask = make(15)
    with pytest.raises(ValueError, match="same shape"):
        D.forward_kl(s, t[..., :-1])
    with pytest.raises(ValueError, match="mask"):
        D.forward_kl(s, t, mask[:, :-1])
    with pytest.raises(ValueError, match="reduction"):
        D.forward_kl(s, t, reduction="batchmean")
    with pytest.raises(ValueError, match="beta"):
        D.generalized_jsd(s, t, beta=1.5)
    with pytest.raises(TypeError):
        D.generalized_jsd(s, t, alpha=0.5)  # a parameter of another divergence


# -----------------------------------------------------------------------------
# closed-form gradients (used whenever a gradient is needed) against autograd of the per-row definitions


@pytest.mark.parametrize("name,params", [c for c in CASES if c[0] in ("forward_kl", "reverse_kl", "generalized_jsd",
                                                                      "symmetric_kl")], ids=str)
@pytest.mark.parametrize("scale", [0.3, 3.0, 30.0])
def test_closed_form_gradients_match_autograd(name, params, scale):
    s, t, _ = make(16, shape=(6, V), scale=scale)
    t[0, :10] = -math.inf  # teacher entries with probability 0
    t[1, 5] = -math.inf
    fn = getattr(divergence_rows, name)
    per_row = partial(fn, **params)
    s64 = s.double().requires_grad_(True)
    want = per_row(s64, t.double())
    want_grad, = torch.autograd.grad(want.sum(), s64)
    got, got_grad = divergence_rows.closed_form(per_row)(s.double(), t.double())
    m, sizes = magnitudes(s, t, mean=False)  # per row: positions = 1; at scale 30, M ~ 400
    assert_value_close(got, want.detach(), m, 1, eps=EPS64)  # float64 both: the same bounds with EPS64
    assert_grad_close(got_grad, want_grad, sizes, eps=EPS64)
    got32, grad32 = divergence_rows.closed_form(per_row)(s, t)  # float32: finite, close on the scale of probabilities
    assert torch.isfinite(got32).all() and torch.isfinite(grad32).all()
    assert_grad_close(grad32, want_grad, sizes)


def test_divergences_without_closed_form_use_autograd():
    for name in ("skew_forward_kl", "skew_reverse_kl", "tvd", "akl"):
        assert divergence_rows.closed_form(getattr(divergence_rows, name)) is None


@pytest.mark.parametrize("name,beta", [("forward_kl", None), ("reverse_kl", None), ("generalized_jsd", 0.1),
                                       ("generalized_jsd", 0.5), ("generalized_jsd", 0.9)], ids=str)
@pytest.mark.parametrize("scale", [0.3, 3.0, 30.0])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_finite_fast_path_matches_masked_path(name, beta, scale, dtype):
    # Finite inputs take the unmasked closed form; it must agree with the masked one, including where float32
    # probabilities underflow to 0 (scale 30), and the masked one must be taken as soon as one entry is -inf.
    s, t, _ = make(17, shape=(6, 300), scale=scale)
    s, t = s.to(dtype), t.to(dtype)
    args = () if beta is None else (beta,)
    fast = getattr(divergence_rows, f"{name}_grad")(s, t, *args)
    masked = getattr(divergence_rows, f"_{name}_grad_masked")(t.log_softmax(-1), s.log_softmax(-1), *args)
    eps = EPS64 if dtype == torch.float64 else EPS32
    m, sizes = magnitudes(s, t, mean=False)  # V = 300, per row
    (values, grad), (want_values, want_grad) = fast, masked
    assert torch.isfinite(values).all() and torch.isfinite(grad).all()
    assert_value_close(values, want_values, m, 1, vocab=300, eps=eps)
    assert_grad_close(grad, want_grad, sizes, vocab=300, eps=eps)
    t[0, :3] = -math.inf
    assert not divergence_rows.finite(t.log_softmax(-1))
    got = getattr(divergence_rows, f"{name}_grad")(s, t, *args)
    want = getattr(divergence_rows, f"_{name}_grad_masked")(t.log_softmax(-1), s.log_softmax(-1), *args)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
