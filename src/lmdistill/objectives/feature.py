"""Feature distillation = layer map + selector + metric (distily's decomposition).

For each (teacher layer, student layer) pair, the teacher's hidden state (width d_T) is brought to the
student's width d_S by a selector, then compared with the student's hidden state by a metric:
- selectors flexkd / functional / pca / random are computed once, before training, from the teacher on
  calibration examples (the first `calibration_examples` training examples) and add no parameter;
- selector projection is a learned linear map student -> teacher width (FitNets/TinyBERT): its weights are
  in the optimizer and saved beside the student, never inside it;
- selector none compares the full widths and needs metric cka.
What each selector computes and reads is declared in `features.registry`; the selection pass and its artifact are
in `features.selection_pass`. The default (flexkd + pearson) is Flex-KD's parameter-free, correlation-based loss.
"""
from functools import partial
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, field_validator, model_validator

from lmdistill.errors import UserError
from lmdistill.features.metrics import METRICS, metric_params
from lmdistill.features.registry import get_selector, selector_options, which
from lmdistill.features.selection_pass import SelectionPass
from lmdistill.objectives.base import LayerPairs, Objective, PairParams, register
from lmdistill.unused import refuse_unused


class FeatureParams(PairParams):
    name: Literal["feature"] = "feature"
    selector: str = Field("flexkd", description="a selector registered in features.registry (flexkd, functional, "
                          "pca, random, projection, none)")
    metric: Literal["pearson", "mse", "cosine", "cross_correlation", "cka", "contrastive"] = "pearson"
    params: dict[str, Any] = Field(default_factory=dict, description="the metric's parameters, e.g. {off_diagonal: "
                                   "0.01} for cross_correlation, {temperature: 0.1, negatives: 64} for contrastive; "
                                   "defaults are filled in")
    score: Literal["abs_grad", "sq_grad", "grad_x_act"] = Field("abs_grad", description="flexkd's score")
    pairing: Literal["index", "rank"] = Field("index", description="order of the selected teacher coordinates")
    calibration_examples: int = Field(256, gt=0)
    contrastive_level: Literal["token", "sequence"] = Field("token", description="contrastive: positives are the same "
                                                            "token position, or the same sequence (each sequence's "
                                                            "response features averaged; negatives: the batch's "
                                                            "other sequences)")
    seed: int | None = Field(None, description="for selector random (the coordinates) or projection (its "
                             "initialisation); default: the run's seed")
    selection_file: str | None = Field(None, description="selection artifact to reuse or write; default "
                                       "RUN_DIR/selection/feature-I.safetensors (I = the objective's position)")
    # former keys, now metric parameters: old key -> its name under `params` (config_keys says where it went)
    moved_to_params: ClassVar[dict[str, str]] = {"off_diagonal": "off_diagonal", "contrastive_temperature":
                                                 "temperature", "negatives": "negatives"}

    @field_validator("selector")
    @classmethod
    def _known(cls, name):
        get_selector(name)
        return name

    @model_validator(mode="after")
    def _consistent(self):
        selector = get_selector(self.selector)
        if self.contrastive_level == "sequence" and self.metric != "contrastive":
            raise ValueError("contrastive_level applies to metric contrastive only")
        if selector.full_width != (self.metric == "cka"):
            raise ValueError(f"metric cka compares full widths: use it with selector "
                             f"{which(lambda c: c.full_width)} (and only then)")
        options = selector_options()
        refuse_unused(self, [(key, key in selector.options, f"with selector {which(lambda c: key in c.options)}")
                             for key in type(self).model_fields if key in options])
        self.params = metric_params(self.metric, self.params)
        return self


@register
class FeatureKD(LayerPairs, Objective):
    name = "feature"
    Params = FeatureParams
    cross_tokenizer = True  # at the positions where both tokenizations end at the same character

    def __init__(self, params, context):
        super().__init__(params, context)
        self.d_teacher, self.d_student = context.teacher_config.hidden_size, context.student_config.hidden_size
        self.selector = get_selector(params.selector)(params)
        if self.selector.selects and self.d_student > self.d_teacher:
            raise UserError(f"selector {params.selector} keeps d_S={self.d_student} of the teacher's "
                            f"d_T={self.d_teacher} dimensions; the student must not be wider "
                            f"(use {which(lambda c: c.learned)})")
        self.metric = partial(METRICS[params.metric], **params.params)
        self.selections = {}  # {teacher layer: Selection}, set by prepare()
        self.projections = self.selector.projections(self.pairs, self.d_student, self.d_teacher)

    def trainable_modules(self):
        return list(self.projections)

    def selection_pass(self):
        return SelectionPass(self.selector, self.teacher_layers(), self.d_student, self.d_teacher, self.index)

    def check(self, teacher, examples, run_dir=None):
        if self.selector.selects:
            self.selection_pass().check(teacher, examples, run_dir)

    def prepare(self, teacher, examples, pad_id, log=print, run_dir=None):
        """The selections: computed from the teacher on calibration examples (once, before training), or a matching
        artifact's; a new one is written to RUN_DIR/selection or selection_file."""
        if self.selector.selects:
            self.selections = self.selection_pass().prepare(teacher, examples, pad_id, log, run_dir)

    def loss(self, student, teacher, batch):
        total = student.logits.new_zeros(())
        for i, ((t, s), factor) in enumerate(zip(self.pairs, self.pair_factors())):
            if factor == 0:  # switched off by its schedule
                continue
            s_feat, t_feat = student.hidden[s], teacher.hidden[t]
            sequence = self.params.contrastive_level == "sequence"
            if teacher.alignment is not None and not sequence:  # another tokenizer: the aligned positions
                s_feat, t_feat = s_feat[teacher.alignment.student_starts], t_feat[teacher.alignment.teacher_starts]
            if self.selector.learned:
                s_feat = self.projections[i](s_feat)
            elif self.selector.selects:
                t_feat = self.selections[t].apply(t_feat)
            if sequence:  # each model's own positions: the sequences are the same
                s_feat, t_feat = sequence_means(s_feat, student.where), sequence_means(t_feat, teacher.where)
            total = total + factor * self.metric(s_feat, t_feat)
        return total * len(student.targets)


def sequence_means(features, where):
    """[N, d] response-position features -> [S, d] the mean of each sequence's, for the S sequences of the batch
    (rows of `where` [B, L-1]) that have response positions."""
    sequence = where.nonzero()[:, 0]
    present, sequence = torch.unique(sequence, return_inverse=True)
    sums = features.new_zeros(len(present), features.shape[-1]).index_add(0, sequence, features)
    counts = torch.bincount(sequence, minlength=len(present)).to(features.dtype)
    return sums / counts[:, None]
