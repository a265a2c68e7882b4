"""Feature metrics against float64 brute force (value and gradient), and their invariances."""
import pytest
import torch

from lmdistill.features import metrics

pytestmark = pytest.mark.numerical


def _standard(x):
    m = sum(x[i] for i in range(len(x))) / len(x)
    var = sum((x[i] - m) ** 2 for i in range(len(x))) / len(x)
    return (x - m) / (var.sqrt() + 1e-6)


def ref_mse(s, t):
    zs, zt = _standard(s), _standard(t)
    return sum(((zs[i] - zt[i]) ** 2).mean() for i in range(len(s))) / len(s)


def ref_cosine(s, t):
    return sum(1 - (s[i] @ t[i]) / (s[i].norm() * t[i].norm()) for i in range(len(s))) / len(s)


def ref_pearson(s, t):
    zs, zt = _standard(s), _standard(t)
    return 1 - sum((zs[:, j] * zt[:, j]).mean() for j in range(s.shape[1])) / s.shape[1]


def ref_cross(s, t, lam=0.005):
    zs, zt = _standard(s), _standard(t)
    k = s.shape[1]
    c = torch.stack([torch.stack([(zs[:, i] * zt[:, j]).mean() for j in range(k)]) for i in range(k)])
    return sum((1 - c[i, i]) ** 2 for i in range(k)) + lam * sum(c[i, j] ** 2 for i in range(k) for j in range(k) if i != j)


def ref_cka(s, t):
    x, y = s - s.mean(0), t - t.mean(0)
    hsic = lambda a, b: torch.trace(a @ a.T @ b @ b.T)  # noqa: E731  ||b^T a||_F^2 written through Gram matrices
    return 1 - hsic(x, y) / (hsic(x, x).sqrt() * hsic(y, y).sqrt())


def ref_infonce(s, t, temperature=0.1):
    """Row by row: -log of the positive's share of exp(cos / T) over every teacher position."""
    out = 0
    for i in range(len(s)):
        sims = torch.stack([(s[i] @ t[j]) / (s[i].norm() * t[j].norm()) / temperature for j in range(len(t))])
        out = out - torch.log(sims[i].exp() / sims.exp().sum())
    return out / len(s)


CASES = [("contrastive", ref_infonce, 6), ("mse", ref_mse, 6), ("cosine", ref_cosine, 6), ("pearson", ref_pearson, 6),
         ("cross_correlation", ref_cross, 6), ("cka", ref_cka, 9)]


@pytest.mark.parametrize("name, reference, teacher_width", CASES)
def test_value_and_gradient_match_float64(name, reference, teacher_width):
    torch.manual_seed(0)
    s = torch.randn(13, 6, dtype=torch.float64, requires_grad=True)
    t = torch.randn(13, teacher_width, dtype=torch.float64) + 0.3 * torch.randn(1, teacher_width, dtype=torch.float64)
    expected = reference(s, t)
    (expected_grad,) = torch.autograd.grad(expected, s)
    s32 = s.detach().float().requires_grad_()
    value = metrics.METRICS[name](s32, t.float())
    (grad,) = torch.autograd.grad(value, s32)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value.double(), expected.detach(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grad.double(), expected_grad, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("name", ["mse", "pearson", "cka"])
def test_zero_when_student_matches_teacher_up_to_scale(name):
    torch.manual_seed(1)
    t = torch.randn(50, 4)
    assert metrics.METRICS[name](3 * t + 1, t).abs() < 1e-4


def test_cross_correlation_diagonal_term_vanishes_on_a_match():
    torch.manual_seed(1)
    t = torch.randn(50, 4)
    assert metrics.cross_correlation(3 * t + 1, t, off_diagonal=0.0).abs() < 1e-4
    # the off-diagonal term is the teacher's own sample correlations, so the default leaves a small floor
    assert 0 < metrics.cross_correlation(3 * t + 1, t) < 0.01


def test_cka_is_rotation_invariant_and_small_for_unrelated_features():
    torch.manual_seed(2)
    t = torch.randn(200, 8)
    q, _ = torch.linalg.qr(torch.randn(8, 8))
    assert metrics.linear_cka(t @ q, t).abs() < 1e-5
    assert metrics.linear_cka(torch.randn(200, 5), t) > 0.8


def test_contrastive_chunks_and_negatives():
    torch.manual_seed(2)
    s, t = torch.randn(40, 8), torch.randn(40, 8)
    whole = metrics.infonce(s.requires_grad_(), t, chunk_size=1000)
    (g_whole,) = torch.autograd.grad(whole, s)
    chunked = metrics.infonce(s, t, chunk_size=7)  # recomputed in backward: the same value and gradient
    (g_chunked,) = torch.autograd.grad(chunked, s)
    torch.testing.assert_close(chunked, whole)
    torch.testing.assert_close(g_chunked, g_whole)
    assert metrics.infonce(s, t, negatives=39).item() == pytest.approx(whole.item(), rel=1e-6)  # all others: same
    torch.manual_seed(3)
    few = metrics.infonce(s, t, negatives=5, chunk_size=7)
    (g_few,) = torch.autograd.grad(few, s)
    torch.manual_seed(3)  # the same draws without recomputation: the recomputed backward replayed them
    zs, zt = torch.nn.functional.normalize(s, dim=-1), torch.nn.functional.normalize(t, dim=-1)
    plain = sum(metrics._infonce_rows(zs, zt, a, min(a + 7, 40), 0.1, 5).sum() for a in range(0, 40, 7)) / 40
    (g_plain,) = torch.autograd.grad(plain, s)
    torch.testing.assert_close(few, plain)
    torch.testing.assert_close(g_few, g_plain)
    assert few.item() < whole.item()  # fewer candidates, smaller log-sum-exp
    assert torch.isfinite(g_few).all()
    # a student that matches the teacher scores far lower than an unrelated one
    assert metrics.infonce(t * 2, t).item() < metrics.infonce(s, t).item() - 1.0
