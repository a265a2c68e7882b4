"""The one config schema: YAML file + `--set a.b=c` overrides -> validated `Config`.

Unknown keys are rejected before pydantic sees them, so the error can name the nearest valid key.
"""
from typing import Any, Literal

import yaml
from pydantic import Field, SerializeAsAny, ValidationError, field_validator, model_validator

from lmdistill.config_keys import check_keys, one_line, read_yaml, set_path
from lmdistill.config_models import (  # noqa: F401 (part of the schema: imported from here)
    CacheSettings, DType, FromTeacher, Strict, StudentConfig, StudentSpec, TeacherCacheConfig, TeacherConfig)
from lmdistill.config_responses import AdaptiveConfig, ResponsesConfig  # noqa: F401
from lmdistill.errors import UserError
from lmdistill.io import atomic_write_text
from lmdistill.objectives import ObjectiveParams, labels_of, objective_params_class
from lmdistill.objectives.presets import expand_preset
from lmdistill.unused import refuse_unused


DEFAULT_DATA = "define-word"


class DataConfig(Strict):
    builtin: str | None = Field(None, description=f"built-in dataset name; {DEFAULT_DATA} when no data.train is given")
    train: str | None = Field(None, description="JSONL file of {prompt, response} records (instead of data.builtin)")
    dev: str | None = None
    test: str | None = None
    task: Literal["auto", "generation", "classification"] = "auto"
    use_chat_template: bool = True
    system_prompt: str | None = Field("You are a helpful assistant.", description="null keeps the chat template's own default")
    max_length: int = Field(256, ge=8)
    max_train_examples: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _one_source(self):
        files = {k: getattr(self, k) for k in ("train", "dev", "test") if getattr(self, k) is not None}
        if self.builtin is not None and files:
            named = ", ".join(f"data.{k}={v}" for k, v in files.items())
            raise ValueError(f"both data.builtin={self.builtin} and {named} are given; set data.builtin: null to use "
                             f"your files, or remove the files to use the built-in set")
        if self.builtin is None and self.train is None:
            if files:
                raise ValueError(f"data.{next(iter(files))} is given without data.train; add data.train (a JSONL file "
                                 f"of {{prompt, response}} records)")
            if "builtin" in self.model_fields_set:  # an explicit null: no data source at all
                raise ValueError("data.builtin is null and data.train is not set; give a built-in dataset name or "
                                 "data.train (a JSONL file)")
            self.builtin = DEFAULT_DATA
        refuse_unused(self, [("system_prompt", self.use_chat_template or self.system_prompt is None,
                              "with use_chat_template: true")])
        return self


class WeightingConfig(Strict):
    """How objective weights adapt during training (train/weighting.py); schedules are per objective."""
    method: Literal["fixed", "loss_ratio", "gradnorm"] = Field("fixed", description="fixed: the configured weights; "
                                                               "loss_ratio: equalise weighted loss magnitudes; gradnorm: "
                                                               "equalise weighted gradient norms at the student")
    every: int = Field(10, gt=0, description="gradnorm: measure every N steps (one extra forward and one backward per "
                       "objective on one micro-batch)")
    rate: float = Field(0.5, gt=0, le=1, description="fraction of the way (in log space) the factors move toward "
                        "their target per update")
    alpha: float = Field(0.0, ge=0, description="gradnorm: GradNorm's asymmetry; 0 equalises gradient norms, > 0 gives "
                         "more weight to components whose loss has fallen less since the start")
    ema: float = Field(0.9, ge=0, lt=1, description="loss_ratio: decay of each component's loss average")

    @model_validator(mode="after")
    def _used(self):
        refuse_unused(self, [("every", self.method == "gradnorm", "with method: gradnorm"),
                             ("alpha", self.method == "gradnorm", "with method: gradnorm"),
                             ("ema", self.method == "loss_ratio", "with method: loss_ratio"),
                             ("rate", self.method != "fixed", "with method: loss_ratio or gradnorm")])
        return self


