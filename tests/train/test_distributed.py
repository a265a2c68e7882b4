"""Two CPU processes (torchrun, gloo) train like one process with the same global batch, to float32 rounding."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from lmdistill.config import build_config
from lmdistill.errors import UserError
from lmdistill.models import load_teacher
from lmdistill.run import train
from conftest import tiny_config
from tolerance import TINY_STUDENT, adam_update_norm_tol, training_terms, typical

pytestmark = pytest.mark.e2e


def launch_command(launcher):
    """`accelerate launch` (what the README shows) or torchrun, starting 2 CPU processes."""
    bin_dir = Path(sys.executable).parent
    if launcher == "accelerate":
        # --multi_gpu picks the multi-process launcher; on a machine without GPUs the processes use gloo on CPU
        return [str(bin_dir / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "lmdistill"]
    return [shutil.which("torchrun", path=str(bin_dir)), "--nproc_per_node", "2", "-m", "lmdistill"]


def launch_error(done):
    """A launched run's stderr without the launcher's own report, which would push the failing process's error out of
    an assertion message."""
    ours = done.stderr.split("torch.distributed.elastic.multiprocessing.errors.ChildFailedError")[0]
    return "\n".join(line for line in ours.splitlines() if "distributed/elastic" not in line)[-4000:]


# distillens: the lens's LM-head gradients come out of a custom autograd function; DDP must still average them
# projection: the projector belongs to the objective and is called outside the student's DDP wrapper. Its feature
# metric standardises over each micro-batch, so there the single process runs the same micro-batches of 2 (x 4).
@pytest.mark.numerical
@pytest.mark.parametrize("objectives, launcher, single_batch", [("kd", "accelerate", (4, 2)),
                                                                ("distillens", "torchrun", (4, 2)),
                                                                ("projection", "torchrun", (2, 4))])
def test_two_processes_equal_one(tmp_path, word_data, objectives, launcher, single_batch):
    batch_size, grad_accum = single_batch
    single = tiny_config(tmp_path / "one", word_data, train={"steps": 4, "batch_size": batch_size,
                                                               "grad_accum": grad_accum}, objectives=objectives)
    train(build_config(single), log=lambda *_: None)
    double = tiny_config(tmp_path / "two", word_data, train={"steps": 4, "batch_size": 2, "grad_accum": 2},
                         objectives=objectives)
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(double))
    done = subprocess.run([*launch_command(launcher), "train", str(path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, launch_error(done)
    # The two runs sum the same terms in other orders (batch shapes of 2 vs 4, a gloo all-reduce): gradients and
    # losses agree to float32 rounding of the teacher's and student's passes (tolerance.py: training_terms), and
    # AdamW turns that into weights equal to within adam_update_norm_tol per tensor. A real fault (gradients not
    # averaged over processes, a wrong token count) moves weights by a sizeable fraction of their update.
    cfg = build_config(single)
    teacher = load_teacher(cfg.teacher)[0]
    rel = typical(training_terms(teacher.config, TINY_STUDENT, cfg.data.max_length, teacher.config.vocab_size,
                                 cfg.train.steps))
    saved = ["student/model.safetensors"] + [p.relative_to(tmp_path / "one") for p in  # and the projector
                                             (tmp_path / "one/checkpoints/step-000004").glob("objective-*.safetensors")]
    for name in saved:
        a, b = load_file(tmp_path / "one" / name), load_file(tmp_path / "two" / name)
        assert a.keys() == b.keys()
        for key in a:
            tol = adam_update_norm_tol(a[key].numel(), cfg.train.lr, cfg.train.steps, rel)
            assert (a[key] - b[key]).norm().item() <= tol, (key, (a[key] - b[key]).norm().item(), tol)
    losses = [[json.loads(l)["loss"] for l in open(tmp_path / run / "metrics.jsonl") if '"train"' in l]
              for run in ("one", "two")]
    assert len(losses[0]) == 4 and losses[0] == pytest.approx(losses[1], rel=rel, abs=0)


def assert_same_students(one, two, cfg, rel):
    """The two runs' saved students are equal to within AdamW's bound per tensor (see above)."""
    a, b = load_file(one / "student/model.safetensors"), load_file(two / "student/model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        tol = adam_update_norm_tol(a[key].numel(), cfg.train.lr, cfg.train.steps, rel)
        assert (a[key] - b[key]).norm().item() <= tol, (key, (a[key] - b[key]).norm().item(), tol)


def _train_two(tmp_path, config, launcher="torchrun"):
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run([*launch_command(launcher), "train", str(path)], capture_output=True, text=True, timeout=900)


# train.sharding: fsdp shards the student and the teacher across the 2 processes (FSDP2 on gloo); the run must train
# like one unsharded process with the same global batch. The final evaluation (with generation) runs on the sharded
# models, and the saved student is a plain save_pretrained directory.
ATTENTION_DKD = [{"name": "ce", "weight": 1.0}, {"name": "attention", "weight": 1.0}, {"name": "dkd", "weight": 1.0}]


@pytest.mark.numerical
@pytest.mark.parametrize("objectives", ["kd", "projection", "flexkd", "distillens", ATTENTION_DKD],
                         ids=["kd", "projection", "flexkd", "distillens", "attention+dkd"])
def test_fsdp_two_processes_equal_one(tmp_path, word_data, objectives):
    single_batch = (2, 4) if objectives in ("projection", "flexkd") else (4, 2)  # (see the parametrization above)
    common = {"train": {"steps": 4, "eval_every": 2, "eval_examples": 4}, "eval": {"generate": True,
              "max_new_tokens": 4}, "objectives": objectives}
    single = tiny_config(tmp_path / "one", word_data, **{**common, "train": {**common["train"], "batch_size":
                         single_batch[0], "grad_accum": single_batch[1]}})
    one = train(build_config(single), log=lambda *_: None)
    double = tiny_config(tmp_path / "two", word_data, **{**common, "train": {**common["train"], "batch_size": 2,
                         "grad_accum": 2, "sharding": "fsdp"}})
    done = _train_two(tmp_path, double)
    assert done.returncode == 0, launch_error(done)
    held = re.search(r"this one holds ([\d.]+)M of the student's ([\d.]+)M parameters and ([\d.]+)M of the "
                     r"teacher's ([\d.]+)M", done.stdout)
    assert held, done.stdout[-2000:]
    student_held, student_all, teacher_held, teacher_all = map(float, held.groups())
    assert student_held <= 0.51 * student_all and teacher_held <= 0.51 * teacher_all  # each holds about half
    cfg = build_config(single)
    teacher = load_teacher(cfg.teacher)[0]
    rel = typical(training_terms(teacher.config, TINY_STUDENT, cfg.data.max_length, teacher.config.vocab_size,
                                 cfg.train.steps))
    assert_same_students(tmp_path / "one", tmp_path / "two", cfg, rel)
    logs = [[json.loads(l) for l in open(tmp_path / run / "metrics.jsonl")] for run in ("one", "two")]
    for kind in ("train", "dev"):
        values = [[e["loss" if kind == "train" else "ce"] for e in log if e["kind"] == kind] for log in logs]
        assert values[0] and values[0] == pytest.approx(values[1], rel=rel, abs=0)
    two = json.loads((tmp_path / "two/eval.json").read_text())["metrics"]["student"]
    assert two["ce"] == pytest.approx(one["metrics"]["student"]["ce"], rel=rel, abs=0)
    assert "rougeL" in two


def test_fsdp_refuses_one_process(tmp_path, word_data):
    config = build_config(tiny_config(tmp_path / "run", word_data, train={"sharding": "fsdp"}))
    with pytest.raises(UserError, match="fsdp shards the models across processes, but this run has 1"):
        train(config, log=lambda *_: None)
    assert not (tmp_path / "run").exists()


# Rank 1 dies as it starts writing its shards of the step-3 checkpoint (the main process may have written its own).
KILL_RANK_1_IN_CHECKPOINT = """
import os, signal, sys
if os.environ.get("RANK") == "1":
    from lmdistill.train import sharded_checkpoint
    real = sharded_checkpoint.dcp.save
    def die_in_step_3(state, checkpoint_id):
        if "step-000003" in checkpoint_id:
            os.kill(os.getpid(), signal.SIGKILL)
        real(state, checkpoint_id=checkpoint_id)
    sharded_checkpoint.dcp.save = die_in_step_3
