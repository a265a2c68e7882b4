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
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, model_validator

from lmdistill.data import calibration_batches
from lmdistill.errors import UserError
from lmdistill.features import artifact, selectors
from lmdistill.features.metrics import METRICS
from lmdistill.objectives.base import LayerPairs, Objective, PairParams, register
from lmdistill.provenance import data_fingerprint, model_fingerprint, peak_memory_gib
from lmdistill.unused import refuse_unused


class FeatureParams(PairParams):
    name: Literal["feature"] = "feature"
    selector: Literal["flexkd", "functional", "pca", "random", "projection", "none"] = "flexkd"
    metric: Literal["pearson", "mse", "cosine", "cross_correlation", "cka", "contrastive"] = "pearson"
    score: Literal["abs_grad", "sq_grad", "grad_x_act"] = Field("abs_grad", description="flexkd's score")
    pairing: Literal["index", "rank"] = Field("index", description="order of the selected teacher coordinates")
    calibration_examples: int = Field(256, gt=0)
    off_diagonal: float = Field(0.005, ge=0, description="cross_correlation's off-diagonal weight")
    contrastive_temperature: float = Field(0.1, gt=0, description="contrastive (InfoNCE): similarity temperature")
    negatives: int | None = Field(None, gt=0, description="contrastive: negatives per anchor drawn from the batch's "
                                  "other response positions (or sequences); default all of them")
    contrastive_level: Literal["token", "sequence"] = Field("token", description="contrastive: positives are the same "
                                                            "token position, or the same sequence (each sequence's "
                                                            "response features averaged; negatives: the batch's "
                                                            "other sequences)")
    seed: int = Field(0, description="for selector random")
    selection_file: str | None = Field(None, description="selection artifact to reuse or write; default "
                                       "RUN_DIR/selection/feature-I.safetensors (I = the objective's position)")

    @model_validator(mode="after")
    def _consistent(self):
        if self.contrastive_level == "sequence" and self.metric != "contrastive":
            raise ValueError("contrastive_level applies to metric contrastive only")
        if (self.selector == "none") != (self.metric == "cka"):
            raise ValueError("metric cka compares full widths: use it with selector none (and only then)")
        selects, calibrates = self.selector not in ("projection", "none"), self.selector in ("flexkd", "functional", "pca")
        contrastive = self.metric == "contrastive"
        refuse_unused(self, [("score", self.selector == "flexkd", "with selector: flexkd"),
                             ("pairing", self.selector == "flexkd", "with selector: flexkd"),
                             ("calibration_examples", calibrates, "with selector flexkd, functional or pca"),
                             ("seed", self.selector in ("random", "projection"), "with selector random or projection"),
                             ("selection_file", selects, "with selector flexkd, functional, pca or random"),
                             ("off_diagonal", self.metric == "cross_correlation", "with metric: cross_correlation"),
                             ("contrastive_temperature", contrastive, "with metric: contrastive"),
                             ("negatives", contrastive, "with metric: contrastive")])
        return self


