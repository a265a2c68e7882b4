"""The cells of a compare grid: one resolved lmdistill config per (task, method, seed)."""
from dataclasses import dataclass
from pathlib import Path

from lmdistill.compare.schema import deep_merge
from lmdistill.config import TeacherCacheConfig, apply_overrides, build_config
from lmdistill.errors import UserError
from lmdistill.features.registry import get_selector


@dataclass
class Cell:
    task: str
    method: str
    seed: int
    config: object  # lmdistill Config

    @property
    def run_dir(self):
        return Path(self.config.run_dir)


def method_parts(method):
    """(objectives, config overrides) of a method entry: a preset name, an objectives list, or a mapping with
    `objectives` and `train: {weighting: ..., responses: ...}` (what besides objectives may differ: cells stay
    paired)."""
    if not isinstance(method, dict):
        return method, {}
    return method["objectives"], {key: value for key, value in method.items() if key != "objectives"}


def task_config(compare, task, method, seed):
    """The Config of one cell. Every method of a task shares data, student recipe, budget and, per seed,
    the student's initialisation and the data order (both follow `seed`): the cells are paired."""
    root = Path(compare.run_dir)
    objectives, overrides = method_parts(compare.methods[method])
    data = deep_merge(deep_merge(compare.base, compare.tasks[task]), overrides)
    data.update(seed=seed, run_dir=str(root / "cells" / task / method / f"seed{seed}"), objectives=objectives)
    try:
        data = apply_overrides(data, compare._overrides)  # compare --set: over the task's and method's values too
        config = build_config(data)
        # (a method with an objective the cache cannot serve, e.g. attention, or trained on responses other than the
        # task's references, runs the teacher online)
        if compare.teacher == "cache" and not config.train.responses.writes and cache_serves(config):
            config.teacher_cache = TeacherCacheConfig(dir=str(root / "cache" / task), **compare.cache.model_dump())
        if "baselines" not in data.get("eval", {}):  # the task's reference record holds them, computed once
            config.eval.baselines = False
    except UserError as e:
        raise UserError(f"task '{task}', method '{method}': {e}") from None
    for i, objective in enumerate(config.objectives):
        # selections depend on the teacher and calibration data, so they are computed once per method, except one
        # drawn from the seed (random), once per seed
        selector = getattr(objective, "selector", None)  # feature objectives
        if selector is not None and get_selector(selector).selects and not objective.selection_file:
            per_seed = f"-seed{seed}" if "seed" in get_selector(selector).recorded else ""
            objective.selection_file = str(root / "selections" / task / f"{method}-{i}{per_seed}.safetensors")
    return config


def cache_serves(config):
    """Whether the teacher cache can give every objective of `config` what it needs from the teacher (read from the
    models' configs: nothing is loaded)."""
    from lmdistill.build import planned_objectives, teacher_refusal
    from lmdistill.teachers.cached import CachedTeacher
    return teacher_refusal(CachedTeacher, planned_objectives(config)) is None


def cells(compare):
    """Every cell, seed-major (all methods of seed 0 first), so a partial grid is already paired."""
    return [Cell(task, method, seed, task_config(compare, task, method, seed))
            for task in compare.tasks for seed in compare.seeds for method in compare.methods]
