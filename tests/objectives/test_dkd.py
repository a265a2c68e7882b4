"""Decoupled KD against a float64 brute force written from the paper's definitions, value and gradient."""
import math

import pytest
import torch

from lmdistill.teachers import ModelOutputs
from lmdistill.objectives.dkd import DecoupledKD, DKDParams, dkd_per_position
from tolerance import divergence_magnitudes, divergence_terms, worst

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.numerical]


def brute_force(s, t, targets, alpha, beta, temperature):
    """Row by row with explicit probabilities, as Zhao et al. define TCKD and NCKD."""
    out = []
    for srow, trow, k in zip(s, t, targets.tolist()):
        p, q = torch.softmax(trow / temperature, -1), torch.softmax(srow / temperature, -1)
        pt, qt = p[k], q[k]
        tckd = pt * torch.log(pt / qt) + (1 - pt) * torch.log((1 - pt) / (1 - qt))
        others = [v for v in range(len(p)) if v != k]
        p_hat, q_hat = p[others] / (1 - pt), q[others] / (1 - qt)
        nckd = torch.where(p_hat > 0, p_hat * torch.log(p_hat / q_hat), 0.0).sum()  # 0 log 0 = 0
        out.append(alpha * tckd + beta * nckd)
    return torch.stack(out)


def dkd_magnitudes(s, t, targets, alpha, beta, temperature=1.0):
    """(value, gradient) magnitudes for divergence_terms(V) of DKD per position: TCKD is a KL over 2 entries, NCKD a KL over the
    V - 1 non-target entries renormalised (log p_hat = log p - log(1 - p_t)), so divergence_terms(V) on the
    magnitudes of both the full and the renormalised distributions, times the larger weight."""
    v = s.shape[-1]
    others = torch.ones_like(s, dtype=torch.bool).scatter_(-1, targets[:, None], False)
    m_full, g_full = divergence_magnitudes(s, t, temperature=temperature, mean=False)
    m_hat, g_hat = divergence_magnitudes(s[others].view(-1, v - 1), t[others].view(-1, v - 1),
                                         temperature=temperature, mean=False)
    w = max(alpha, beta)
    return w * (m_full + m_hat), w * (g_full.max().item() + g_hat.max().item())


def make(seed, n=7, v=40, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, v, generator=g) * scale, torch.randn(n, v, generator=g) * scale,
            torch.randint(0, v, (n,), generator=g))


@pytest.mark.parametrize("alpha,beta,temperature", [(1.0, 1.0, 1.0), (1.0, 8.0, 1.0), (0.5, 2.0, 2.0), (0.0, 1.0, 0.7)])
def test_value_and_gradient_match_brute_force(alpha, beta, temperature):
    s, t, targets = make(0)
    s64 = s.double().requires_grad_(True)
    want = brute_force(s64, t.double(), targets, alpha, beta, temperature)
    want_grad, = torch.autograd.grad(want.sum(), s64)
    s32 = s.clone().requires_grad_(True)
    got = dkd_per_position(s32, t, targets, alpha, beta, temperature)
    got.sum().backward()
    m, g = dkd_magnitudes(s, t, targets, alpha, beta, temperature)  # V = 40, per position
    torch.testing.assert_close(got.double(), want.detach(), rtol=0, atol=worst(divergence_terms(40), m))
    torch.testing.assert_close(s32.grad.double(), want_grad, rtol=0, atol=worst(divergence_terms(40), g))


def test_classic_kd_is_tckd_plus_non_target_mass_times_nckd():
    s, t, targets = make(1, scale=2.0)
    s, t = s.double(), t.double()
    tckd = dkd_per_position(s, t, targets, 1.0, 0.0)
    nckd = dkd_per_position(s, t, targets, 0.0, 1.0)
    p_target = torch.softmax(t, -1).gather(-1, targets[:, None]).squeeze(-1)
    kl = (torch.softmax(t, -1) * (torch.log_softmax(t, -1) - torch.log_softmax(s, -1))).sum(-1)
    torch.testing.assert_close(tckd + (1 - p_target) * nckd, kl)


def test_masked_teacher_entries_and_confident_teachers_stay_finite():
    s, t, targets = make(2, scale=30.0)  # p_t near 1 or near 0: log(1 - p_t) from a log-sum-exp, not 1 - p
    t[:, -3:] = -math.inf  # vocabulary entries the teacher never emits
    targets[targets >= 37] = 0
    s = s.requires_grad_(True)
    values = dkd_per_position(s, t, targets, 1.0, 1.0)
    values.sum().backward()
    assert torch.isfinite(values).all() and torch.isfinite(s.grad).all()
    want = brute_force(s.detach().double(), t.double(), targets, 1.0, 1.0, 1.0)
    # V = 40, logits at scale 30: M ~ 10^3 (log-probabilities down to -200)
    m, _ = dkd_magnitudes(s.detach(), t, targets, 1.0, 1.0)
    torch.testing.assert_close(values.detach().double(), want, rtol=0, atol=worst(divergence_terms(40), m))


class _Context:
    vocab_size = 40


def test_objective_sums_chunks_scales_by_t2_and_leaves_the_teacher_alone():
    s, t, targets = make(3, n=23)
    t = t.requires_grad_(True)
    results = []
    for chunk in (4, 100):
        objective = DecoupledKD(DKDParams(alpha=1.0, beta=2.0, temperature=2.0, chunk_size=chunk), _Context())
        sg = s.clone().requires_grad_(True)
        loss = objective.loss(ModelOutputs(sg, targets), ModelOutputs(t, targets), batch={})
        loss.backward()
        results.append((loss.detach(), sg.grad))
    # two orders of a sum over 23 positions of per-position DKD (V = 40), times T^2 = 4
    m, g = dkd_magnitudes(s, t.detach(), targets, 1.0, 2.0, 2.0)
    value_tol = worst(divergence_terms(40, 23), 4.0 * 23 * m)  # partial sums <= 23 positions of size m
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=value_tol)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=0, atol=worst(divergence_terms(40), 4.0 * g))
    want = 4.0 * dkd_per_position(s, t.detach(), targets, 1.0, 2.0, 2.0).sum()
    torch.testing.assert_close(results[0][0], want, rtol=0, atol=value_tol)
    assert t.grad is None


@pytest.mark.e2e
def test_a_real_run_logs_the_dkd_component(tmp_path, word_data):
    import json
    from lmdistill.config import build_config
    from lmdistill.run import train
    from conftest import tiny_config
    objectives = [{"name": "ce", "weight": 0.5}, {"name": "dkd", "weight": 0.5, "beta": 2.0}]
    train(build_config(tiny_config(tmp_path, word_data, objectives=objectives)), log=lambda *_: None)
    steps = [json.loads(l) for l in open(tmp_path / "metrics.jsonl") if '"train"' in l]
    assert len(steps) == 6 and all(math.isfinite(r["dkd"]) and r["dkd"] > 0 for r in steps)
    assert steps[-1]["loss"] < steps[0]["loss"]
