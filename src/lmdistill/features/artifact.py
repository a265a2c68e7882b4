"""Selection artifacts: a feature objective's selections saved as safetensors, with what they were computed from.

The metadata names the teacher (and a fingerprint of its weights), the layers, the selector and its
options, and the calibration data (a fingerprint of its tokens). A run reuses an artifact only when all of
these match and refuses a stale one, so a selection never silently comes from another model or layer.
"""
import io
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save as save_bytes

from lmdistill.errors import UserError
from lmdistill.features.selectors import Selection
from lmdistill.io import atomic_write_bytes

FORMAT = "lmdistill-selection/1"


def save(path, selections, metadata):
    tensors = {}
    for layer, sel in selections.items():
        for field in ("indices", "basis", "scores", "spectrum"):
            value = getattr(sel, field)
            if value is not None:
                tensors[f"layer{layer}.{field}"] = value.detach().cpu().contiguous()
    meta = {key: json.dumps(value) for key, value in metadata.items()}
    atomic_write_bytes(path, save_bytes(tensors, metadata={"format": FORMAT, **meta}))


def load(path):
    """(selections {layer: Selection}, metadata) from an artifact."""
    path = Path(path)
    try:
        with safe_open(str(path), "pt") as f:
            header = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except Exception as e:  # safetensors raises its own error types
        raise UserError(f"selection artifact {path} is unreadable ({e}); delete it or choose another selection_file") from None
    if header.get("format") != FORMAT:
        raise UserError(f"{path} is not an lmdistill selection artifact ({FORMAT}); delete it or choose another selection_file")
    metadata = {key: json.loads(value) for key, value in header.items() if key != "format"}
    selections = {}
    for name, value in tensors.items():
        layer, field = name.removeprefix("layer").split(".")
        selections.setdefault(int(layer), Selection())
        setattr(selections[int(layer)], field, value)
    return selections, metadata


def require_match(path, found, expected, keys):
    """Raise a one-line UserError naming which of the metadata `keys` differ between an artifact and this run."""
    differ = [key for key in keys if found.get(key) != expected.get(key)]
    if not differ:
        return
    def show(key):
        if key == "teacher_fingerprint":
            return f"teacher {found.get('teacher')} ({found.get(key)}) != this run's {expected.get('teacher')} ({expected.get(key)})"
        if key == "data_fingerprint":
            return (f"calibration data ({found.get('calibration_examples')} examples, {found.get(key)}) != this run's "
                    f"({expected.get('calibration_examples')} examples, {expected.get(key)})")
        return f"{key} {found.get(key)!r} != this run's {expected.get(key)!r}"
    raise UserError(f"selection artifact {path} is stale: {'; '.join(show(k) for k in differ)}; "
                    f"recompute it with `lmdistill select CONFIG` or delete the file")


def plot(path, selections, metadata):
    """PNG per layer: sorted per-coordinate scores (log) and the spectrum's cumulative energy, k marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = metadata["k"]
    fig, axes = plt.subplots(len(selections), 2, figsize=(10, 3.2 * len(selections)), squeeze=False)
    for row, (layer, sel) in zip(axes, sorted(selections.items())):
        if sel.scores is not None:
            scores = torch.sort(sel.scores.double(), descending=True).values
            row[0].semilogy(range(1, len(scores) + 1), scores.clamp_min(1e-30).numpy())
            row[0].axvline(k, color="red", linestyle="--", label=f"k = {k}")
            row[0].set(title=f"layer {layer}: {metadata.get('score_name', 'score')} per dimension, sorted",
                       xlabel="rank", ylabel="score")
            row[0].legend()
        if sel.spectrum is not None:
            spectrum = sel.spectrum.double()
            energy = torch.cumsum(spectrum, 0) / spectrum.sum()
            row[1].plot(range(1, len(energy) + 1), energy.numpy())
            for level in (0.9, 0.95, 0.99):
                row[1].axhline(level, color="gray", linestyle=":", linewidth=0.8)
            row[1].axvline(k, color="red", linestyle="--", label=f"k = {k}")
            row[1].set(title=f"layer {layer}: {metadata.get('spectrum_name', 'spectrum')}, cumulative energy",
                       xlabel="eigen-directions kept", ylabel="energy", ylim=(0, 1.01))
            row[1].legend()
    fig.suptitle(f"{metadata['selector']} selection, teacher {metadata.get('teacher')}, "
                 f"{metadata.get('calibration_examples')} calibration examples")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
