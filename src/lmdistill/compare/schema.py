"""The compare file: a base lmdistill config, tasks (overrides of it), methods (objective lists), seeds."""
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, ValidationError, model_validator

from lmdistill.config import CacheSettings, Strict
from lmdistill.config_keys import check_keys, one_line, read_yaml
from lmdistill.errors import UserError, did_you_mean

# Keys a compare file sets per cell, so the base config must not.
PER_CELL = ("seed", "run_dir", "objectives", "teacher_cache")
# What a method may set under train besides its objectives: the cells of a task stay paired.
METHOD_TRAIN_KEYS = {"weighting", "responses"}


class Quick(Strict):
    """What --quick changes: a subset of methods/tasks/seeds and overrides of the base (e.g. fewer steps)."""
    methods: list[str] | None = None
    tasks: list[str] | None = None
    seeds: list[int] | None = None
    overrides: dict[str, Any] = Field(default_factory=dict)


class CompareConfig(Strict):
    run_dir: str = "runs/compare"
    base: dict[str, Any] = Field(default_factory=dict, description="an lmdistill config shared by every cell "
                                 "(all but seed, run_dir, objectives, teacher_cache)")
    base_file: str | None = Field(None, description="a YAML config to start from (relative to this file); base "
                                  "is merged over it")
    tasks: dict[str, dict[str, Any]] = Field(default_factory=lambda: {"task": {}},
                                             description="task name -> overrides of the base, e.g. {data: {builtin: spam}}")
    methods: dict[str, str | list[dict[str, Any]] | dict[str, Any]] = Field(
        ..., min_length=1, description="name -> preset name, objectives list, or {objectives: ..., train: {weighting: "
                                       "..., responses: ...}} (the objective weighting and where training responses "
                                       "come from are the settings besides the objectives that may differ between "
                                       "methods)")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    baseline: str | None = Field(None, description="method the paired differences are taken against; default the first")
    comparisons: list[tuple[str, str]] = Field(default_factory=list, description="extra [method, reference] pairs "
                                               "whose paired differences the report gives")
    not_applicable: dict[str, str] = Field(default_factory=dict, description="method name -> why this grid cannot "
                                           "run it (e.g. an objective that needs a shared vocabulary); the report "
                                           "lists them")
    teacher: Literal["cache", "online"] = Field("cache", description="online: every cell runs the teacher itself "
                                                "(exact; slower)")
    cache: CacheSettings = CacheSettings()
    quick: Quick | None = None
    _overrides: list[str] = PrivateAttr(default_factory=list)  # --set: applied to every cell's config, last

    @model_validator(mode="after")
    def _names(self):
        if self.baseline is not None and self.baseline not in self.methods:
            raise ValueError(f"baseline '{self.baseline}' is not a method{did_you_mean(self.baseline, self.methods)}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds must be distinct")
        if self.quick:
            for kind, names, known in (("method", self.quick.methods, self.methods), ("task", self.quick.tasks, self.tasks)):
                for name in names or ():
                    if name not in known:
                        raise ValueError(f"quick: unknown {kind} '{name}'{did_you_mean(name, known)}")
        for name in self.not_applicable:
            if name in self.methods:
                raise ValueError(f"not_applicable: '{name}' is also a method of this grid; remove one")
        for pair in self.comparisons:
            for name in pair:
                if name not in self.methods:
                    raise ValueError(f"comparisons: '{name}' is not a method{did_you_mean(name, self.methods)}")
        for key in PER_CELL:
            if key in self.base:
                raise ValueError(f"base.{key} is set per cell by compare; remove it")
        for name, method in self.methods.items():
            if isinstance(method, dict):
                extra = set(method) - {"objectives", "train"} or set(method.get("train") or {}) - METHOD_TRAIN_KEYS
                if "objectives" not in method or extra:
                    raise ValueError(f"method '{name}': a mapping holds objectives and optionally train.weighting and "
                                     f"train.responses (cells must stay paired: same prompts, budget and student), got "
                                     f"{sorted(method)}"
                                     + (f" with {sorted(extra)}" if extra else ""))
            if "/" in name or name.startswith("."):
                raise ValueError(f"method name '{name}' is used as a directory name; use letters, digits, -, +, _")
        return self

    @property
    def baseline_method(self):
        return self.baseline or next(iter(self.methods))


def deep_merge(base, over):
    """`over` merged into a copy of `base`, section by section (lists and scalars are replaced)."""
    out = dict(base)
    for key, value in over.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_compare(path, quick=False, overrides=(), run_dir=None):
    """The validated compare config, with --quick applied (its own run_dir: RUN_DIR-quick), `overrides`
    (section.key=value, as train's --set) to apply to every cell's config after its task and method, and `run_dir`
    replacing the grid's."""
    data = read_yaml(path)
    check_keys(CompareConfig, data)
    try:
        config = CompareConfig(**data)
    except ValidationError as e:
        raise UserError(one_line(e).replace("config: ", f"{path}: ", 1)) from None
    if config.base_file:
        base_path = Path(path).parent / config.base_file
        config.base = deep_merge(read_yaml(base_path), config.base)
        for key in PER_CELL:
            config.base.pop(key, None)
    if quick:
        if config.quick is None:
            raise UserError(f"{path} has no quick: section; add one (methods, tasks, seeds, overrides) or drop --quick")
        q = config.quick
        config.methods = {m: config.methods[m] for m in q.methods or config.methods}
        config.comparisons = [pair for pair in config.comparisons if set(pair) <= set(config.methods)]
        config.tasks = {t: config.tasks[t] for t in q.tasks or config.tasks}
        config.seeds = q.seeds or config.seeds
        config.base = deep_merge(config.base, q.overrides)
        config.run_dir = config.run_dir.rstrip("/") + "-quick"
        if config.baseline_method not in config.methods:
            raise UserError(f"quick: the baseline '{config.baseline_method}' must be among quick.methods")
    for item in overrides:
        key = item.split("=", 1)[0].split(".")[0].strip()
        if key in PER_CELL:
            raise UserError(f"--set {key}=...: {key} is set per cell by compare; set it in the compare file")
    config._overrides = list(overrides)
    if run_dir is not None:
        config.run_dir = str(run_dir)
    return config
