"""Objective weights during training: configured weight x the objective's schedule x a dynamic factor.

The dynamic factors (mean 1 over the active components) follow `train.weighting.method`:
- fixed: all 1.
- loss_ratio: each factor moves toward mean(EMA of losses) / (its EMA of loss), so every component's weighted loss
  has the same magnitude up to its configured weight: a KD term 1000x smaller than CE still matters.
- gradnorm: GradNorm's target (Chen et al. 2018): every component's gradient norm at the student's shared
  parameters, times its factor, equal to the mean, times (its loss ratio L_i/L_i(0) over the mean ratio)^alpha.
  The factors move toward that target in log space by `rate` per measurement instead of GradNorm's gradient steps
  on an L1 loss, which at a 1000x spread between gradient norms needs a tiny learning rate to keep weights positive.
With these methods the configured weights set each component's share (of the loss, or of the gradient).
"""
import math


class Weighting:
    def __init__(self, cfg, weights, schedules, total_steps):
        self.cfg, self.base, self.schedules, self.total = cfg, list(weights), list(schedules), total_steps
        self.factors = [1.0] * len(self.base)
        self.ema = [None] * len(self.base)       # loss_ratio: EMA of each component's per-token loss
        self.initial = [None] * len(self.base)   # gradnorm: each component's loss at its first measurement

    def scheduled(self, step):
        return [w * s.factor(step, self.total) for w, s in zip(self.base, self.schedules)]

    def on(self, step):
        """Which components are computed at `step`: those their schedule does not switch off."""
        return [s.factor(step, self.total) > 0 for s in self.schedules]

    def weights(self, step):
        """Effective weight of each component at 0-based step `step`."""
        return [w * f for w, f in zip(self.scheduled(step), self.factors)]

    def wants_gradients(self, step):
        return self.cfg.method == "gradnorm" and step % self.cfg.every == 0

    def after_step(self, step, losses):
        """loss_ratio: update from this step's per-token losses (None for components off at this step)."""
        if self.cfg.method != "loss_ratio":
            return
        for i, loss in enumerate(losses):
            if loss is not None and math.isfinite(loss):
                self.ema[i] = abs(loss) if self.ema[i] is None else self.cfg.ema * self.ema[i] + (1 - self.cfg.ema) * abs(loss)
        active = [i for i, w in enumerate(self.scheduled(step + 1)) if w > 0 and self.ema[i]]
        self._move_toward(active, {i: 1 / self.ema[i] for i in active})

    def from_gradients(self, step, grad_norms, losses):
        """gradnorm: update from each component's gradient norm and per-token loss on a measurement batch
        (None for components off at this step)."""
        scheduled = self.scheduled(step)
        active = [i for i, g in enumerate(grad_norms)
                  if g is not None and g > 0 and math.isfinite(g) and scheduled[i] > 0]
        for i in active:
            if self.initial[i] is None:
                self.initial[i] = losses[i]
        ratios = {i: losses[i] / self.initial[i] if self.initial[i] else 1.0 for i in active}
        mean_ratio = sum(ratios.values()) / max(len(active), 1)
        self._move_toward(active, {i: (ratios[i] / mean_ratio) ** self.cfg.alpha / grad_norms[i] for i in active})

    def _move_toward(self, active, target):
        """Move the active factors toward `target` (any scale) in log space, then rescale them to mean 1."""
        if not active:
            return
        mean_log = sum(math.log(target[i]) for i in active) / len(active)
        moved = {i: (1 - self.cfg.rate) * math.log(self.factors[i]) + self.cfg.rate * (math.log(target[i]) - mean_log)
                 for i in active}
        shift = math.log(sum(math.exp(v) for v in moved.values()) / len(active))
        for i, v in moved.items():
            self.factors[i] = math.exp(v - shift)

    def state(self):
        return {"factors": self.factors, "ema": self.ema, "initial": self.initial}

    def load_state(self, state):
        if state:
            self.factors, self.ema, self.initial = state["factors"], state["ema"], state["initial"]
