from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field

from lmdistill.errors import UserError, did_you_mean
from lmdistill.layermap import layer_pairs

OBJECTIVES: dict[str, type["Objective"]] = {}


class ObjectiveParams(BaseModel):
    """Every objective's config entry: its name, its weight, and its own parameters."""
    model_config = ConfigDict(extra="forbid")
    name: str
    weight: float = Field(1.0, ge=0)


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
    needs_teacher: ClassVar[bool] = True

    def __init__(self, params, context):
        self.params = params
        self.context = context  # ObjectiveContext: models' shapes, shared vocabulary size

    @property
    def weight(self):
        return self.params.weight

    def student_layers(self):
        """hidden_states indices the student must return (0 = embeddings)."""
        return ()

    def teacher_layers(self):
        return ()

    def trainable_modules(self) -> list[torch.nn.Module]:
        """Extra parameters this objective trains (e.g. a projector); saved beside, never inside, the student."""
        return []

    def prepare(self, teacher, examples, pad_id, log=print, run_dir=None):
        """Work done once before training with the frozen teacher (e.g. a feature selection); files it
        writes go under run_dir."""

    def loss(self, student, teacher, batch) -> torch.Tensor:
        """Sum of the per-token loss over response positions."""
        raise NotImplementedError


class LayerPairs:
    """Mixin for objectives over (teacher layer, student layer) pairs: `self.pairs` from `params.layers`, and the
    layers each model must return."""

    def __init__(self, params, context):
        super().__init__(params, context)
        self.pairs = layer_pairs(params.layers, context.teacher_config.num_hidden_layers,
                                 context.student_config.num_hidden_layers)

    def teacher_layers(self):
        return tuple(t for t, _ in self.pairs)

    def student_layers(self):
        return tuple(s for _, s in self.pairs)
