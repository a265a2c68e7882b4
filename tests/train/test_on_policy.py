"""On-policy training end to end: the student writes the responses of its micro-batches during training, the teacher
scores them, and a resumed run writes and trains on exactly what an uninterrupted one does."""
import json

import pytest
import torch
from safetensors.torch import load_file

from lmdistill.config import build_config
from lmdistill.errors import UserError
from lmdistill.run import train
from conftest import tiny_config

pytestmark = pytest.mark.e2e

ON_POLICY = {"source": "student", "max_new_tokens": 8}


def test_student_written_batches_keep_the_prompts_and_carry_the_students_responses(tmp_path, word_data):
    from lmdistill.build import build_parts, wrap
    from lmdistill.run import make_accelerator
    from lmdistill.train.loop import Trainer
    config = build_config(tiny_config(tmp_path, word_data, train={"responses": {**ON_POLICY, "lmbda": 1.0}}))
    parts = build_parts(config)
    student, teacher = wrap(parts)
    trainer = Trainer(parts, student, teacher, make_accelerator(config), tmp_path, log=lambda *_: None)
    batch = trainer._micro_batches(0)[0]
    examples = [parts.splits["train"].examples[i] for i in batch["index"].tolist()]
    for row, labels, mask, example in zip(batch["input_ids"], batch["labels"], batch["attention_mask"], examples):
        n = int(mask.sum())
        assert row[:example.n_prompt].tolist() == example.input_ids[:example.n_prompt]  # the dataset's prompt
        response = row[example.n_prompt:n].tolist()
        assert labels[example.n_prompt:n].tolist() == response and (labels[:example.n_prompt] == -100).all()
        assert 1 <= len(response) <= 8 and (len(response) == 8 or response[-1] == parts.tokenizer.eos_token_id)
    assert any(row[e.n_prompt:int(m.sum())].tolist() != e.input_ids[e.n_prompt:]
               for row, m, e in zip(batch["input_ids"], batch["attention_mask"], examples))  # not the references
    assert trainer.student.training


def _losses(run_dir):
    return [json.loads(line) for line in open(run_dir / "metrics.jsonl") if json.loads(line)["kind"] == "train"]


def test_adaptive_on_policy_run_logs_its_choices_and_resumes_exactly(tmp_path, word_data):
    responses = {**ON_POLICY, "adaptive": {"start": 0.5, "buffer_size": 8, "tolerance": 0.0}}
    settings = {"steps": 6, "eval_every": 2, "responses": responses}
    straight = build_config(tiny_config(tmp_path / "a", word_data, train=settings))
    train(straight, log=lambda *_: None)
    logged = _losses(tmp_path / "a")
    kinds = {k for entry in logged for k in ("written", "replayed", "dataset")
             if entry.get(f"responses_{k}_share", 0) > 0}
    assert "written" in kinds and len(kinds) >= 2  # a probability of 1/2 or more over 6 steps
    assert all(0 < entry["responses_lmbda"] <= 1 for entry in logged)
    assert any(entry["responses_generate_share"] > 0 for entry in logged)
    split = build_config(tiny_config(tmp_path / "b", word_data, train=settings))
    assert train(split, stop_at=3, log=lambda *_: None) is None
    train(split, resume=True, log=lambda *_: None)
    a, b = (load_file(tmp_path / name / "student/model.safetensors") for name in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [e["loss"] for e in logged] == [e["loss"] for e in _losses(tmp_path / "b")]
    assert [e["responses_lmbda"] for e in logged] == [e["responses_lmbda"] for e in _losses(tmp_path / "b")]


@pytest.mark.parametrize("responses, message", [
    ({"source": "student", "lmbda": 1.2}, "train.responses.lmbda: Input should be less than or equal to 1"),
    ({"source": "student", "max_new_tokens": 64}, "leaves no room for a prompt in data.max_length 64"),
    ({"source": "student", "temperature": 0.7, "do_sample": False}, "temperature=0.7 is only used when generating"),
    ({"lmbda": 0.5}, "lmbda=0.5 is only used with source: student"),
    ({"source": "student", "max_new_tokens": 60}, "no training prompt leaves room"),
])
def test_bad_responses_settings_are_one_line_errors_before_anything_is_written(tmp_path, word_data, responses,
                                                                               message):
    with pytest.raises(UserError, match=message.replace(".", r"\.").replace("(", r"\(")) as error:
        train(build_config(tiny_config(tmp_path / "run", word_data, train={"responses": responses})),
              log=lambda *_: None)
    assert "\n" not in str(error.value) and not (tmp_path / "run").exists()


def test_a_run_on_the_teachers_responses_says_where_its_responses_came_from(tmp_path, word_data, monkeypatch):
    from lmdistill.responses import teacher_written
    monkeypatch.setattr(teacher_written, "cache_root", lambda: tmp_path / "cache")
    responses = {**ON_POLICY, "lmbda": 0.5, "off_policy": "teacher", "do_sample": False}
    logs = []
    config = tiny_config(tmp_path / "run", word_data, train={"steps": 2, "responses": responses},
                         data={"max_train_examples": 16})  # the teacher writes 16 responses, not 96
    result = train(build_config(config), log=logs.append)
    assert result is not None and list((tmp_path / "cache/teacher-responses").glob("*.json"))
    facts = json.loads((tmp_path / "run/eval.json").read_text())["facts"]
    assert facts["training responses"] == ("student-written with probability 0.5, greedy, up to 8 tokens; otherwise "
                                           "the teacher's responses (greedy, up to 8 tokens)")
    assert any("examples on the teacher's responses" in line for line in logs)


@pytest.mark.numerical
@pytest.mark.parametrize("sharding", ["none", "fsdp"])
def test_two_processes_writing_their_own_share_train_like_one(tmp_path, word_data, sharding):
    """Greedy student-written responses (lmbda 1) under torchrun with 2 processes, each writing for its own half of
    the batch, give the one-process run's training to float32 rounding: the same responses, the same losses. Sharded,
    the processes generate together (each forward pass gathers parameters from both) until both have finished."""
    import subprocess

    import yaml

    from lmdistill.models import load_teacher
    from tolerance import TINY_STUDENT, adam_update_norm_tol, training_terms, typical
    from train.test_distributed import launch_command, launch_error
    responses = {**ON_POLICY, "lmbda": 1.0, "do_sample": False}
    single = tiny_config(tmp_path / "one", word_data, train={"steps": 3, "batch_size": 4, "grad_accum": 2,
                                                               "responses": responses})
    train(build_config(single), log=lambda *_: None)
    double = tiny_config(tmp_path / "two", word_data, train={"steps": 3, "batch_size": 2, "grad_accum": 2,
                                                               "responses": responses, "sharding": sharding})
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(double))
    done = subprocess.run([*launch_command("torchrun"), "train", str(path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, launch_error(done)
    cfg = build_config(single)
    teacher = load_teacher(cfg.teacher)[0]
    rel = typical(training_terms(teacher.config, TINY_STUDENT, cfg.data.max_length, teacher.config.vocab_size,
                                 cfg.train.steps))
    a, b = (load_file(tmp_path / run / "student/model.safetensors") for run in ("one", "two"))
    for key in a:
        tol = adam_update_norm_tol(a[key].numel(), cfg.train.lr, cfg.train.steps, rel)
        assert (a[key] - b[key]).norm().item() <= tol, key
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert [e["loss"] for e in one] == pytest.approx([e["loss"] for e in two], rel=rel, abs=0)
    assert all(e["responses_written_share"] == 1.0 for e in one + two)
