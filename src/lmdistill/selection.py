"""The `select` job: compute every feature objective's selection from the teacher and write its artifact
(safetensors + PNG of the score spectrum) where `train` will look for it."""
import torch

from lmdistill.build import build_parts
from lmdistill.errors import UserError
from lmdistill.features import artifact


def select(config, log=print):
    """Returns {artifact path: record of its scoring pass}."""
    parts = build_parts(config, splits=("train",), log=log)
    chosen = [o for o in parts.objectives if o.name == "feature" and o.needs_selection()]
    if not chosen:
        raise UserError("the config has no feature objective with a selector to compute (flexkd, functional, pca, "
                        "random); projection learns its map during training and cka needs none")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    teacher = parts.teacher.to(device)
    pad = parts.tokenizer.pad_token_id
    written = {}
    for objective in chosen:
        path = objective.selection_path(config.run_dir)
        if path.exists():  # replace an older selection artifact, never anything else
            try:
                artifact.load(path)
            except UserError:
                raise UserError(f"{path} exists and is not a readable selection artifact, so select will not replace "
                                f"it; choose another selection_file or delete it") from None
        _, record = objective.select(teacher, objective.calibration(parts.splits["train"].examples), pad, path, log)
        log(f"wrote {path}" + ("" if objective.params.selector == "random" else f" and {path.with_suffix('.png')}"))
        written[str(path)] = record
    return written
