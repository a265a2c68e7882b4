"""Real runs: the SmolLM2 teacher distilled into a tiny student for a few steps."""
import json
import math

import pytest
import torch
from safetensors.torch import load_file

from lmdistill.config import build_config
from lmdistill.errors import UserError
from lmdistill.run import train
from conftest import tiny_config
from tolerance import TINY_STUDENT, training_terms, typical

pytestmark = pytest.mark.e2e


def _weights(run_dir):
    return load_file(f"{run_dir}/student/model.safetensors")


def _train_losses(run_dir):
    lines = [json.loads(l) for l in open(f"{run_dir}/metrics.jsonl")]
    return [l for l in lines if l["kind"] == "train"]


def test_real_run_learns_and_writes_outputs(tmp_path, word_data):
    run = tmp_path / "run"
    config = build_config(tiny_config(run, word_data, train={"steps": 40, "eval_every": 20, "log_every": 1},
                                      eval={"generate": True, "max_new_tokens": 8}))
    result = train(config, log=lambda *_: None)
    losses = [l["loss"] for l in _train_losses(run)]
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 1.0
    student = result["metrics"]["student"]
    assert student["ce"] < math.log(49152) - 2  # far below a uniform guess
    assert student["kl"] > 0 and result["metrics"]["teacher"]["ce"] > 0
    assert {"constant", "echo"} <= set(result["metrics"]) and "rougeL" in student
    assert "student before training" not in result["metrics"]  # a fresh student has no level of its own to report
    assert {"gen_bpb", "gen_nll", "distinct1", "distinct2", "loops"} <= set(student)
    assert "generations: teacher's bits/byte" in (run / "report.md").read_text()
    for name in ("config.yaml", "metrics.jsonl", "report.md", "eval.json", "student/model.safetensors",
                 "student/tokenizer.json", "checkpoints/step-000040/trainer.pt"):
        assert (run / name).exists(), name
    assert any(json.loads(l)["kind"] == "dev" for l in open(run / "metrics.jsonl"))
    assert not any(p.name.endswith(".tmp") for p in run.rglob("*"))
    # components are logged separately and the total is their weighted sum
    first = _train_losses(run)[0]
    assert first["loss"] == pytest.approx(0.5 * first["ce"] + 0.5 * first["logit_kd"])
    # the teacher is never saved: the checkpoint holds only the student's weights
    saved = load_file(run / "checkpoints/step-000040/student/model.safetensors")
    assert max(t.shape[-1] for t in saved.values()) <= 64 * 3


def test_resume_gives_the_same_weights(tmp_path, word_data):
    straight = build_config(tiny_config(tmp_path / "a", word_data, train={"steps": 6}))
    train(straight, log=lambda *_: None)
    split = build_config(tiny_config(tmp_path / "b", word_data, train={"steps": 6}))
    assert train(split, stop_at=3, log=lambda *_: None) is None
    assert (tmp_path / "b/checkpoints/step-000003").is_dir() and not (tmp_path / "b/student").exists()
    train(split, resume=True, log=lambda *_: None)
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert [l["loss"] for l in _train_losses(tmp_path / "a")] == [l["loss"] for l in _train_losses(tmp_path / "b")]


def _first_step_gradients(config, run_dir):
    from lmdistill.build import build_parts, wrap
    from lmdistill.run import make_accelerator
    from lmdistill.train.loop import Trainer
    parts = build_parts(config)
    student, teacher = wrap(parts)
    trainer = Trainer(parts, student, teacher, make_accelerator(config), run_dir, log=lambda *_: None)
    trainer.optimizer.zero_grad = lambda **_: None  # keep the gradients of the step for inspection
    trainer.train_step(0)
    return {name: p.grad.clone() for name, p in student.named_parameters()}


