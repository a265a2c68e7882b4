import math
import weakref
from functools import partial

import pytest
import torch

from lmdistill import divergences as D
from divergence_reference import reference


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


def assert_grad_close(g, g_ref, rtol=1e-4, atol_frac=1e-6):
    """rtol elementwise, plus an absolute slack of atol_frac * max|g_ref| for entries near zero."""
    torch.testing.assert_close(g.double(), g_ref, rtol=rtol, atol=atol_frac * g_ref.abs().max().item())


# -----------------------------------------------------------------------------
# values and gradients against the float64 reference


@pytest.mark.parametrize("name,params", CASES, ids=IDS)
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_matches_reference(name, params, temperature):
    s, t, mask = make(0)
    val, grad = value_and_grad(name, s, t, mask, temperature, **params)
    ref, ref_grad = reference_value_and_grad(name, s, t, mask, temperature, **params)
    assert val.dtype == torch.float32
    torch.testing.assert_close(val.double(), ref, rtol=1e-5, atol=1e-7)
    assert_grad_close(grad, ref_grad)


@pytest.mark.parametrize("name,params", CASES, ids=IDS)
def test_no_mask_means_all_positions(name, params):
    s, t, _ = make(1)
    val = D.get_divergence(name)(s, t, **params)
    torch.testing.assert_close(val.double(), reference(name, s, t, **params), rtol=1e-5, atol=1e-7)


# -----------------------------------------------------------------------------
# chunking, masking, gradient routing


