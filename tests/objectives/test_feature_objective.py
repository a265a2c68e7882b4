"""The feature objective (layer map + selector + metric) trains a student on the SmolLM2 teacher."""
import json

import pytest
import torch

from lmdistill.config import build_config
from lmdistill.errors import UserError
from lmdistill.layermap import layer_pairs
from lmdistill.run import train
from lmdistill.teachers import ModelOutputs
from conftest import tiny_config

pytestmark = pytest.mark.numerical


def test_layer_pairs():
    assert layer_pairs("last", 30, 6) == [(30, 6)]
    assert layer_pairs("uniform:5", 30, 6) == [(5, 1), (10, 2), (15, 3), (20, 4), (25, 5)]
    assert layer_pairs([[12, 3]], 30, 6) == [(12, 3)]
    assert layer_pairs("all", 30, 6) == [(5, 1), (10, 2), (15, 3), (20, 4), (25, 5), (30, 6)]
    assert layer_pairs("all", 30, 4) == [(8, 1), (15, 2), (22, 3), (30, 4)]  # round half to even: 7.5 -> 8, 22.5 -> 22


def test_sequence_level_contrastive_pools_each_sequence_against_a_float64_reference():
    """Positives: the same sequence; features averaged over each sequence's response positions (a sequence with
    none is left out); value and gradient against a brute force."""
    from types import SimpleNamespace
    from lmdistill.objectives.feature import FeatureKD, FeatureParams
    from features.test_feature_metrics import metric_terms_and_size, ref_infonce
    from tolerance import worst
    g = torch.Generator().manual_seed(0)
    where = torch.tensor([[0, 1, 1, 0, 1], [0, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 1, 1]], dtype=torch.bool)
    n, d = int(where.sum()), 4
    s = torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(n, d, generator=g, dtype=torch.float64)
    rows = where.nonzero()[:, 0].tolist()
    pooled = lambda x: torch.stack([x[[i for i, r in enumerate(rows) if r == b]].mean(0) for b in (0, 2, 3)])  # noqa
    want = ref_infonce(pooled(s), pooled(t), temperature=0.2) * n
    want_grad, = torch.autograd.grad(want, s)
    config = SimpleNamespace(hidden_size=d, num_hidden_layers=2)
    params = FeatureParams(selector="random", metric="contrastive", contrastive_level="sequence",
                           params={"temperature": 0.2})
    objective = FeatureKD(params, SimpleNamespace(teacher_config=config, student_config=config))
    objective.selections = {2: SimpleNamespace(apply=lambda x: x)}
    outputs = lambda h: ModelOutputs(h, torch.zeros(n), {2: h}, where=where)  # noqa: E731
    got = objective.loss(outputs(s), outputs(t), None)
    got_grad, = torch.autograd.grad(got, s)
    # the sequence means are float64; the metric computes in float32: one rounding of its inputs, then InfoNCE's
    # path over 3 sequences of width 4 (test_feature_metrics.metric_terms_and_size), times n = 8 positions; the
    # gradient twice the path, on terms up to (2 + sqrt(3)) times its entries (ibid.)
    terms, size = metric_terms_and_size("contrastive", 3, d, d, temperature=0.2)
    torch.testing.assert_close(got, want.detach(), rtol=0, atol=worst(terms + 1, n * size))
    grad_size = (2 + 3 ** 0.5) * want_grad.abs().max().item()
    torch.testing.assert_close(got_grad, want_grad, rtol=0, atol=worst(2 * (terms + 1), grad_size))


@pytest.mark.parametrize("selector, metric", [("flexkd", "pearson"), ("functional", "mse"), ("pca", "cosine"),
                                              ("random", "cross_correlation"), ("projection", "mse"),
                                              ("none", "cka"), ("flexkd", "contrastive"),
                                              ("pca", "contrastive:sequence")])
@pytest.mark.e2e
def test_each_selector_trains_on_the_real_teacher(tmp_path, word_data, selector, metric):
    metric, _, level = metric.partition(":")
    objectives = [{"name": "ce", "weight": 1.0},
                  {"name": "feature", "weight": 1.0, "selector": selector, "metric": metric,
                   "layers": "uniform:1", **({"contrastive_level": level} if level else {}),
                   **({"calibration_examples": 16} if selector in ("flexkd", "functional", "pca") else {})}]
    config = build_config(tiny_config(tmp_path / "run", word_data, objectives=objectives, train={"steps": 8}))
    result = train(config, log=lambda *_: None)
    lines = [json.loads(l) for l in open(tmp_path / "run/metrics.jsonl") if '"train"' in l]
    feature = [l["feature"] for l in lines]
    assert all(torch.isfinite(torch.tensor(feature))) and result["metrics"]["student"]["ce"] > 0
    assert lines[-1]["loss"] < lines[0]["loss"]
    extra = list((tmp_path / "run/checkpoints/step-000008").glob("objective-*.safetensors"))
    # only the learned projection adds parameters; every other selector is parameter-free
    assert (len(extra) == 1) == (selector == "projection")


@pytest.mark.e2e
def test_trainable_parameters_only_for_projection(tmp_path, word_data):
    from lmdistill.build import build_parts
    for selector, metric in [("flexkd", "pearson"), ("functional", "pearson"), ("pca", "pearson"),
                             ("random", "pearson"), ("none", "cka"), ("projection", "mse")]:
        objectives = [{"name": "feature", "selector": selector, "metric": metric}]
        parts = build_parts(build_config(tiny_config(tmp_path, word_data, objectives=objectives)), splits=("train",))
        n = sum(p.numel() for m in parts.objectives[0].trainable_modules() for p in m.parameters())
        assert n == (64 * 576 if selector == "projection" else 0), selector


@pytest.mark.e2e
def test_feature_config_mistakes(tmp_path, word_data):
    with pytest.raises(UserError, match="contrastive_level applies to metric contrastive only"):
        build_config(tiny_config(tmp_path, word_data, objectives=[{"name": "feature", "contrastive_level": "sequence"}]))
    with pytest.raises(UserError, match="metric cka compares full widths"):
        build_config(tiny_config(tmp_path, word_data, objectives=[{"name": "feature", "metric": "cka"}]))
    with pytest.raises(UserError, match="layers must be 'last', 'all', 'uniform:K'"):
        build_config(tiny_config(tmp_path, word_data, objectives=[{"name": "feature", "layers": "first"}]))
    config = build_config(tiny_config(tmp_path / "r", word_data, objectives=[{"name": "feature", "layers": [[40, 1]]}]))
    with pytest.raises(UserError, match="teacher layer 40 does not exist"):
        train(config, log=lambda *_: None)


@pytest.mark.e2e
def test_student_wider_than_teacher_needs_projection(tmp_path, word_data):
    wide = {"spec": {"hidden_size": 640, "num_layers": 1, "num_heads": 2}}
    config = build_config(tiny_config(tmp_path / "r", word_data, student=wide, objectives=[{"name": "feature"}]))
    with pytest.raises(UserError, match="the student must not be wider"):
        train(config, log=lambda *_: None)
    assert not (tmp_path / "r").exists()
