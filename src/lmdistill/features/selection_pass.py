"""A feature objective's selections: computed once, before training, from the teacher on calibration examples (the
scoring pass), or read back from a matching selection artifact; a new one is written as the artifact (safetensors,
and a PNG of the scores and spectrum) so that `train` and other runs reuse it."""
import time
from pathlib import Path

import torch

from lmdistill.data import calibration_batches
from lmdistill.errors import UserError
from lmdistill.features import artifact, selectors
from lmdistill.features.registry import recorded_options
from lmdistill.provenance import data_fingerprint, model_fingerprint, peak_memory_gib


class SelectionPass:
    """The selections of one feature objective (position `index` in the config) for its teacher `layers`: k of the
    teacher's d_teacher dimensions each, chosen by `selector` (a registry.Selector that selects)."""

    def __init__(self, selector, layers, k, d_teacher, index):
        self.selector, self.params = selector, selector.params
        self.layers, self.k, self.d_teacher, self.index = tuple(layers), k, d_teacher, index

    def path(self, run_dir):
        """The artifact to reuse or write: selection_file, default RUN_DIR/selection/feature-I.safetensors."""
        if self.params.selection_file:
            return Path(self.params.selection_file).expanduser()
        return Path(run_dir) / "selection" / f"feature-{self.index}.safetensors"

    def calibration(self, examples):
        return examples[:self.params.calibration_examples]

    def metadata(self, teacher, calibration):
        """What a selection depends on; an artifact is reused only if all of it matches (`match_keys`)."""
        calibrates = self.selector.calibrates
        options = {key: getattr(self.params, key) if key in self.selector.recorded else None
                   for key in recorded_options()}
        return {"teacher": teacher.config.name_or_path, "teacher_fingerprint": model_fingerprint(teacher),
                "layers": list(self.layers), "selector": self.selector.name, "k": self.k, **options,
                "calibration_examples": len(calibration) if calibrates else 0,
                "data_fingerprint": data_fingerprint(calibration) if calibrates else None}

    def compute(self, teacher, calibration, pad_id):
        """({teacher layer: Selection}, record of the scoring pass: tokens, seconds, peak memory, effective dims)."""
        started = time.time()
        if not self.selector.calibrates:
            found = {t: self.selector.select(self.k, self.d_teacher) for t in self.layers}
            return found, {"tokens": 0, "seconds": round(time.time() - started, 3)}
        device = next(teacher.parameters()).device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        found = selectors.teacher_gradients(teacher, calibration_batches(calibration, pad_id, device), self.layers)
        # on CPU (effective_dimension, the artifact and its plot read them); prepare() moves them to the device
        chosen = {t: self.selector.select(self.k, self.d_teacher, grads, acts).to("cpu")
                  for t, (grads, acts) in found.items()}
        record = {"tokens": len(next(iter(found.values()))[0]), "seconds": round(time.time() - started, 3),
                  **peak_memory_gib(device)}
        if self.selector.functional_spectrum:  # the effective functional dimension, from E[g g^T]'s spectrum
            record["effective_dimension"] = {str(t): {f"{int(e * 100)}%": selectors.effective_dimension(s.spectrum, e)
                                                      for e in (0.9, 0.95, 0.99)} for t, s in chosen.items()}
        return chosen, record

    def run(self, teacher, calibration, pad_id, path=None, log=print):
        """Compute the selections, log the scoring pass and, given a path, write the artifact there.
        Returns (selections, record of the scoring pass)."""
        metadata = self.metadata(teacher, calibration)
        selections, record = self.compute(teacher, calibration, pad_id)
        log(describe(self.selector, metadata, record))
        if path is not None:
            self.write(path, selections, {**metadata, **record})
        return selections, record

    def write(self, path, selections, metadata):
        named = {**metadata, "score_name": self.selector.score_name, "spectrum_name": self.selector.spectrum_name}
        replacing = path.is_file()  # only ever an older artifact (the select job checks), whose plot goes with it
        artifact.save(path, selections, named)
        png = path.with_suffix(".png")
        # without a calibration pass there are no scores to plot; an existing PNG not replaced is a file not ours
        if self.selector.calibrates and (replacing or not png.exists()):
            artifact.plot(png, selections, named)

    def stored(self, teacher, calibration, path):
        """(selections, metadata) of a matching artifact at `path`, None when there is none; UserError when it is
        stale or lacks one of the layers."""
        if path is None or not path.is_file():
            return None
        selections, found = artifact.load(path)
        artifact.require_match(path, found, self.metadata(teacher, calibration), match_keys())
        missing = set(self.layers) - set(selections)
        if missing:
            raise UserError(f"selection for teacher layers {sorted(missing)} is missing from {path}; "
                            f"recompute it with `lmdistill select CONFIG`")
        return selections, found

    def check(self, teacher, examples, run_dir=None):
        """A selection_file the user named must match this run; checked before the run writes anything."""
        if self.params.selection_file:
            self.stored(teacher, self.calibration(examples), self.path(run_dir))

    def prepare(self, teacher, examples, pad_id, log=print, run_dir=None):
        """{teacher layer: Selection} on the teacher's device: a matching artifact's, or computed now and written
        to path(run_dir)."""
        calibration = self.calibration(examples)
        path = self.path(run_dir) if run_dir is not None or self.params.selection_file else None
        stored = self.stored(teacher, calibration, path)
        if stored is not None:
            selections, found = stored
            log(f"feature: reusing the {found['selector']} selection in {path}")
        else:
            selections, _ = self.run(teacher, calibration, pad_id, path, log)
        device = next(teacher.parameters()).device
        return {t: selections[t].to(device) for t in self.layers}


def match_keys():
    """The metadata a reused artifact must match (the rest is a record: time, memory, ...)."""
    return ("teacher_fingerprint", "layers", "selector", "k", *recorded_options(), "data_fingerprint")


def describe(selector, metadata, record):
    """One line on a scoring pass: what, on how much data, time, memory, effective functional dimension."""
    if not selector.calibrates:
        options = "".join(f" ({key} {metadata[key]})" for key in selector.recorded)
        return f"feature: {selector.name} selection of {metadata['k']} coordinates{options}"
    text = (f"feature: {selector.name} selection from {metadata['calibration_examples']} examples ({record['tokens']} "
            f"response tokens, teacher layers {metadata['layers']}) in {record['seconds']:.1f} s, "
            f"peak {record['peak_rss_gib']:.2f} GiB RSS")
    if "peak_gpu_gib" in record:
        text += f", {record['peak_gpu_gib']:.2f} GiB GPU"
    for layer, dims in record.get("effective_dimension", {}).items():
        text += f"; layer {layer} effective functional dimension " + ", ".join(f"{e}: {d}" for e, d in dims.items())
    return text
