"""Feature metrics against float64 brute force (value and gradient), and their invariances."""
import math

import pytest
import torch

from lmdistill.features import metrics
from tolerance import worst

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


def standardise_terms(n):
    """Roundings behind a standardised feature (x - mean) / (std + eps) over n positions: the mean (n), the
    variance (n), sqrt, + eps, the subtraction and the division. Its absolute error is <= worst(., max|x - mean| /
    std + |mean| / std), the size of the terms in z's units (the mean's error is relative to the sum of |x|)."""
    return 2 * n + 4


def metric_terms_and_size(name, n, k, kt, temperature=0.1):
    """(roundings on the path to the metric's value, size of the terms in the value's units) for N = n positions,
    student width k, teacher width kt, in float32 (the float64 reference is exact to far below):
    - mse: z on both sides (standardise_terms), difference, square, means over k and n; terms (|zs| + |zt|)^2 of
      mean <= 4 (mean z^2 = 1), doubled by the square of a relative error: 8;
    - pearson: z on both sides, product, means over n and k; terms |zs zt| of mean <= 1, two factors: 2;
    - cross_correlation: C = zs^T zt / n (dot over n), then sum over k kt entries of (1 - C_ii)^2, C_ij^2:
      |C| <= 1, each square's derivative <= 4, over k diagonal entries: 4 k;
    - cosine: dot and two norms over k (k + 1 each), divide, 1 - cos, mean over n; 1 - cos in [0, 2]: 2;
    - cka: centring (n + 1), X^T X-type products (n + 1), squares, sums over k kt entries, for each of the three
      Frobenius norms, then sqrt and divide; the ratio <= 1, squared (relative errors doubled): 2;
    - contrastive: normalise (k + 2), similarity (k + 1), over T, log-sum-exp over n (n + 2), mean over n;
      rows of size <= 2 / T + log n."""
    s = standardise_terms(n)
    return {"mse": (s + 2 + k + n, 8.0),
            "pearson": (s + 1 + k + n, 2.0),
            "cross_correlation": (2 * s + n + 1 + k * kt, 4.0 * k),
            "cosine": (3 * (k + 1) + 2 + n, 2.0),
            "cka": (3 * (2 * (n + 1) + 1 + k * kt) + 2, 2.0),
            "contrastive": (2 * k + 3 + 2 * n + 3, 2 / temperature + math.log(n))}[name]


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
    terms, size = metric_terms_and_size(name, 13, 6, teacher_width)  # n = 13 positions, k = 6, kt = 6 or 9
    torch.testing.assert_close(value.double(), expected.detach(), rtol=0, atol=worst(terms, size))
    # the gradient retraces the path backward (2 x the roundings); the backward of a standardisation or a
    # normalisation, g - mean(g) - z mean(g z) (over std or norm), is made of terms up to (2 + max|z|) times the
    # entries' size, with |z| <= sqrt(n) for a standardised column (sum z^2 = n) and <= 1 for a unit vector
    grad_size = (2 + math.sqrt(13)) * expected_grad.abs().max().item()
    torch.testing.assert_close(grad.double(), expected_grad, rtol=0, atol=worst(2 * terms, grad_size))


@pytest.mark.parametrize("name", ["mse", "pearson", "cka"])
def test_zero_when_student_matches_teacher_up_to_scale(name):
    torch.manual_seed(1)
    t = torch.randn(50, 4)
    s = 3 * t + 1
    n, k = t.shape
    z_error = worst(standardise_terms(n) + 2, z_size(s, t))  # 3 t + 1 rounds twice more, relative to the same size
    if name == "mse":  # mean (zs - zt)^2: second order in the z errors, both sides
        bound = (2 * z_error) ** 2
    elif name == "pearson":  # 1 - mean zs zt: first order, mean |z| <= 1, then the means over n and k of size 1
        bound = 2 * z_error + worst(n + k + 1, 1.0)
    else:  # cka: three Frobenius norms of cross products (centring n + 1, dot over n + 1, squares, sum over k^2
        # entries) are equal up to their roundings; the ratio of size 1
        bound = worst(3 * (2 * (n + 1) + 1 + k * k) + 2, 2.0)
    assert metrics.METRICS[name](s, t).abs() <= bound


def z_size(*xs):
    """The size in z's units of the terms behind a standardised feature: max over columns of (max|x - mean| +
    |mean|) / std (float64)."""
    out = 0.0
    for x in xs:
        x = x.double()
        mean, std = x.mean(0), x.std(0, unbiased=False)
        out = max(out, (((x - mean).abs().max(0).values + mean.abs()) / std).max().item())
    return out


