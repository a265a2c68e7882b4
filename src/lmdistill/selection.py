"""The `select` job: compute every feature objective's selection from the teacher and write its artifact
(safetensors + PNG of the score spectrum) where `train` will look for it."""
import torch

from lmdistill.build import build_parts
from lmdistill.errors import UserError
from lmdistill.features import artifact
from lmdistill.features.registry import which


def select(config, log=print):
    """Returns {artifact path: record of its scoring pass}."""
    parts = build_parts(config, splits=("train",), log=log)
    chosen = [o for o in parts.objectives if o.name == "feature" and o.selector.selects]
    if not chosen:
        raise UserError(f"the config has no feature objective with a selector to compute "
                        f"({which(lambda c: c.selects)}); {which(lambda c: c.learned)} learns its map during "
                        f"training and {which(lambda c: c.full_width)} compares full widths")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    teacher = parts.teacher.to(device)
    pad = parts.teacher_pad_id
    written = {}
    for objective in chosen:
        selection = objective.selection_pass()
        path = selection.path(config.run_dir)
        if path.exists():  # replace an older selection artifact, never anything else
            try:
                artifact.load(path)
            except UserError:
                raise UserError(f"{path} exists and is not a readable selection artifact, so select will not replace "
                                f"it; choose another selection_file or delete it") from None
        _, record = selection.run(teacher, selection.calibration(parts.teacher_examples("train")), pad, path, log)
        log(f"wrote {path}" + (f" and {path.with_suffix('.png')}" if selection.selector.calibrates else ""))
        written[str(path)] = record
    return written
