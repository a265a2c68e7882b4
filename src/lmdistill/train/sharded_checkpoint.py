"""Checkpoints of a sharded run (train.sharding: fsdp). Every process writes its own shards of the student, the
objective modules and the optimizer state (torch.distributed.checkpoint) into a hidden temporary directory; the
main process adds the scheduler, RNG and counters and renames it once everything is written. A run killed while
writing leaves only the temporary directory, which the next save removes; resuming reads the last whole checkpoint,
with any number of processes."""
import json
import os
import shutil

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from lmdistill.train import checkpoint

SHARDS = "sharded"  # the subdirectory of a checkpoint that holds the torch.distributed.checkpoint files


def _models(student, extra_modules):
    """One module over the student and the objectives' modules: the optimizer's parameters, by name."""
    return nn.ModuleDict({"student": student, "extra": extra_modules})


def save_sharded(run_dir, step, student, extra_modules, optimizer, scheduler, keep, counters, is_main):
    """Collective: every process calls it. Returns the checkpoint's directory."""
    root = checkpoint.checkpoints_root(run_dir)
    target, tmp = root / f"step-{step:06d}", root / f".step-{step:06d}.tmp"
    if is_main:
        checkpoint.remove_junk(root)
        tmp.mkdir(parents=True)
    dist.barrier()
    model_state, optimizer_state = get_state_dict(_models(student, extra_modules), optimizer)
    dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=str(tmp / SHARDS))
    if is_main:
        torch.save({"scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state()}, tmp / "trainer.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step, "rng": checkpoint._rng_state(), **counters}))
        os.replace(tmp, target)
        for old in checkpoint.checkpoint_dirs(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    dist.barrier()  # no process goes on before the checkpoint exists whole
    return target


def is_sharded_checkpoint(path):
    return (path / SHARDS).is_dir()


def load_sharded(path, student, extra_modules, optimizer, scheduler):
    """Restore what save_sharded wrote; returns the step to continue from and the saved counters."""
    models = _models(student, extra_modules)
    model_state, optimizer_state = get_state_dict(models, optimizer)
    state = {"model": model_state, "optimizer": optimizer_state}
    dcp.load(state, checkpoint_id=str(path / SHARDS))
    set_state_dict(models, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    trainer = torch.load(path / "trainer.pt", weights_only=True)
    scheduler.load_state_dict(trainer["scheduler"])
    meta = json.loads((path / "state.json").read_text())
    checkpoint._set_rng_state(meta["rng"], trainer["torch_rng"])
    return meta["step"], {k: v for k, v in meta.items() if k not in ("step", "rng")}