class TrainConfig(Strict):
    steps: int = Field(300, gt=0)
    batch_size: int = Field(8, gt=0, description="examples per micro-batch per process")
    grad_accum: int = Field(1, gt=0)
    lr: float = Field(5e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = Field(20, ge=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    max_grad_norm: float | None = Field(1.0, gt=0)
    max_bad_steps: int = Field(5, gt=0, description="a step whose loss or gradient is NaN/inf is skipped (no update) "
                               "with a warning; this many in a row stop training with an error")
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = Field("auto", description="auto: bf16 on a GPU that has it, else no")
    log_every: int = Field(10, gt=0)
    eval_every: int = Field(100, ge=0, description="0 turns periodic dev evaluation off")
    eval_examples: int = Field(200, gt=0, description="dev examples used by periodic evaluation")
    save_every: int = Field(0, ge=0, description="0 saves only the final checkpoint")
    keep_checkpoints: int = Field(2, gt=0)
    weighting: WeightingConfig = WeightingConfig()
    responses: ResponsesConfig = ResponsesConfig()
    sharding: Literal["none", "fsdp"] = Field("none", description="none: every process holds whole models (data "
                                              "parallel); fsdp: the student and the online teacher are sharded across "
                                              "the launched processes (torch FSDP2), each holding 1/N of their "
                                              "parameters, gradients and optimizer state")


class EvalConfig(Strict):
    split: Literal["dev", "test"] = "test"
    max_examples: int | None = Field(200, gt=0)
    batch_size: int = Field(16, gt=0)
    generate: bool = True
    max_new_tokens: int = Field(48, gt=0)
    do_sample: bool = False
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1, description="one generation pass per seed when sampling")
    also_sample: bool = Field(False, description="with greedy decoding, also sample the student's answers (temperature, "
                              "top_p, seeds) and report their scores as the row 'student (sampled)'")
    teacher: bool = Field(True, description="also evaluate the teacher, for reference")
    baselines: bool = Field(True, description="generate with the teacher and score the trivial baselines beside the "
                            "student (compare computes these once per task and turns this off in its cells)")

    @model_validator(mode="after")
    def _used(self):
        sampling = self.do_sample or self.also_sample or not self.generate  # generate: false switches all off
        refuse_unused(self, [("temperature", sampling, "with do_sample: true or also_sample: true"),
                             ("top_p", sampling, "with do_sample: true or also_sample: true"),
                             ("seeds", sampling, "with do_sample: true or also_sample: true (greedy decoding draws "
                              "no random numbers)"),
                             ("also_sample", not self.do_sample, "with do_sample: false (sampling is already the "
                              "decoding)")])
        return self


def _default_objectives():
    return [{"name": "ce", "weight": 0.5}, {"name": "logit_kd", "weight": 0.5}]


class Config(Strict):
    seed: int = 0
    run_dir: str = "runs/default"
    teacher: TeacherConfig = TeacherConfig()
    teacher_cache: TeacherCacheConfig | None = Field(None, description="null: the teacher runs online every step")
    student: StudentConfig = Field(default_factory=lambda: StudentConfig(spec=StudentSpec()))
    data: DataConfig = DataConfig()
    objectives: list[SerializeAsAny[ObjectiveParams]] = Field(default_factory=_default_objectives, min_length=1,
                                                            validate_default=True)
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()

    @field_validator("objectives", mode="before")
    @classmethod
    def _build_objectives(cls, value):
        if isinstance(value, str):
            value = expand_preset(value)
        if not isinstance(value, list):
            raise ValueError("objectives must be a preset name or a list of {name, weight, ...} entries")
        built = []
        for i, entry in enumerate(value):
            if isinstance(entry, ObjectiveParams):
                built.append(entry)
                continue
            if not isinstance(entry, dict) or "name" not in entry:
                raise ValueError(f"objectives[{i}] needs a 'name'")
            if not isinstance(entry["name"], str):
                raise ValueError(f"objectives[{i}].name must be an objective's name, got {entry['name']!r}")
            params_cls = objective_params_class(entry["name"])
            check_keys(params_cls, entry, f"objectives[{i}].")
            try:
                built.append(params_cls(**entry))
            except ValidationError as e:
                raise UserError(one_line(e, f"objectives[{i}]")) from None
        return built

    @model_validator(mode="after")
    def _selector_seeds(self):
        """A selector's `seed` left unset is the run's: the random control draws another subset, and a projection
        another initialisation, in each seed of a grid."""
        from lmdistill.features.registry import get_selector
        for objective in self.objectives:
            if getattr(objective, "seed", 0) is None and "seed" in get_selector(objective.selector).options:
                objective.seed = self.seed
        return self

    @model_validator(mode="after")
    def _some_objective_on(self):
        """At every step some objective's schedule must be on, or there would be nothing to train."""
        labels = labels_of(self.objectives)
        for step in range(self.train.steps):
            if not any(o.schedule.factor(step, self.train.steps) > 0 for o in self.objectives):
                raise ValueError(f"at step {step + 1} every objective ({', '.join(labels)}) is switched off by its "
                                 f"schedule; let one objective's schedule start at step 0 (schedule.start_step) and "
                                 f"not decay to 0")
        return self

    @model_validator(mode="after")
    def _responses_fit(self):
        responses, data = self.train.responses, self.data
        if responses.writes and responses.max_new_tokens >= data.max_length:
            raise ValueError(f"train.responses.max_new_tokens {responses.max_new_tokens} leaves no room for a prompt in "
                             f"data.max_length {data.max_length}; lower it or raise data.max_length")
        if responses.source == "student" and self.teacher_cache is not None:
            raise ValueError("train.responses.source: student needs the online teacher to score the text the student "
                             "writes, which a teacher cache cannot; remove teacher_cache")
        if responses.adaptive is not None and not self.train.eval_every:
            raise ValueError("train.responses.adaptive follows the dev CE, but train.eval_every is 0; set "
                             "train.eval_every (e.g. 50)")
        return self

    @model_validator(mode="after")
    def _eval_split_given(self):
        if self.data.builtin is None and getattr(self.data, self.eval.split) is None:
            raise ValueError(f"eval.split is {self.eval.split} but data.{self.eval.split} is not set; give "
                             f"data.{self.eval.split} (a JSONL file) or set eval.split to a split you have")
        return self


def apply_overrides(data, overrides):
    """Apply `section.key=value` strings; values are parsed as YAML (so 3, 1e-4, true, [1,2] work)."""
    for item in overrides:
        if "=" not in item:
            raise UserError(f"--set expects section.key=value, got '{item}'")
        dotted, raw = item.split("=", 1)
        if dotted.split(".")[0] == "objectives" and "objectives" not in data:
            data["objectives"] = _default_objectives()
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        set_path(data, dotted.strip(), value)
    return data


def build_config(data: dict[str, Any]) -> Config:
    check_keys(Config, data)
    try:
        return Config(**data)
    except ValidationError as e:
        raise UserError(one_line(e)) from None


def load_config(path=None, overrides=()) -> Config:
    data = read_yaml(path) if path is not None else {}
    return build_config(apply_overrides(data, overrides))


def save_config(config: Config, path):
    atomic_write_text(path, yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
