"""FeatureKD's loss for each selector and metric: the same computation as before the selector registry (the same
float32 operations in the same order, so exactly equal) and within float32 bounds of a float64 reference."""
from types import SimpleNamespace

import pytest
import torch

from lmdistill.features import metrics, selectors
from lmdistill.features.registry import seed_of
from lmdistill.objectives.feature import FeatureKD, FeatureParams
from lmdistill.teachers import ModelOutputs
from features.test_feature_metrics import (metric_terms_and_size, ref_cka, ref_cosine, ref_cross, ref_infonce, ref_mse,
                                  ref_pearson)
from tolerance import worst

D_T, D_S, N = 24, 6, 19
REFERENCE = {"pearson": ref_pearson, "mse": ref_mse, "cosine": ref_cosine, "cka": ref_cka,
             "cross_correlation": lambda s, t: ref_cross(s, t, lam=0.05),
             "contrastive": lambda s, t: ref_infonce(s, t, temperature=0.3)}
PARAMS = {"cross_correlation": {"off_diagonal": 0.05}, "contrastive": {"temperature": 0.3}}
COMBINATIONS = [(s, m) for s in ("flexkd", "functional", "pca", "random", "projection")
                for m in ("pearson", "mse", "cosine", "cross_correlation", "contrastive")] + [("none", "cka")]


def loss_case(selector, metric, params=None, **options):
    """A FeatureKD over two pairs (weights 1:3) with its selections set from synthetic gradients, and random hidden
    states at N response positions: (objective, student outputs, teacher outputs)."""
    params = FeatureParams(selector=selector, metric=metric, layers="all", pair_weights=[1, 3],
                           params=PARAMS.get(metric, {}) if params is None else params, **options)
    shapes = SimpleNamespace(teacher_config=SimpleNamespace(hidden_size=D_T, num_hidden_layers=3),
                             student_config=SimpleNamespace(hidden_size=D_S, num_hidden_layers=2))
    objective = FeatureKD(params, shapes)
    g = torch.Generator().manual_seed(0)
    if objective.selector.selects:
        grads, acts = torch.randn(50, D_T, generator=g), torch.randn(50, D_T, generator=g) * torch.rand(D_T, generator=g)
        objective.selections = {t: objective.selector.select(D_S, D_T, grads * (t + 1), acts) for t in (2, 3)}
    where = torch.zeros(4, 7, dtype=torch.bool)
    where.view(-1)[torch.randperm(28, generator=g)[:N]] = True
    outputs = lambda hidden: ModelOutputs(torch.zeros(1), torch.zeros(N), hidden, where=where)  # noqa: E731
    student = outputs({s: torch.randn(N, D_S, generator=g) for s in (1, 2)})
    teacher = outputs({t: torch.randn(N, D_T, generator=g) for t in (2, 3)})
    return objective, student, teacher


def aligned(objective, student, teacher):
    """Each pair's (student, teacher) features as the metric sees them, computed as before the registry."""
    kind, p = objective.params.selector, objective.params
    out = []
    for i, (t, s) in enumerate(objective.pairs):
        s_feat, t_feat = student.hidden[s], teacher.hidden[t]
        if kind == "projection":
            s_feat = torch.nn.functional.linear(s_feat, objective.projections[i].weight)
        elif kind == "random":
            t_feat = t_feat[..., selectors.random_coordinates(D_T, D_S, seed_of(p)).indices]
        elif kind != "none":
            t_feat = objective.selections[t].apply(t_feat)
        out.append((s_feat, t_feat))
    return out


@pytest.mark.numerical
@pytest.mark.parametrize("selector, metric", COMBINATIONS)
def test_the_loss_is_computed_as_before(selector, metric):
    """As before the registry: N x sum over pairs of weight x metric(aligned features) with the metric's parameters
    bound, the same float32 operations in the same order (so exactly equal); and against a float64 reference."""
    objective, student, teacher = loss_case(selector, metric)
    got = objective.loss(student, teacher, None)
    pairs = aligned(objective, student, teacher)
    bound = {"cross_correlation": {"off_diagonal": 0.05}, "contrastive": {"temperature": 0.3, "negatives": None}}
    before = torch.zeros(())
    for w, (s_feat, t_feat) in zip([0.25, 0.75], pairs):
        before = before + w * metrics.METRICS[metric](s_feat, t_feat, **bound.get(metric, {}))
    assert got.item() == (before * N).item()
    # float64 reference on the same aligned features: each metric within its float32 bound (test_feature_metrics),
    # times its weight and N, plus the weighted sum's own roundings (3 of terms up to N x the metric)
    want = tolerance = 0.0
    for w, (s_feat, t_feat) in zip([0.25, 0.75], pairs):
        value = REFERENCE[metric](s_feat.detach().double(), t_feat.double()).item()
        terms, size = metric_terms_and_size(metric, N, s_feat.shape[1], t_feat.shape[1], temperature=0.3)
        want, tolerance = want + N * w * value, tolerance + N * w * worst(terms, size) + worst(3, N * abs(value))
    assert abs(got.item() - want) <= tolerance


def test_projection_is_seeded_as_before_and_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    objective, _, _ = loss_case("projection", "mse", seed=7)
    assert torch.random.get_rng_state().equal(state)
    with torch.random.fork_rng():
        torch.manual_seed(7)
        expected = [torch.nn.Linear(D_S, D_T, bias=False) for _ in range(2)]
    assert all(p.weight.equal(e.weight) for p, e in zip(objective.trainable_modules(), expected))
    assert sum(p.numel() for m in objective.trainable_modules() for p in m.parameters()) == 2 * D_S * D_T


@pytest.mark.numerical
def test_sampled_negatives_draw_as_before():
    objective, student, teacher = loss_case("pca", "contrastive", {"temperature": 0.3, "negatives": 4, "chunk_size": 5})
    torch.manual_seed(3)
    got = objective.loss(student, teacher, None)
    torch.manual_seed(3)
    before = sum(w * metrics.infonce(s, t, temperature=0.3, negatives=4, chunk_size=5)
                 for w, (s, t) in zip([0.25, 0.75], aligned(objective, student, teacher)))
    assert got.item() == (before * N).item()
