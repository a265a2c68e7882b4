"""The cells of a compare grid: one resolved lmdistill config per (task, method, seed)."""
from dataclasses import dataclass
from pathlib import Path

from lmdistill.compare.schema import deep_merge
from lmdistill.config import build_config
from lmdistill.errors import UserError


@dataclass
class Cell:
    task: str
    method: str
    seed: int
    config: object  # lmdistill Config

    @property
    def run_dir(self):
        return Path(self.config.run_dir)


def task_config(compare, task, method, seed):
    """The Config of one cell. Every method of a task shares data, student recipe, budget and, per seed,
    the student's initialisation and the data order (both follow `seed`): the cells are paired."""
    root = Path(compare.run_dir)
    data = deep_merge(compare.base, compare.tasks[task])
    data.update(seed=seed, run_dir=str(root / "cells" / task / method / f"seed{seed}"),
                objectives=compare.methods[method])
    if compare.teacher == "cache":
        data["teacher_cache"] = {"dir": str(root / "cache" / task), **compare.cache.model_dump()}
    try:
        config = build_config(data)
    except UserError as e:
        raise UserError(f"task '{task}', method '{method}': {e}") from None
    for i, objective in enumerate(config.objectives):
        # selections depend on the teacher and calibration data, not on the seed: computed once per method
        if getattr(objective, "selector", None) not in (None, "projection", "none") and not objective.selection_file:
            objective.selection_file = str(root / "selections" / task / f"{method}-{i}.safetensors")
    return config


def cells(compare):
    """Every cell, seed-major (all methods of seed 0 first), so a partial grid is already paired."""
    return [Cell(task, method, seed, task_config(compare, task, method, seed))
            for task in compare.tasks for seed in compare.seeds for method in compare.methods]
