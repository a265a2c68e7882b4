"""The selection pass on a tiny random teacher: each selector's selection as its math computes it, the record of the
pass, and the artifact: written, reused when it matches, refused when stale."""
import pytest
import torch

from lmdistill.config import build_config
from lmdistill.errors import UserError
from lmdistill.features import artifact, selectors
from lmdistill.features.registry import get_selector
from lmdistill.features.selection_pass import SelectionPass


def feature(**entry):
    return build_config({"objectives": [{"name": "feature", **entry}]}).objectives[0]


def tiny_teacher():
    from transformers import LlamaConfig, LlamaForCausalLM
    from lmdistill.data import Example
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2)
    teacher = LlamaForCausalLM(config).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(1)
    examples = [Example(input_ids=torch.randint(1, 40, (n,), generator=g).tolist(), n_prompt=2, prompt="p",
                        response="r") for n in (5, 8, 6, 9, 7)]
    return teacher, examples


def selection_pass(selector, **options):
    params = feature(selector=selector, layers=[[1, 1], [2, 2]], **options)
    return SelectionPass(get_selector(selector)(params), [1, 2], 4, 16, 0)


def test_the_selection_pass_computes_each_selectors_selection_and_records_it(one_thread):
    teacher, examples = tiny_teacher()
    from lmdistill.data import calibration_batches
    found = selectors.teacher_gradients(teacher, calibration_batches(examples[:3], 0), (1, 2))
    want = {"flexkd": lambda g, h: selectors.flexkd(g, h, 4, "grad_x_act", "rank"),
            "functional": lambda g, h: selectors.functional(g, 4), "pca": lambda g, h: selectors.pca(h, 4)}
    for name, compute in want.items():
        options = {"score": "grad_x_act", "pairing": "rank"} if name == "flexkd" else {}
        chosen, record = selection_pass(name, calibration_examples=3, **options).compute(teacher, examples[:3], 0)
        for layer, (g, h) in found.items():
            expected = compute(g, h)
            for field in ("indices", "basis", "scores", "spectrum"):
                a, b = getattr(chosen[layer], field), getattr(expected, field)
                assert (a is None and b is None) or a.equal(b), (name, field)
        assert record["tokens"] == len(found[1][0]) and record["peak_rss_gib"] > 0
        assert ("effective_dimension" in record) == get_selector(name).functional_spectrum
    chosen, record = selection_pass("random", seed=5).compute(teacher, examples, 0)
    assert all(s.indices.equal(selectors.random_coordinates(16, 4, 5).indices) for s in chosen.values())
    assert record["tokens"] == 0


def test_an_artifact_round_trips_and_a_stale_one_is_refused(tmp_path, one_thread):
    teacher, examples = tiny_teacher()
    lines = []
    flexkd = selection_pass("flexkd", calibration_examples=4)
    computed = flexkd.prepare(teacher, examples, 0, lines.append, tmp_path)
    path = tmp_path / "selection/feature-0.safetensors"
    stored, meta = artifact.load(path)
    assert {t: s.indices.tolist() for t, s in stored.items()} == {t: s.indices.tolist() for t, s in computed.items()}
    assert (meta["selector"], meta["score"], meta["pairing"], meta["seed"], meta["k"]) == ("flexkd", "abs_grad",
                                                                                          "index", None, 4)
    assert meta["score_name"] == "abs_grad" and meta["calibration_examples"] == 4 and path.with_suffix(".png").is_file()
    again = selection_pass("flexkd", calibration_examples=4).prepare(teacher, examples, 0, lines.append, tmp_path)
    assert "reusing the flexkd selection" in lines[-1] and again[1].indices.equal(computed[1].indices)
    with pytest.raises(UserError, match=r"stale: score 'abs_grad' != this run's 'sq_grad'; recompute it"):
        selection_pass("flexkd", calibration_examples=4, score="sq_grad").prepare(teacher, examples, 0, print, tmp_path)
    with pytest.raises(UserError, match=r"stale: calibration data \(4 examples, \w+\) != this run's \(5 examples"):
        selection_pass("flexkd", calibration_examples=5).prepare(teacher, examples, 0, print, tmp_path)
    shared = str(tmp_path / "random.safetensors")
    selection_pass("random", seed=3, selection_file=shared).prepare(teacher, examples, 0, lines.append)
    assert lines[-1] == "feature: random selection of 4 coordinates (seed 3)"
    assert not (tmp_path / "random.png").exists()  # no scores to plot
    with pytest.raises(UserError, match=r"stale: seed 3 != this run's 4"):
        selection_pass("random", seed=4, selection_file=shared).check(teacher, examples)
    with pytest.raises(UserError, match=r"stale: selector 'random' != this run's 'pca'"):
        selection_pass("pca", selection_file=shared).check(teacher, examples)
