"""A cross-tokenizer run sharded over 2 CPU processes (FSDP2, gloo) trains like one unsharded process with the same
global batch: the teacher read through its own encoding of each split (train, dev, test) and ULD/GOLD applying its
LM head outside its forward."""
import json

import pytest
from safetensors.torch import load_file
from transformers import AutoConfig

from lmdistill.config import build_config
from lmdistill.run import train
from crosstok.test_cross_run import cross_config, model_dirs  # noqa: F401 (a fixture)
from tolerance import adam_update_norm_tol, training_terms, typical
from train.test_distributed import _train_two, launch_error

pytestmark = [pytest.mark.e2e, pytest.mark.numerical]


def test_fsdp_cross_tokenizer_two_processes_equal_one(tmp_path, word_data, model_dirs):  # noqa: F811
    objectives = [{"name": "ce"}, {"name": "uld", "weight": 0.5}, {"name": "gold", "weight": 0.5}]
    common = {"eval_every": 2, "eval_examples": 4}
    single = cross_config(tmp_path / "one", word_data, model_dirs, objectives,
                          train={**common, "batch_size": 4, "grad_accum": 2})
    one = train(build_config(single), log=lambda *_: None)
    double = cross_config(tmp_path / "two", word_data, model_dirs, objectives,
                          train={**common, "batch_size": 2, "grad_accum": 2, "sharding": "fsdp"})
    done = _train_two(tmp_path, double)
    assert done.returncode == 0, launch_error(done)
    assert "this one holds" in done.stdout
    teacher, student = (AutoConfig.from_pretrained(model_dirs[m]) for m in ("teacher", "student"))
    steps = single["train"]["steps"]
    # the larger vocabulary (the teacher's) bounds the log-softmax terms
    rel = typical(training_terms(teacher, student, single["data"]["max_length"], teacher.vocab_size, steps))
    a, b = (load_file(tmp_path / run / "run/student/model.safetensors") for run in ("one", "two"))
    assert a.keys() == b.keys()
    for key in a:
        tol = adam_update_norm_tol(a[key].numel(), single["train"]["lr"], steps, rel)
        assert (a[key] - b[key]).norm().item() <= tol, (key, (a[key] - b[key]).norm().item(), tol)
    logs = [[json.loads(line) for line in open(tmp_path / run / "run/metrics.jsonl")] for run in ("one", "two")]
    for kind, key in (("train", "loss"), ("train", "gold"), ("dev", "ce")):
        values = [[e[key] for e in log if e["kind"] == kind] for log in logs]
        assert values[0] and values[0] == pytest.approx(values[1], rel=rel, abs=0), (kind, key)
    two = json.loads((tmp_path / "two/run/eval.json").read_text())["metrics"]
    for row, key in (("student", "bpb"), ("teacher", "bpb"), ("student before training", "bpb")):
        assert two[row][key] == pytest.approx(one["metrics"][row][key], rel=rel, abs=0), (row, key)
