"""Feature distillation = layer map + selector + metric (distily's decomposition).

For each (teacher layer, student layer) pair, the teacher's hidden state (width d_T) is brought to the
student's width d_S by a selector, then compared with the student's hidden state by a metric:
- selectors flexkd / functional / pca / random are computed once, before training, from the teacher on
  calibration examples (the first `calibration_examples` training examples) and add no parameter;
- selector projection is a learned linear map student -> teacher width (FitNets/TinyBERT): its weights are
  in the optimizer and saved beside the student, never inside it;
- selector none compares the full widths and needs metric cka.
The default (flexkd + pearson) is Flex-KD's parameter-free, correlation-based feature loss.
"""
import time
from functools import partial
from typing import Literal

import torch
from pydantic import Field, model_validator

from lmdistill.data import collate
from lmdistill.errors import UserError
from lmdistill.features import selectors
from lmdistill.features.metrics import METRICS
from lmdistill.layermap import uniform_pairs
from lmdistill.objectives.base import Objective, ObjectiveParams, register


class FeatureParams(ObjectiveParams):
    name: Literal["feature"] = "feature"
    layers: str | list[tuple[int, int]] = Field(
        "last", description="'last', 'uniform:K', or [[teacher, student], ...] hidden_states indices")
    selector: Literal["flexkd", "functional", "pca", "random", "projection", "none"] = "flexkd"
    metric: Literal["pearson", "mse", "cosine", "cross_correlation", "cka"] = "pearson"
    score: Literal["abs_grad", "sq_grad", "grad_x_act"] = Field("abs_grad", description="flexkd's score")
    pairing: Literal["index", "rank"] = Field("index", description="order of the selected teacher coordinates")
    calibration_examples: int = Field(256, gt=0)
    off_diagonal: float = Field(0.005, ge=0, description="cross_correlation's off-diagonal weight")
    seed: int = Field(0, description="for selector random")

    @model_validator(mode="after")
    def _consistent(self):
        if isinstance(self.layers, str) and self.layers != "last" and not self.layers.startswith("uniform:"):
            raise ValueError(f"layers must be 'last', 'uniform:K' or a list of [teacher, student] pairs, "
                             f"got {self.layers!r}")
        if (self.selector == "none") != (self.metric == "cka"):
            raise ValueError("metric cka compares full widths: use it with selector none (and only then)")
        return self


def layer_pairs(spec, n_teacher, n_student):
    if spec == "last":
        return [(n_teacher, n_student)]
    if isinstance(spec, str):
        return uniform_pairs(n_teacher, n_student, int(spec.split(":", 1)[1]))
    return [tuple(p) for p in spec]


@register
class FeatureKD(Objective):
    name = "feature"
    Params = FeatureParams

    def __init__(self, params, context):
        super().__init__(params, context)
        self.pairs = layer_pairs(params.layers, context.teacher_config.num_hidden_layers,
                                 context.student_config.num_hidden_layers)
        self.d_teacher, self.d_student = context.teacher_config.hidden_size, context.student_config.hidden_size
        if params.selector not in ("projection", "none") and self.d_student > self.d_teacher:
            raise UserError(f"selector {params.selector} keeps d_S={self.d_student} of the teacher's "
                            f"d_T={self.d_teacher} dimensions; the student must not be wider (use projection)")
        self.metric = METRICS[params.metric]
        if params.metric == "cross_correlation":
            self.metric = partial(self.metric, off_diagonal=params.off_diagonal)
        self.selections = {}
        self.projections = torch.nn.ModuleList()
        if params.selector == "projection":
            with torch.random.fork_rng():  # seed the projector without moving the global RNG
                torch.manual_seed(params.seed)
                self.projections = torch.nn.ModuleList(torch.nn.Linear(self.d_student, self.d_teacher, bias=False)
                                                       for _ in self.pairs)

    def teacher_layers(self):
        return tuple(t for t, _ in self.pairs)

    def student_layers(self):
        return tuple(s for _, s in self.pairs)

    def trainable_modules(self):
        return list(self.projections)

    def prepare(self, teacher, examples, pad_id, log=print):
        """Compute the selections from the teacher on calibration examples (once, before training)."""
        kind = self.params.selector
        if kind in ("projection", "none"):
            return
        k, layers = self.d_student, self.teacher_layers()
        device = next(teacher.parameters()).device
        if kind == "random":
            self.selections = {t: selectors.random_coordinates(self.d_teacher, k, self.params.seed).to(device)
                               for t in layers}
            return
        started = time.time()
        calibration = examples[:self.params.calibration_examples]
        batches = [{key: v.to(device) for key, v in collate(calibration[i:i + 8], pad_id).items()}
                   for i in range(0, len(calibration), 8)]
        found = selectors.teacher_gradients(teacher, batches, layers)
        for t, (grads, acts) in found.items():
            if kind == "flexkd":
                self.selections[t] = selectors.flexkd(grads, acts, k, self.params.score, self.params.pairing)
            elif kind == "functional":
                self.selections[t] = selectors.functional(grads, k)
                spectrum = self.selections[t].scores
                dims = {e: selectors.effective_dimension(spectrum, e) for e in (0.9, 0.95, 0.99)}
                log(f"feature: teacher layer {t} effective functional dimension "
                    + ", ".join(f"{int(e * 100)}%: {d}" for e, d in dims.items()))
            else:
                self.selections[t] = selectors.pca(acts, k)
        self.selections = {t: sel.to(device) for t, sel in self.selections.items()}
        tokens = len(next(iter(found.values()))[0])
        log(f"feature: {kind} selection from {len(calibration)} examples ({tokens} response tokens, "
            f"{len(layers)} layers) in {time.time() - started:.1f} s")

    def loss(self, student, teacher, batch):
        total = 0.0
        for i, (t, s) in enumerate(self.pairs):
            s_feat, t_feat = student.hidden[s], teacher.hidden[t]
            if self.params.selector == "projection":
                s_feat = self.projections[i](s_feat)
            elif self.params.selector != "none":
                t_feat = self.selections[t].apply(t_feat)
            total = total + self.metric(s_feat, t_feat)
        return total / len(self.pairs) * len(student.targets)