from lmdistill.cli import main
main(sys.argv[1:])
"""


def test_fsdp_checkpoint_killed_mid_write_then_resumed_equals_uninterrupted(tmp_path, word_data):
    def config(name):
        return tiny_config(tmp_path / name, word_data, train={"steps": 5, "batch_size": 2, "save_every": 1,
                                                              "keep_checkpoints": 2, "sharding": "fsdp"})
    straight = _train_two(tmp_path, config("straight"))
    assert straight.returncode == 0, launch_error(straight)
    assert sorted(p.name for p in (tmp_path / "straight/checkpoints").iterdir()) == ["step-000004", "step-000005"]
    assert (tmp_path / "straight/checkpoints/step-000005/sharded/.metadata").is_file()

    script = tmp_path / "kill.py"
    script.write_text(KILL_RANK_1_IN_CHECKPOINT)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config("run")))
    torchrun = launch_command("torchrun")[:3]
    killed = subprocess.run([*torchrun, str(script), "train", str(path)], capture_output=True, text=True, timeout=900)
    assert killed.returncode != 0
    whole = sorted(p.name for p in (tmp_path / "run/checkpoints").iterdir() if p.name.startswith("step-"))
    assert whole == ["step-000001", "step-000002"]  # the step-3 write never became a checkpoint
    resumed = subprocess.run([*torchrun, "-m", "lmdistill", "train", str(path), "--resume"], capture_output=True,
                             text=True, timeout=900)
    assert resumed.returncode == 0, launch_error(resumed)
    assert "resumed from" in resumed.stdout and "step-000002" in resumed.stdout
    assert not any(p.name.startswith(".") for p in (tmp_path / "run/checkpoints").iterdir())
    a, b = (load_file(tmp_path / run / "student/model.safetensors") for run in ("straight", "run"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# gradnorm measures on the step's first global micro-batch (every process's first micro-batch together): the
# weights it sets under 2 processes equal one process's with the same global micro-batch, data parallel or sharded.
@pytest.mark.numerical
@pytest.mark.parametrize("sharding", ["none", "fsdp"])
def test_gradnorm_weights_of_two_processes_equal_one(tmp_path, word_data, sharding):
    weighting = {"method": "gradnorm", "every": 1, "rate": 1.0}
    single = tiny_config(tmp_path / "one", word_data, objectives="kd",
                         train={"steps": 3, "batch_size": 4, "weighting": weighting})
    train(build_config(single), log=lambda *_: None)
    double = tiny_config(tmp_path / "two", word_data, objectives="kd",
                         train={"steps": 3, "batch_size": 2, "weighting": weighting, "sharding": sharding})
    done = _train_two(tmp_path, double)
    assert done.returncode == 0, launch_error(done)
    cfg = build_config(single)
    teacher = load_teacher(cfg.teacher)[0]
    rel = typical(training_terms(teacher.config, TINY_STUDENT, cfg.data.max_length, teacher.config.vocab_size,
                                 cfg.train.steps))
    logs = [[json.loads(l) for l in open(tmp_path / run / "metrics.jsonl") if '"train"' in l] for run in ("one", "two")]
    weights = [[(e["weight_ce"], e["weight_logit_kd"]) for e in log] for log in logs]
    assert len(weights[0]) == 3 and weights[0][0] != (0.5, 0.5)  # measured, not the configured weights
    for a, b in zip(*weights):
        assert a == pytest.approx(b, rel=rel, abs=0)
    # The measurement leaves no gradient behind. The weights it sets differ by up to rel (above) and scale the
    # objectives' gradients, which differ by rel themselves: the training gradients differ by up to 2 rel.
    assert_same_students(tmp_path / "one", tmp_path / "two", cfg, 2 * rel)
