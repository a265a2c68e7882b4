"""Training survives what goes wrong: non-finite steps, Ctrl-C, and SIGKILL at any moment (checkpoint writes too)."""
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
import yaml
from safetensors.torch import load_file

from lmdistill import cli
from lmdistill.config import build_config
from lmdistill.objectives.ce import CrossEntropy
from lmdistill.run import train
from conftest import tiny_config

pytestmark = pytest.mark.e2e


def _weights(run_dir):
    return load_file(f"{run_dir}/student/model.safetensors")


def _records(run_dir, kind="train"):
    return [r for r in map(json.loads, open(f"{run_dir}/metrics.jsonl")) if r["kind"] == kind]


def _poison_ce(monkeypatch, bad_calls):
    """CE returns NaN on the listed calls (0-based), i.e. on those training steps of a 1-micro-batch run."""
    calls = {"n": 0}
    original = CrossEntropy.loss

    def loss(self, student, teacher, batch):
        value = original(self, student, teacher, batch)
        calls["n"] += 1
        return value * float("nan") if calls["n"] - 1 in bad_calls else value
    monkeypatch.setattr(CrossEntropy, "loss", loss)


def _trainer(config, run_dir):
    from lmdistill.build import build_parts, wrap
    from lmdistill.run import make_accelerator
    from lmdistill.train.loop import Trainer
    parts = build_parts(config, log=lambda *_: None)
    student, teacher = wrap(parts)
    messages = []
    trainer = Trainer(parts, student, teacher, make_accelerator(config), run_dir, log=messages.append)
    return trainer, messages


def test_a_non_finite_step_is_skipped_without_touching_weights_or_optimizer(tmp_path, word_data, monkeypatch):
    config = build_config(tiny_config(tmp_path, word_data, objectives="sft"))
    trainer, messages = _trainer(config, tmp_path)
    _poison_ce(monkeypatch, bad_calls={1})
    trainer.train_step(0)
    weights = {k: v.clone() for k, v in trainer.unwrapped.state_dict().items()}
    moments = [s["exp_avg"].clone() for s in trainer.optimizer.state.values()]
    components, _, _ = trainer.train_step(1)
    assert components["loss"] != components["loss"]  # NaN, reported as it was
    for key, value in trainer.unwrapped.state_dict().items():
        assert torch.equal(value, weights[key]), key
    for before, state in zip(moments, trainer.optimizer.state.values()):
        assert torch.equal(before, state["exp_avg"])
    assert trainer.skipped == 1 and trainer.bad_in_a_row == 1
    assert any("step 2 skipped, non-finite ce, loss" in m for m in messages)
    trainer.train_step(2)  # finite again: an update, and the run of bad steps is over
    assert any(not torch.equal(v, weights[k]) for k, v in trainer.unwrapped.state_dict().items())
    assert trainer.skipped == 1 and trainer.bad_in_a_row == 0


def test_skipped_steps_are_counted_in_the_metrics(tmp_path, word_data, monkeypatch):
    _poison_ce(monkeypatch, bad_calls={2, 3})
    train(build_config(tiny_config(tmp_path, word_data, objectives="sft")), log=lambda *_: None)
    assert _records(tmp_path)[-1]["skipped_steps"] == 2


def test_too_many_bad_steps_in_a_row_stop_with_a_clear_error(tmp_path, word_data, monkeypatch, capsys):
    _poison_ce(monkeypatch, bad_calls=set(range(2, 100)))
    config = tiny_config(tmp_path / "run", word_data, objectives="sft", train={"max_bad_steps": 3})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN in a background job
    writers = _tensorboard_writers()
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", str(path)])
    assert exit_.value.code == 2
    err = [l for l in capsys.readouterr().err.splitlines() if l.startswith("lmdistill:")]  # (stderr also has tqdm)
    assert len(err) == 1 and "training stopped at step 5: 3 steps in a row had a non-finite ce, loss" in err[0]
    assert "train.max_bad_steps=3" in err[0]
    assert not (tmp_path / "run/student").exists()
    assert signal.getsignal(signal.SIGINT) == before  # the Ctrl-C handler is put back on an error too
    assert _tensorboard_writers() == writers  # and the metrics logger is closed