@pytest.mark.numerical
def test_accumulation_normalises_by_all_response_tokens(tmp_path, word_data):
    """batch 4 x 2 accumulation steps == batch 8 in one step: same gradient, because each micro-batch's
    token sum is divided by the token count of the whole step, not by its own count."""
    one = build_config(tiny_config(tmp_path, word_data, train={"batch_size": 8}))
    two = build_config(tiny_config(tmp_path, word_data, train={"batch_size": 4, "grad_accum": 2}))
    a, b = _first_step_gradients(one, tmp_path), _first_step_gradients(two, tmp_path)
    # other batch shapes (8 vs 4, other padding widths) sum the same terms in other orders: equal to float32
    # rounding of one step (tolerance.py: training_terms) on the size of each gradient; a per-micro-batch
    # normalisation would be off by the ratio of token counts
    from lmdistill.models import load_teacher
    teacher = load_teacher(one.teacher)[0].config
    rel = typical(training_terms(teacher, TINY_STUDENT, one.data.max_length, teacher.vocab_size, steps=1))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=rel * a[key].abs().max().item())
    # the two micro-batches hold different numbers of response tokens, so a per-micro-batch mean would differ
    from lmdistill.build import build_parts
    from lmdistill.data import BatchOrder
    parts = build_parts(two, splits=("train",))
    counts = [sum(len(parts.splits["train"].examples[i].input_ids) - parts.splits["train"].examples[i].n_prompt
                  for i in idx) for idx in BatchOrder(len(parts.splits["train"].examples), 4, 2).step(0)]
    assert counts[0] != counts[1]


def test_existing_run_is_not_overwritten_by_accident(tmp_path, word_data):
    config = build_config(tiny_config(tmp_path / "r", word_data, train={"steps": 1}))
    train(config, log=lambda *_: None)
    with pytest.raises(UserError, match="already holds a run; pass --resume"):
        train(config, log=lambda *_: None)
    changed = build_config(tiny_config(tmp_path / "r", word_data, train={"steps": 1, "lr": 0.5}))
    with pytest.raises(UserError, match="cannot resume .*train.lr"):
        train(changed, resume=True, log=lambda *_: None)


def test_teacher_is_frozen_and_in_eval_mode(word_data, tmp_path):
    from lmdistill.build import build_parts
    parts = build_parts(build_config(tiny_config(tmp_path, word_data)), splits=("train",))
    assert not parts.teacher.training
    assert not any(p.requires_grad for p in parts.teacher.parameters())
    assert all(p.requires_grad for p in parts.student.parameters())


def test_impossible_layer_index_is_refused(tmp_path, word_data, monkeypatch):
    from lmdistill.objectives.ce import CrossEntropy
    from lmdistill.objectives.needs import Needs
    from lmdistill.teachers import Request
    monkeypatch.setattr(CrossEntropy, "needs", lambda self: Needs(student=Request(hidden=(7,)), teacher=None))
    config = build_config(tiny_config(tmp_path / "r", word_data))
    with pytest.raises(UserError, match="student layer 7 does not exist"):
        train(config, log=lambda *_: None)
    assert not (tmp_path / "r").exists()


def test_overwrite_removes_only_lmdistill_outputs(tmp_path, word_data):
    run = tmp_path / "r"
    config = build_config(tiny_config(run, word_data, train={"steps": 1}))
    train(config, log=lambda *_: None)
    (run / "notes.txt").write_text("mine")
    (run / "checkpoints" / "step-000099").mkdir()
    (run / "selection").mkdir()  # a selection artifact in run_dir belongs to the run it replaces
    train(config, overwrite=True, log=lambda *_: None)
    assert not (run / "selection").exists()
    assert (run / "notes.txt").read_text() == "mine"
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-000001"]