def test_cross_correlation_diagonal_term_vanishes_on_a_match():
    torch.manual_seed(1)
    t = torch.randn(50, 4)
    # sum over k of (1 - C_ii)^2 with C_ii = mean zs zt off 1 by <= 2 z errors (mean |z| <= 1) and the dot product
    # over n = 50 of terms of mean size 1: second order
    n, k = t.shape
    c_error = 2 * worst(standardise_terms(n) + 2, z_size(3 * t + 1, t)) + worst(n + 1, 1.0)
    assert metrics.cross_correlation(3 * t + 1, t, off_diagonal=0.0).abs() <= k * c_error ** 2
    # the off-diagonal term is the teacher's own sample correlations, so the default leaves a small floor
    assert 0 < metrics.cross_correlation(3 * t + 1, t) < 0.01


def test_cka_is_rotation_invariant_and_small_for_unrelated_features():
    torch.manual_seed(2)
    t = torch.randn(200, 8)
    q, _ = torch.linalg.qr(torch.randn(8, 8))
    # the rotated features: a dot product over k = 8 (k + 1) more on X, and Q orthonormal only to rounding (Householder
    # QR: ||Q^T Q - I|| within k + 1 roundings of unit size, relative in the norms, squared: twice); then cka's terms
    # with n = 200, k = 8
    n, k = t.shape
    bound = worst(3 * (2 * (n + 1) + (k + 1) + 1 + k * k) + 2, 2.0) + worst(2 * (k + 1), 2.0)
    assert metrics.linear_cka(t @ q, t).abs() <= bound
    assert metrics.linear_cka(torch.randn(200, 5), t) > 0.8


def test_contrastive_chunks_and_negatives():
    torch.manual_seed(2)
    s, t = torch.randn(40, 8), torch.randn(40, 8)
    whole = metrics.infonce(s.requires_grad_(), t, chunk_size=1000)
    (g_whole,) = torch.autograd.grad(whole, s)
    chunked = metrics.infonce(s, t, chunk_size=7)  # recomputed in backward: the same value and gradient
    (g_chunked,) = torch.autograd.grad(chunked, s)
    # chunks of 7 rows against one of 40: the same sums in shapes a kernel may order differently. A similarity is a
    # dot product of k = 8 unit-vector entries over T: error delta <= worst(k + 1, 1 / T); a row's log-sum-exp over
    # n = 40 similarities of size <= 1 / T + log n, the positive's delta, and the sum over n rows (and chunks) of rows
    # of size <= 2 / T + log n, over n
    n, k, temperature = 40, 8, 0.1
    delta = worst(k + 1, 1 / temperature)
    row = 2 * delta + worst(n + 2, 1 / temperature + math.log(n))
    torch.testing.assert_close(chunked, whole, rtol=0, atol=row + worst(n, 2 / temperature + math.log(n)))
    # gradient w.r.t. zs_i: (softmax_i - onehot_i) @ zt / (n T) -- the softmax off by 2 delta + worst(n + 2, 1)
    # relative, the dot product over n of terms of total size 2 (|zt| entries <= 1) -- then the normalisation's
    # backward (g - z (z . g)) / |s_i|: an entry error e in g moves an output entry by <= (1 + sqrt(k)) e (|z| = 1),
    # and k + 2 roundings of terms that size times g's entries (<= 2 / (n T))
    zs_grad = (2 * delta + worst(n + 2, 1.0) + worst(n + 1, 2.0)) / (n * temperature)
    bound = (1 + math.sqrt(k)) * (worst(k + 2, 2 / (n * temperature)) + zs_grad)
    assert ((g_chunked - g_whole).abs() <= bound / s.detach().norm(dim=-1, keepdim=True)).all()
    # negatives=N-1 takes the all-negatives path, one chunk of the default size: the same computation, exactly
    assert metrics.infonce(s, t, negatives=39).item() == whole.item()
    torch.manual_seed(3)
    few = metrics.infonce(s, t, negatives=5, chunk_size=7)
    (g_few,) = torch.autograd.grad(few, s)
    torch.manual_seed(3)  # the same draws without recomputation: the recomputed backward replayed them
    zs, zt = torch.nn.functional.normalize(s, dim=-1), torch.nn.functional.normalize(t, dim=-1)
    plain = sum(metrics._infonce_rows(zs, zt, a, min(a + 7, 40), 0.1, 5).sum() for a in range(0, 40, 7)) / 40
    (g_plain,) = torch.autograd.grad(plain, s)
    # the same operations on the same shapes in the same order (the checkpoint only recomputes them): exactly
    torch.testing.assert_close(few, plain, rtol=0, atol=0)
    torch.testing.assert_close(g_few, g_plain, rtol=0, atol=0)
    assert few.item() < whole.item()  # fewer candidates, smaller log-sum-exp
    assert torch.isfinite(g_few).all()
    # a student that matches the teacher scores far lower than an unrelated one
    assert metrics.infonce(t * 2, t).item() < metrics.infonce(s, t).item() - 1.0
