"""Checkpoints: the student (safetensors via save_pretrained), objective modules, optimizer, scheduler
and RNG state. Written to a temporary directory and renamed, so a checkpoint either exists whole or
not at all. The teacher is never saved."""
import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from lmdistill.io import atomic_dir

STEP_DIR = re.compile(r"^step-(\d+)$")


def checkpoints_root(run_dir):
    return Path(run_dir) / "checkpoints"


def remove_junk(root):
    """Temporary directories left by a run killed while writing a checkpoint."""
    for junk in root.glob(".step-*"):
        shutil.rmtree(junk, ignore_errors=True)


def checkpoint_dirs(run_dir):
    root = checkpoints_root(run_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir):
    dirs = checkpoint_dirs(run_dir)
    return dirs[-1] if dirs else None


def _rng_state():
    np_state = np.random.get_state()
    return {"python": random.getstate()[1], "python_pos": random.getstate()[2],
            "numpy": np_state[1].tolist(), "numpy_pos": int(np_state[2])}


def _set_rng_state(state, torch_state):
    random.setstate((3, tuple(state["python"]), state["python_pos"]))
    np.random.set_state(("MT19937", np.array(state["numpy"], dtype=np.uint32), state["numpy_pos"], 0, 0.0))
    torch.set_rng_state(torch_state)


def save_checkpoint(run_dir, step, student, extra_modules, optimizer, scheduler, tokenizer, keep, counters=None):
    target = checkpoints_root(run_dir) / f"step-{step:06d}"
    remove_junk(target.parent)
    with atomic_dir(target) as tmp:
        student.save_pretrained(tmp / "student", safe_serialization=True)
        tokenizer.save_pretrained(tmp / "student")
        for name, module in extra_modules.items():
            save_file({k: v.contiguous() for k, v in module.state_dict().items()}, tmp / f"objective-{name}.safetensors")
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state()}, tmp / "trainer.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step, "rng": _rng_state(), **(counters or {})}))
    for old in checkpoint_dirs(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def load_student_weights(model, directory):
    """Load save_pretrained safetensors (sharded or not) into `model`; only tied weights may be absent."""
    weights = {}
    for file in sorted(Path(directory).glob("*.safetensors")):
        weights.update(load_file(file))
    result = model.load_state_dict(weights, strict=False)
    tied = model.config.tie_word_embeddings
    missing = [k for k in result.missing_keys if not (tied and k.endswith("lm_head.weight"))]
    if missing or result.unexpected_keys:
        raise RuntimeError(f"checkpoint {directory} does not match the student: missing {missing[:3]}, "
                           f"unexpected {result.unexpected_keys[:3]}")


def load_checkpoint(path, student, extra_modules, optimizer, scheduler):
    """Restore everything save_checkpoint wrote; returns the step to continue from and the saved counters."""
    path = Path(path)
    load_student_weights(student, path / "student")
    for name, module in extra_modules.items():
        module.load_state_dict(load_file(path / f"objective-{name}.safetensors"))
    state = torch.load(path / "trainer.pt", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    meta = json.loads((path / "state.json").read_text())
    _set_rng_state(meta["rng"], state["torch_rng"])
    return meta["step"], {k: v for k, v in meta.items() if k not in ("step", "rng")}