def test_objective_parameters_are_trained_saved_beside_the_student_and_resumed(tmp_path, word_data, monkeypatch):
    """A projector-like objective: its weights are in the optimizer, in their own checkpoint file, never in
    the student, and restored on resume."""
    from typing import Literal

    from lmdistill.objectives.base import OBJECTIVES, Objective, ObjectiveParams
    from lmdistill.objectives.needs import Needs

    class ProbeParams(ObjectiveParams):
        name: Literal["probe"] = "probe"

    class Probe(Objective):
        name, Params = "probe", ProbeParams

        def __init__(self, params, context):
            super().__init__(params, context)
            torch.manual_seed(0)
            self.proj = torch.nn.Linear(1, 1)

        def trainable_modules(self):
            return [self.proj]

        def needs(self):
            return Needs(teacher=None)

        def loss(self, student, teacher, batch):
            return ((self.proj(torch.ones(1, 1)) - 3.0) ** 2).sum() * len(student.targets)

    monkeypatch.setitem(OBJECTIVES, "probe", Probe)
    objectives = [{"name": "ce"}, {"name": "probe"}]
    straight = build_config(tiny_config(tmp_path / "a", word_data, objectives=objectives))
    train(straight, log=lambda *_: None)
    probe = load_file(tmp_path / "a/checkpoints/step-000006/objective-probe.safetensors")
    torch.manual_seed(0)
    initial = torch.nn.Linear(1, 1)
    assert set(probe) == {"0.weight", "0.bias"} and probe["0.bias"].item() != initial.bias.item()  # it trained
    assert all(k.startswith(("model.", "lm_head.")) for k in _weights(tmp_path / "a"))
    split = build_config(tiny_config(tmp_path / "b", word_data, objectives=objectives))
    train(split, stop_at=3, log=lambda *_: None)
    train(split, resume=True, log=lambda *_: None)
    again = load_file(tmp_path / "b/checkpoints/step-000006/objective-probe.safetensors")
    assert all(torch.equal(probe[k], again[k]) for k in probe)


def test_sampled_evaluation_over_seeds_and_classification_accuracy(tmp_path, word_data):
    from lmdistill.build import build_parts, wrap
    from lmdistill.eval.generation import generate
    from lmdistill.eval.run import evaluate
    labels = {k: v for k, v in word_data.items()}
    config = build_config(tiny_config(tmp_path, labels, data={"task": "classification"},
                                      eval={"generate": True, "do_sample": True, "seeds": [0, 1, 2],
                                            "max_new_tokens": 4, "max_examples": 4}))
    parts = build_parts(config, splits=("train", "test"))
    student, teacher = wrap(parts)
    result = evaluate(parts, student, teacher, "test", log=lambda *_: None)
    rows = result["metrics"]
    assert {"rougeL", "rougeL_std", "accuracy", "accuracy_std"} <= set(rows["student"])
    assert {"gen_bpb", "gen_bpb_std", "distinct2", "loops"} <= set(rows["student"])  # over the three seeds
    assert "accuracy" in rows["constant"] and "accuracy" in rows["teacher"]
    assert {"gen_bpb", "distinct1", "loops"} <= set(rows["teacher"]) and rows["constant"]["loops"] == 0
    assert all(s["student_gen_bpb"] is None or s["student_gen_bpb"] > 0 for s in result["samples"])
    both = build_config(tiny_config(tmp_path, labels, data={"task": "classification"},
                                    eval={"generate": True, "also_sample": True, "seeds": [0, 1],
                                          "max_new_tokens": 4, "max_examples": 4, "baselines": False}))
    rows = evaluate(build_parts(both, splits=("train", "test")), student, teacher, "test", log=lambda *_: None)["metrics"]
    assert "gen_bpb_std" not in rows["student"] and {"gen_bpb", "gen_bpb_std", "loops"} <= set(rows["student (sampled)"])
    prompts = [[1, 2, 3], [4, 5]]
    sample = lambda seed: generate(parts.teacher, parts.tokenizer, prompts, 6, 2, do_sample=True, seed=seed)
    assert sample(5) == sample(5)
    greedy = generate(parts.teacher, parts.tokenizer, prompts, 6, 1)
    assert greedy == generate(parts.teacher, parts.tokenizer, prompts, 6, 2)  # left padding changes nothing
    assert len(greedy[0]) == len(greedy[1]) == len(prompts)  # (texts, ended)