@pytest.mark.parametrize("name,params", CASES, ids=IDS)
def test_chunk_sizes_agree(name, params):
    s, t, mask = make(2)
    n = int(mask.sum())
    assert n % 3 and n % 7  # chunk sizes below must not divide the number of positions
    base_val, base_grad = value_and_grad(name, s, t, mask, chunk_size=10**6, **params)
    for cs in (1, 3, 7, n, n + 5):
        val, grad = value_and_grad(name, s, t, mask, chunk_size=cs, **params)
        torch.testing.assert_close(val, base_val, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(grad, base_grad, rtol=1e-5, atol=1e-9)
    with torch.no_grad():  # the non-checkpointed path gives the same value
        torch.testing.assert_close(D.get_divergence(name)(s, t, mask, chunk_size=3, **params), base_val,
                                   rtol=1e-6, atol=1e-7)


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
    torch.testing.assert_close(val.double(), ref, rtol=1e-5, atol=1e-7)
    assert_grad_close(grad, ref_grad)


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
    torch.testing.assert_close(val.double(), ref, rtol=1e-5, atol=1e-7)
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
        torch.testing.assert_close(out.double(), ref.detach(), rtol=1e-5, atol=1e-7)
        assert torch.isfinite(sg.grad).all() and (sg.grad[1, 2] == 0).all()
        # float32 log-sum-exp over 49k entries: ~1e-6 relative error in every probability, so q - p cancels
        assert_grad_close(sg.grad, s64.grad, atol_frac=1e-3)


# -----------------------------------------------------------------------------
# limits and identities


def _all(name, s, t, mask, **kw):
    return D.get_divergence(name)(s, t, mask, chunk_size=4, **kw)


def test_special_cases_reduce_to_kl():
    s, t, mask = make(8)
    fkl, rkl = _all("forward_kl", s, t, mask), _all("reverse_kl", s, t, mask)
    torch.testing.assert_close(_all("generalized_jsd", s, t, mask, beta=0.0), fkl)
    torch.testing.assert_close(_all("generalized_jsd", s, t, mask, beta=1.0), rkl)
    torch.testing.assert_close(_all("symmetric_kl", s, t, mask, lam=0.0), fkl)
    torch.testing.assert_close(_all("symmetric_kl", s, t, mask, lam=1.0), rkl)
    torch.testing.assert_close(_all("skew_forward_kl", s, t, mask, alpha=0.0), fkl)
    torch.testing.assert_close(_all("skew_reverse_kl", s, t, mask, alpha=0.0), rkl)
    zero = torch.tensor(0.0)
    torch.testing.assert_close(_all("skew_forward_kl", s, t, mask, alpha=1.0), zero)
    torch.testing.assert_close(_all("skew_reverse_kl", s, t, mask, alpha=1.0), zero)
    assert _all("generalized_jsd", s, t, mask, beta=0.5) <= math.log(2)
    # TRL's special cases are limits of JSD(beta)/beta as beta -> 0 and JSD(beta)/(1-beta) as beta -> 1
    # (the formula itself tends to 0); checked on mild logits, where the expansion converges quickly
    s, t, mask = make(8, scale=0.5)
    fkl, rkl = _all("forward_kl", s, t, mask), _all("reverse_kl", s, t, mask)
    torch.testing.assert_close(_all("generalized_jsd", s, t, mask, beta=1e-3) / 1e-3, fkl, rtol=1e-2, atol=0)
    torch.testing.assert_close(_all("generalized_jsd", s, t, mask, beta=1 - 1e-3) / 1e-3, rkl, rtol=1e-2, atol=0)


@pytest.mark.parametrize("name,params", CASES, ids=IDS)
def test_zero_when_student_equals_teacher(name, params):
    _, t, mask = make(9)
    val, grad = value_and_grad(name, t, t, mask, chunk_size=4, **params)
    assert abs(val.item()) < 1e-6
    assert grad.abs().max() < 1e-6


def test_tvd_in_unit_interval():
    for scale in (0.1, 3.0, 50.0):
        s, t, mask = make(10, scale=scale)
        per_pos = [D.tvd(s[i, j], t[i, j]).item() for i in range(B) for j in range(L)]
        assert all(0.0 <= v <= 1.0 + 1e-6 for v in per_pos)
    s = torch.full((1, V), -30.0)
    t = s.clone()
    s[0, 0] = t[0, 1] = 30.0  # disjoint point masses: TVD = 1
    torch.testing.assert_close(D.tvd(s, t), torch.tensor(1.0))


@pytest.mark.parametrize("name,params", CASES, ids=IDS)
def test_temperature_scaling(name, params):
    s, t, mask = make(11)
    for T in (0.5, 2.0, 4.0):
        torch.testing.assert_close(D.get_divergence(name)(s, t, mask, T, **params),
                                   D.get_divergence(name)(s / T, t / T, mask, 1.0, **params), rtol=1e-5, atol=1e-7)


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
    torch.testing.assert_close(total, mean * mask.sum(), rtol=1e-6, atol=1e-7)


def test_any_leading_shape():
    s, t, mask = make(14)
    val = D.forward_kl(s, t, mask)
    torch.testing.assert_close(D.forward_kl(s[mask], t[mask]), val)  # [N, V] with no mask
    torch.testing.assert_close(D.forward_kl(s[0, 0], t[0, 0]), reference("forward_kl", s[0, 0], t[0, 0]).float())


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
    fn = getattr(D, f"_{name}")
    per_row = partial(fn, **params)
    s64 = s.double().requires_grad_(True)
    want = per_row(s64, t.double())
    want_grad, = torch.autograd.grad(want.sum(), s64)
    got, got_grad = D._closed_form(per_row)(s.double(), t.double())
    torch.testing.assert_close(got, want.detach(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-9, atol=1e-12)
    got32, grad32 = D._closed_form(per_row)(s, t)  # float32: finite, and close on the scale of probabilities
    assert torch.isfinite(got32).all() and torch.isfinite(grad32).all()
    torch.testing.assert_close(grad32.double(), want_grad, rtol=1e-4, atol=1e-6)


def test_divergences_without_closed_form_use_autograd():
    for name in ("skew_forward_kl", "skew_reverse_kl", "tvd", "akl"):
        assert D._closed_form(getattr(D, f"_{name}")) is None


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
    fast = getattr(D, f"_{name}_grad")(s, t, *args)
    masked = getattr(D, f"_{name}_grad_masked")(t.log_softmax(-1), s.log_softmax(-1), *args)
    tol = dict(rtol=1e-10, atol=1e-13) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-7)
    for a, b in zip(fast, masked):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, **tol)
    t[0, :3] = -math.inf
    assert not D._finite(t.log_softmax(-1))
    got = getattr(D, f"_{name}_grad")(s, t, *args)
    want = getattr(D, f"_{name}_grad_masked")(t.log_softmax(-1), s.log_softmax(-1), *args)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
