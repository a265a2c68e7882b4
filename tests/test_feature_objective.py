"""The feature objective (layer map + selector + metric) trains a student on the SmolLM2 teacher."""
import json

import pytest
import torch

from lmdistill.config import build_config
from lmdistill.errors import UserError
from lmdistill.layermap import layer_pairs
from lmdistill.run import train
from conftest import tiny_config


def test_layer_pairs():
    assert layer_pairs("last", 30, 6) == [(30, 6)]
    assert layer_pairs("uniform:5", 30, 6) == [(5, 1), (10, 2), (15, 3), (20, 4), (25, 5)]
    assert layer_pairs([[12, 3]], 30, 6) == [(12, 3)]


@pytest.mark.parametrize("selector, metric", [("flexkd", "pearson"), ("functional", "mse"), ("pca", "cosine"),
                                              ("random", "cross_correlation"), ("projection", "mse"),
                                              ("none", "cka"), ("flexkd", "contrastive")])
def test_each_selector_trains_on_the_real_teacher(tmp_path, word_data, selector, metric):
    objectives = [{"name": "ce", "weight": 1.0},
                  {"name": "feature", "weight": 1.0, "selector": selector, "metric": metric,
                   "layers": "uniform:1", "calibration_examples": 16}]
    config = build_config(tiny_config(tmp_path / "run", word_data, objectives=objectives, train={"steps": 8}))
    result = train(config, log=lambda *_: None)
    lines = [json.loads(l) for l in open(tmp_path / "run/metrics.jsonl") if '"train"' in l]
    feature = [l["feature"] for l in lines]
    assert all(torch.isfinite(torch.tensor(feature))) and result["metrics"]["student"]["ce"] > 0
    assert lines[-1]["loss"] < lines[0]["loss"]
    extra = list((tmp_path / "run/checkpoints/step-000008").glob("objective-*.safetensors"))
    # only the learned projection adds parameters; every other selector is parameter-free
    assert (len(extra) == 1) == (selector == "projection")


def test_trainable_parameters_only_for_projection(tmp_path, word_data):
    from lmdistill.build import build_parts
    for selector, metric in [("flexkd", "pearson"), ("functional", "pearson"), ("pca", "pearson"),
                             ("random", "pearson"), ("none", "cka"), ("projection", "mse")]:
        objectives = [{"name": "feature", "selector": selector, "metric": metric}]
        parts = build_parts(build_config(tiny_config(tmp_path, word_data, objectives=objectives)), splits=("train",))
        n = sum(p.numel() for m in parts.objectives[0].trainable_modules() for p in m.parameters())
        assert n == (64 * 576 if selector == "projection" else 0), selector


def test_feature_config_mistakes(tmp_path, word_data):
    with pytest.raises(UserError, match="metric cka compares full widths"):
        build_config(tiny_config(tmp_path, word_data, objectives=[{"name": "feature", "metric": "cka"}]))
    with pytest.raises(UserError, match="layers must be 'last', 'uniform:K'"):
        build_config(tiny_config(tmp_path, word_data, objectives=[{"name": "feature", "layers": "first"}]))
    config = build_config(tiny_config(tmp_path / "r", word_data, objectives=[{"name": "feature", "layers": [[40, 1]]}]))
    with pytest.raises(UserError, match="teacher layer 40 does not exist"):
        train(config, log=lambda *_: None)


def test_student_wider_than_teacher_needs_projection(tmp_path, word_data):
    wide = {"spec": {"hidden_size": 640, "num_layers": 1, "num_heads": 2}}
    config = build_config(tiny_config(tmp_path / "r", word_data, student=wide, objectives=[{"name": "feature"}]))
    with pytest.raises(UserError, match="the student must not be wider"):
        train(config, log=lambda *_: None)
    assert not (tmp_path / "r").exists()