@register
class FeatureKD(LayerPairs, Objective):
    name = "feature"
    Params = FeatureParams

    def __init__(self, params, context):
        super().__init__(params, context)
        self.d_teacher, self.d_student = context.teacher_config.hidden_size, context.student_config.hidden_size
        if params.selector not in ("projection", "none") and self.d_student > self.d_teacher:
            raise UserError(f"selector {params.selector} keeps d_S={self.d_student} of the teacher's "
                            f"d_T={self.d_teacher} dimensions; the student must not be wider (use projection)")
        self.metric = METRICS[params.metric]
        if params.metric == "cross_correlation":
            self.metric = partial(self.metric, off_diagonal=params.off_diagonal)
        if params.metric == "contrastive":
            self.metric = partial(self.metric, temperature=params.contrastive_temperature, negatives=params.negatives)
        self.selections = {}
        self.projections = torch.nn.ModuleList()
        if params.selector == "projection":
            with torch.random.fork_rng():  # seed the projector without moving the global RNG
                torch.manual_seed(params.seed)
                self.projections = torch.nn.ModuleList(torch.nn.Linear(self.d_student, self.d_teacher, bias=False)
                                                       for _ in self.pairs)

    def trainable_modules(self):
        return list(self.projections)

    def needs_selection(self):
        return self.params.selector not in ("projection", "none")

    def selection_path(self, run_dir):
        if self.params.selection_file:
            return Path(self.params.selection_file).expanduser()
        return Path(run_dir) / "selection" / f"feature-{self.index}.safetensors"

    def selection_metadata(self, teacher, calibration):
        """What a selection depends on; an artifact is reused only if all of it matches."""
        p, gradient_based = self.params, self.params.selector != "random"
        return {"teacher": teacher.config.name_or_path, "teacher_fingerprint": model_fingerprint(teacher),
                "layers": list(self.teacher_layers()), "selector": p.selector, "k": self.d_student,
                "score": p.score if p.selector == "flexkd" else None,
                "pairing": p.pairing if p.selector == "flexkd" else None,
                "seed": p.seed if p.selector == "random" else None,
                "calibration_examples": len(calibration) if gradient_based else 0,
                "data_fingerprint": data_fingerprint(calibration) if gradient_based else None}

    def compute_selections(self, teacher, calibration, pad_id):
        """({teacher layer: Selection}, record of the scoring pass: tokens, seconds, peak memory, effective dims)."""
        kind, k, layers = self.params.selector, self.d_student, self.teacher_layers()
        started = time.time()
        if kind == "random":
            found = {t: selectors.random_coordinates(self.d_teacher, k, self.params.seed) for t in layers}
            return found, {"tokens": 0, "seconds": round(time.time() - started, 3)}
        device = next(teacher.parameters()).device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        found = selectors.teacher_gradients(teacher, calibration_batches(calibration, pad_id, device), layers)
        selections = {}
        for t, (grads, acts) in found.items():
            if kind == "flexkd":
                selections[t] = selectors.flexkd(grads, acts, k, self.params.score, self.params.pairing)
            elif kind == "functional":
                selections[t] = selectors.functional(grads, k)
            else:
                selections[t] = selectors.pca(acts, k)
        record = {"tokens": len(next(iter(found.values()))[0]), "seconds": round(time.time() - started, 3),
                  **peak_memory_gib(device)}
        if kind in ("flexkd", "functional"):  # the effective functional dimension, from E[g g^T]'s spectrum
            record["effective_dimension"] = {str(t): {f"{int(e * 100)}%": selectors.effective_dimension(s.spectrum, e)
                                                      for e in (0.9, 0.95, 0.99)} for t, s in selections.items()}
        return selections, record

    def calibration(self, examples):
        return examples[:self.params.calibration_examples]

    def select(self, teacher, calibration, pad_id, path=None, log=print):
        """Compute the selections, log the scoring pass and, given a path, write the artifact there.
        Returns (selections, record of the scoring pass)."""
        metadata = self.selection_metadata(teacher, calibration)
        selections, record = self.compute_selections(teacher, calibration, pad_id)
        log(describe_selection(self.params.selector, metadata, record))
        if path is not None:
            self.write_selection(path, selections, {**metadata, **record})
        return selections, record

    def write_selection(self, path, selections, metadata):
        named = {**metadata, "score_name": self.params.score if self.params.selector == "flexkd" else
                 {"functional": "mean g^2", "pca": "activation variance", "random": "none"}[self.params.selector],
                 "spectrum_name": "activation covariance" if self.params.selector == "pca" else "E[g g^T] spectrum"}
        replacing = path.is_file()  # only ever an older artifact (select() checks), whose plot goes with it
        artifact.save(path, selections, named)
        png = path.with_suffix(".png")
        if self.params.selector != "random" and (replacing or not png.exists()):  # else: a file that is not ours
            artifact.plot(png, selections, named)

    def _stored(self, teacher, calibration, path):
        """(selections, metadata) of a matching artifact at `path`, None when there is none; UserError when it is
        stale or lacks one of this objective's layers."""
        if path is None or not path.is_file():
            return None
        selections, found = artifact.load(path)
        artifact.require_match(path, found, self.selection_metadata(teacher, calibration))
        missing = set(self.teacher_layers()) - set(selections)
        if missing:
            raise UserError(f"selection for teacher layers {sorted(missing)} is missing from {path}; "
                            f"recompute it with `lmdistill select CONFIG`")
        return selections, found

    def check(self, teacher, examples, run_dir=None):
        """A selection_file the user named must match this run; checked before the run writes anything."""
        if self.needs_selection() and self.params.selection_file:
            self._stored(teacher, self.calibration(examples), self.selection_path(run_dir))

    def prepare(self, teacher, examples, pad_id, log=print, run_dir=None):
        """Compute the selections from the teacher on calibration examples (once, before training), or reuse
        a matching artifact; a new one is written to selection_path(run_dir)."""
        if not self.needs_selection():
            return
        calibration = self.calibration(examples)
        path = self.selection_path(run_dir) if run_dir is not None or self.params.selection_file else None
        stored = self._stored(teacher, calibration, path)
        if stored is not None:
            selections, found = stored
            log(f"feature: reusing the {found['selector']} selection in {path}")
        else:
            selections, _ = self.select(teacher, calibration, pad_id, path, log)
        device = next(teacher.parameters()).device
        self.selections = {t: selections[t].to(device) for t in self.teacher_layers()}

    def loss(self, student, teacher, batch):
        total = student.logits.new_zeros(())
        for i, ((t, s), factor) in enumerate(zip(self.pairs, self.pair_factors())):
            if factor == 0:  # switched off by its schedule
                continue
            s_feat, t_feat = student.hidden[s], teacher.hidden[t]
            if self.params.selector == "projection":
                s_feat = self.projections[i](s_feat)
            elif self.params.selector != "none":
                t_feat = self.selections[t].apply(t_feat)
            if self.params.contrastive_level == "sequence":
                s_feat, t_feat = sequence_means(s_feat, student.where), sequence_means(t_feat, student.where)
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


def describe_selection(kind, metadata, record):
    """One line on a scoring pass: what, on how much data, time, memory, effective functional dimension."""
    if kind == "random":
        return f"feature: random selection of {metadata['k']} coordinates (seed {metadata['seed']})"
    text = (f"feature: {kind} selection from {metadata['calibration_examples']} examples ({record['tokens']} response "
            f"tokens, teacher layers {metadata['layers']}) in {record['seconds']:.1f} s, peak {record['peak_rss_gib']:.2f} GiB RSS")
    if "peak_gpu_gib" in record:
        text += f", {record['peak_gpu_gib']:.2f} GiB GPU"
    for layer, dims in record.get("effective_dimension", {}).items():
        text += f"; layer {layer} effective functional dimension " + ", ".join(f"{e}: {d}" for e, d in dims.items())
    return text