def test_a_run_that_fails_releases_what_it_opened(tmp_path, word_data, monkeypatch):
    """The accelerator's process group (multi-process runs) and the metrics logger are released on an error,
    also when it comes before training starts (here: resuming from an unreadable checkpoint)."""
    from accelerate import Accelerator
    from lmdistill.train import loop
    ended = []
    monkeypatch.setattr(Accelerator, "end_training", lambda self: ended.append(True))
    config = build_config(tiny_config(tmp_path / "run", word_data, objectives="sft", train={"steps": 2}))
    train(config, stop_at=1, log=lambda *_: None)
    assert ended == [True]

    def unreadable(*_args):
        raise OSError("checkpoint unreadable")
    monkeypatch.setattr(loop, "load_checkpoint", unreadable)
    writers = _tensorboard_writers()
    with pytest.raises(OSError, match="checkpoint unreadable"):
        train(config, resume=True, log=lambda *_: None)
    assert ended == [True, True]
    assert _tensorboard_writers() == writers


def _tensorboard_writers():
    return sum(type(t).__name__ == "_AsyncWriterThread" for t in threading.enumerate())


def test_ctrl_c_saves_a_checkpoint_and_resume_finishes_like_an_uninterrupted_run(tmp_path, word_data, monkeypatch):
    straight = tmp_path / "straight"
    train(build_config(tiny_config(straight, word_data)), log=lambda *_: None)

    from lmdistill.train.loop import Trainer
    original = Trainer.train_step

    def interrupted_at_step_3(self, step):
        out = original(self, step)
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)  # as a terminal's Ctrl-C: the step in flight still finishes
        return out
    monkeypatch.setattr(Trainer, "train_step", interrupted_at_step_3)
    config = tiny_config(tmp_path / "run", word_data)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN in a background job
    writers = _tensorboard_writers()
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", str(path)])
    assert exit_.value.code == 130
    assert sorted(p.name for p in (tmp_path / "run/checkpoints").iterdir()) == ["step-000003"]
    assert signal.getsignal(signal.SIGINT) is before  # the handler is put back
    assert _tensorboard_writers() == writers
    monkeypatch.setattr(Trainer, "train_step", original)
    cli.main(["train", str(path), "--resume"])
    a, b = _weights(straight), _weights(tmp_path / "run")
    for key in a:
        assert torch.equal(a[key], b[key]), key


# SIGKILL: the run is a separate process; a small wrapper kills it in the middle of writing a checkpoint.
KILL_IN_CHECKPOINT = """
import os, signal, sys
if os.environ.get("KILL_IN_CHECKPOINT"):  # die inside the checkpoint write: student and optimizer written, state not
    from lmdistill.train import checkpoint
    checkpoint._rng_state = lambda: os.kill(os.getpid(), signal.SIGKILL)
from lmdistill.cli import main
main(sys.argv[1:])
"""


def _run(args, env_extra=None, kill_after=None):
    env = {**os.environ, **(env_extra or {}), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", KILL_IN_CHECKPOINT, *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if kill_after is None:
        _, err = proc.communicate(timeout=600)
        return proc.returncode, err
    try:
        _, err = proc.communicate(timeout=kill_after)
        return proc.returncode, err
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        return proc.returncode, err


def test_sigkill_at_random_moments_and_during_a_checkpoint_write_then_resume_equals_straight(tmp_path, word_data):
    straight = tmp_path / "straight"
    config = tiny_config(straight, word_data, train={"steps": 8, "save_every": 1, "keep_checkpoints": 2})
    path = tmp_path / "straight.yaml"
    path.write_text(yaml.safe_dump(config))
    started = time.time()
    assert _run(["train", str(path)])[0] == 0
    duration = time.time() - started  # of a whole run: start-up, 8 steps with a checkpoint each, evaluation
    config["run_dir"] = str(tmp_path / "run")
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))

    # 1. killed while writing its first checkpoint (after the student's files, before the optimizer state)
    code, err = _run(["train", str(path)], {"KILL_IN_CHECKPOINT": "1"})
    assert code == -signal.SIGKILL, err[-2000:]
    checkpoints = tmp_path / "run/checkpoints"
    assert not any(p.name.startswith("step-") for p in checkpoints.iterdir())  # only the hidden temp dir
    # 2. killed at random moments (seeded), resumed each time
    rng, kills = random.Random(0), 0
    for _ in range(3):
        code, err = _run(["train", str(path), "--resume"], kill_after=rng.uniform(0.3, 0.9) * duration)
        assert code in (-signal.SIGKILL, 0), err[-2000:]
        if code == 0:
            break
        kills += 1
    assert kills >= 1
    # 3. finished
    if not (tmp_path / "run/student").exists():
        code, err = _run(["train", str(path), "--resume"])
        assert code == 0, err[-2000:]
    assert not [p for p in checkpoints.iterdir() if p.name.startswith(".")]  # temp dirs cleaned up
    a, b = _weights(straight), _weights(tmp_path / "run")
    for key in a:
        assert torch.equal(a[key], b[key]), key
