"""Built-in datasets shipped with the package (built by scripts/build_datasets.py)."""
import json
from pathlib import Path

from lmdistill.errors import UserError, did_you_mean

ROOT = Path(__file__).parent / "builtin"


def manifest():
    return json.loads((ROOT / "manifest.json").read_text(encoding="utf-8"))


def builtin_names():
    return sorted(p.name for p in ROOT.iterdir() if p.is_dir() and (p / "train.jsonl").is_file())


def builtin_split(name, split):
    names = builtin_names()
    if name not in names:
        raise UserError(f"unknown built-in dataset '{name}'{did_you_mean(name, names)}; choose from {', '.join(names)}")
    return ROOT / name / f"{split}.jsonl"


def builtin_task(name):
    """'generation' or 'classification', as recorded in the manifest."""
    return manifest()["datasets"][name]["task"]
