"""The lens objective's config, presets and real runs with the SmolLM2 teacher."""
import json
import math
import re

import pytest

from lmdistill.config import build_config
from lmdistill.errors import UserError
from lmdistill.objectives.presets import expand_preset
from lmdistill.run import train
from conftest import tiny_config
from tolerance import divergence_terms, worst


def test_presets():
    assert expand_preset("distillens") == [{"name": "logit_kd", "weight": 1.0, "divergence": "reverse_kl"},
                                           {"name": "lens", "weight": 1.0}]
    assert expand_preset("distillens+ce") == [{"name": "ce", "weight": 0.5},
                                              {"name": "logit_kd", "weight": 0.5, "divergence": "reverse_kl"},
                                              {"name": "lens", "weight": 0.5}]
    lens = build_config({"objectives": "distillens"}).objectives[1]
    assert (lens.divergence, lens.params, lens.temperature, lens.layers, lens.final_norm) == \
        ("generalized_jsd", {"beta": 0.5}, 1.0, "uniform:5", True)


@pytest.mark.e2e
def test_lens_config_mistakes(tmp_path, word_data):
    def config(**lens):
        return tiny_config(tmp_path / "r", word_data, objectives=[{"name": "lens", **lens}])

    for lens, message in [({"final_nrom": False}, "unknown key 'objectives[0].final_nrom' (did you mean 'final_norm'?)"),
                          ({"layers": "uniform:x"}, "layers must be 'last', 'all', 'uniform:K'"),
                          ({"pair_weights": [1.0, -1.0]}, "pair_weights must be >= 0"),
                          ({"divergence": "jsd"}, "unknown divergence 'jsd'"),
                          ({"params": {"alpha": 0.1}}, "generalized_jsd has no parameter 'alpha'")]:
        with pytest.raises(UserError, match=re.escape(message)):
            build_config(config(**lens))
    # the tiny student has 2 layers, so uniform gives one pair: three weights are a mistake found before any output
    with pytest.raises(UserError, match=r"pair_weights has 3 entries for 1 layer pairs \[\(15, 1\)\]"):
        train(build_config(config(pair_weights=[1, 1, 1])), log=lambda *_: None)
    with pytest.raises(UserError, match="teacher layer 31 does not exist"):
        train(build_config(config(layers=[[31, 1]])), log=lambda *_: None)
    assert not (tmp_path / "r").exists()


@pytest.mark.numerical
@pytest.mark.parametrize("preset", ["distillens", "distillens+ce"])
@pytest.mark.e2e
def test_distillens_trains_on_the_smollm2_teacher(tmp_path, word_data, preset):
    config = build_config(tiny_config(tmp_path / preset, word_data, objectives=preset,
                                      student={"spec": {"hidden_size": 64, "num_layers": 3, "num_heads": 2}},
                                      train={"steps": 8, "lr": 3e-3}))
    result = train(config, log=lambda *_: None)
    rows = [json.loads(line) for line in (tmp_path / preset / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["kind"] == "train"]
    assert {"lens", "logit_kd"} <= set(train_rows[0]) and ("ce" in train_rows[0]) == (preset == "distillens+ce")
    # JSD(beta=0.5) lies in [0, log 2], computed in float32 over SmolLM2's V = 49152 entries at <= 4 x 64 positions
    # a step, a convex combination of <= 5 pairs: divergence_terms' two log-softmaxes and sums (each probability-
    # weighted, of total weight 1), the sum over v of terms p (log p - log m), q (log q - log m) whose sizes add up
    # to <= 2 (log(p / m) <= log 2), and a few roundings of each term relative to |log p| + |log m| (sum p |log p|
    # <= log V): 2 (2 log V + log 2)
    vocab = 49152
    bound = worst(divergence_terms(vocab, 4 * 64 + 5), 2.0) + worst(4, 2 * (2 * math.log(vocab) + math.log(2)))
    assert all(0 < r["lens"] <= math.log(2) + bound for r in train_rows)
    assert train_rows[-1]["logit_kd"] < train_rows[0]["logit_kd"]
    assert math.isfinite(result["metrics"]["student"]["ce"])
