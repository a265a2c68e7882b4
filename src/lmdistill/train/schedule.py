import math
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator


def warmup_cosine(optimizer, warmup_steps, total_steps, min_lr_ratio):
    """Linear warmup to the base lr, then cosine decay to min_lr_ratio * base lr at total_steps."""
    def factor(step):
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class WeightSchedule(BaseModel):
    """A factor on one component's weight over training: 0 before start_step, a linear ramp to 1 over warmup_steps,
    then (decay linear or cosine) down to `final` at end_step (default: the last step), `final` after it."""
    model_config = ConfigDict(extra="forbid")
    start_step: int = Field(0, ge=0, description="the component is off (factor 0) before this step")
    warmup_steps: int = Field(0, ge=0, description="linear ramp from 0 to 1 after start_step")
    decay: Literal["none", "linear", "cosine"] = "none"
    final: float = Field(0.0, ge=0, description="factor reached at end_step when decaying")
    end_step: int | None = Field(None, gt=0, description="where the decay ends; default train.steps")

    @model_validator(mode="after")
    def _ordered(self):
        if self.end_step is not None and self.end_step <= self.start_step + self.warmup_steps:
            raise ValueError(f"schedule: end_step {self.end_step} must come after start_step + warmup_steps "
                             f"({self.start_step + self.warmup_steps})")
        return self

    def factor(self, step, total_steps):
        """The factor at 0-based optimizer step `step` of `total_steps`."""
        if step < self.start_step:
            return 0.0
        ramp = min(1.0, (step - self.start_step + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        if self.decay == "none":
            return ramp
        begin, end = self.start_step + self.warmup_steps, self.end_step or total_steps
        progress = min(1.0, max(0.0, (step - begin) / max(1, end - begin)))
        shape = 1 - progress if self.decay == "linear" else 0.5 * (1 + math.cos(math.pi * progress))
        return ramp * (self.final + (1 - self.final) * shape)

    def is_constant(self):
        return self.start_step == 0 and self.warmup_steps == 0 and self.decay == "none"
