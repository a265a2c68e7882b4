from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from lmdistill.errors import UserError, did_you_mean
from lmdistill.layermap import check_spec, layer_pairs
from lmdistill.objectives.needs import Needs
from lmdistill.teachers.outputs import Request
from lmdistill.train.schedule import WeightSchedule

OBJECTIVES: dict[str, type["Objective"]] = {}


class ObjectiveParams(BaseModel):
    """Every objective's config entry: its name, its weight, and its own parameters."""
    model_config = ConfigDict(extra="forbid")
    name: str
    weight: float = Field(1.0, ge=0)
    schedule: WeightSchedule = Field(default_factory=WeightSchedule, description="the weight's factor over training "
                                     "(start step, warmup, decay)")


def register(cls):
    OBJECTIVES[cls.name] = cls
    return cls


def objective_params_class(name):
    if name not in OBJECTIVES:
        raise UserError(f"unknown objective '{name}'{did_you_mean(name, OBJECTIVES)}; "
                        f"choose from {', '.join(sorted(OBJECTIVES))}")
    return OBJECTIVES[name].Params


class Objective:
    name: ClassVar[str]
    Params: ClassVar[type[ObjectiveParams]] = ObjectiveParams
    # whether it works when teacher and student tokenize differently (it reads the teacher's rows through
    # ModelOutputs.alignment, or no teacher output); objectives comparing the two token by token do not
    cross_tokenizer: ClassVar[bool] = False
    step, total_steps = 0, 1  # set by the trainer before each step, for objectives with their own schedules

    def __init__(self, params, context):
        self.params = params
        self.context = context  # ObjectiveContext: models' shapes, shared vocabulary size

    @property
    def weight(self):
        return self.params.weight

    def needs(self) -> Needs:
        """What this objective reads from each model's outputs (default: logits only, from both)."""
        return Needs()

    def trainable_modules(self) -> list[torch.nn.Module]:
        """Extra parameters this objective trains (e.g. a projector); saved beside, never inside, the student."""
        return []

    def check(self, teacher, examples, run_dir=None):
        """Raise UserError for a problem with what prepare() will read (e.g. a stale file the user named);
        called before a run writes anything."""

    def prepare(self, teacher, examples, pad_id, log=print, run_dir=None):
        """Work done once before training with the frozen teacher (e.g. a feature selection); files it
        writes go under run_dir."""

    def loss(self, student, teacher, batch) -> torch.Tensor:
        """Sum of the per-token loss over response positions."""
        raise NotImplementedError

    def take_stats(self) -> dict[str, tuple[float, float]]:
        """Extra numbers to log, as {name: (sum, count)} accumulated by loss() since the last call (then reset);
        the step's log shows sum / count over every process as '<objective>_<name>'."""
        return {}


class PairParams(ObjectiveParams):
    """Parameters of objectives over (teacher layer, student layer) pairs. Several pairs at once, each with its own
    weight and schedule, give hierarchical transfer; 'all' maps every student layer (layer-wise transfer)."""
    layers: str | list[tuple[int, int]] = Field(
        "last", description="'last', 'uniform:K' (K evenly spaced pairs, final layer excluded), 'all' (every student "
                            "layer to the end of the teacher block it replaces) or [[teacher, student], ...] "
                            "hidden_states indices")
    pair_weights: list[float] | None = Field(None, description="one weight >= 0 per layer pair; default equal")
    pair_schedules: list[WeightSchedule] | None = Field(None, description="one schedule per layer pair (e.g. shallow "
                                                        "pairs first, deep ones later); default constant")

    @model_validator(mode="after")
    def _pairs(self):
        check_spec(self.layers)
        if self.pair_weights is not None and (min(self.pair_weights, default=0) < 0 or sum(self.pair_weights) <= 0):
            raise ValueError("pair_weights must be >= 0 with a positive sum")
        return self


class LayerPairs:
    """Mixin for objectives over (teacher layer, student layer) pairs: `self.pairs` from `params.layers`, the
    layers each model must return, and each pair's weight (normalised to sum 1) times its schedule."""

    def __init__(self, params, context):
        super().__init__(params, context)
        self.pairs = layer_pairs(params.layers, context.teacher_config.num_hidden_layers,
                                 context.student_config.num_hidden_layers)
        weights = params.pair_weights or [1.0] * len(self.pairs)
        schedules = params.pair_schedules or [WeightSchedule()] * len(self.pairs)
        for what, values in (("pair_weights", weights), ("pair_schedules", schedules)):
            if len(values) != len(self.pairs):
                raise UserError(f"objective {self.name}: {what} has {len(values)} entries for {len(self.pairs)} layer "
                                f"pairs {self.pairs}; give one per pair")
        self.pair_weights = [w / sum(weights) for w in weights]
        self.pair_schedules = schedules

    def pair_factors(self):
        """Each pair's weight at the current step."""
        return [w * s.factor(self.step, self.total_steps) for w, s in zip(self.pair_weights, self.pair_schedules)]

    def teacher_layers(self):
        """The pairs' teacher layers, in pair order."""
        return tuple(t for t, _ in self.pairs)

    def student_layers(self):
        return tuple(s for _, s in self.pairs)

    def needs(self):
        return Needs(student=Request(hidden=tuple(sorted(set(self.student_layers())))),
                     teacher=Request(hidden=tuple(sorted(set(self.teacher_layers())))))
