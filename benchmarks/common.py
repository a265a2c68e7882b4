"""Shared by the benchmark scripts: one training cell, mean ± std over seeds, paired differences, the report header."""
import argparse
import json
import sys
import time
from pathlib import Path

from lmdistill import provenance as _provenance
from lmdistill.io import atomic_write_text
from lmdistill.compare.stats import mean_std_text as mean_std

_RECORDS = {}


def paired(by, name, reference, key, seeds):
    """mean ± std over seeds of by[(name, seed)][key] - by[(reference, seed)][key]: same init and data order."""
    return mean_std([by[(name, s)][key] - by[(reference, s)][key] for s in seeds])


def per_seed(by, name, reference, key, seeds):
    """The paired differences seed by seed, e.g. '+0.012 / -0.003 / +0.020'."""
    return " / ".join(f"{by[(name, s)][key] - by[(reference, s)][key]:+.3f}" for s in seeds)


def grid_parser(doc, steps, out, methods=None):
    """The arguments every seed x method benchmark takes: --steps, --seeds, --methods (when given), --eval-examples,
    --out."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=steps)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    if methods is not None:
        p.add_argument("--methods", nargs="+", default=list(methods), choices=list(methods))
    p.add_argument("--eval-examples", type=int, default=200)
    p.add_argument("--out", default=out)
    return p


def train_cell(objectives, run_dir, seed, steps, eval_examples, config_file="configs/demo.yaml"):
    """Train config_file's student with these objectives; dev CE and KL(T||S) per response token, and seconds."""
    from lmdistill.config import load_config
    from lmdistill.run import train
    config = load_config(config_file, [
        f"run_dir={run_dir}", f"seed={seed}", f"train.steps={steps}", "train.eval_every=0",
        f"eval.max_examples={eval_examples}", "eval.generate=false", "eval.split=dev"])
    config.objectives = type(config).model_validate({**config.model_dump(), "objectives": objectives}).objectives
    started = time.time()
    result = train(config, overwrite=True, log=lambda *_: None)
    row, git = result["metrics"]["student"], result["provenance"]["git"]
    # each cell's own commit: a benchmark that resumes (distillens) may hold cells made by different code
    return {"ce": row["ce"], "kl": row["kl"], "seconds": time.time() - started, "commit": git["commit"],
            "clean": git["clean"]}


def provenance(out, device=None):
    """Where this benchmark's numbers come from (lmdistill.provenance.record: git commit and whether the tree was
    clean, torch/transformers/accelerate versions, machine and kernels, command, UTC date), taken once per process,
    at the start of the run. The output directory `out` is being written and does not count as a code change."""
    key = str(Path(out).resolve())
    if key not in _RECORDS:
        _RECORDS[key] = _provenance.record(device, exclude=[out])
    return _RECORDS[key]


def cells_code(rows):
    """One line: the commit(s) the rows' cells were trained at (rows carry commit and clean, see train_cell)."""
    from lmdistill.compare.report import commits_line
    return commits_line(rows)


def write_provenance(path, record):
    """The record as JSON at `path` (e.g. OUT/provenance.json), beside the results it describes."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")


def header(title, record):
    """Title, then the code (commit, clean or not), versions, machine and kernels, command and date."""
    return f"# {title}\n\n{_provenance.summary(record)}\n\n"


def fail(message):
    """A mistake the user can fix: one line on stderr, exit 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def grid_file(folder, part):
    """A committed compare grid's file (rows.json, compare.yaml), or a one-line error and exit 2 when it is missing."""
    path = Path(folder) / part
    if not path.is_file():
        fail(f"{path} is missing; run `lmdistill compare benchmarks/{Path(folder).name}.yaml` first")
    return path


def paired_section(task, rows, methods, baseline, comparisons, intro=()):
    """One task of a report that pairs committed cells: the compare report's table over `methods` against
    `baseline`, then the chosen comparisons with Holm's adjustment over them."""
    from lmdistill.compare.report import comparisons_table, task_table
    return [f"## {task}", "", *intro, task_table(rows, methods, baseline), "",
            "Paired comparisons (negative = the first method is lower, i.e. better):", "",
            comparisons_table(rows, comparisons, "ce"), ""]


def write_paired_report(out, parts, rows, record):
    """OUT/report.md, OUT/rows.json and OUT/provenance.json, each written under a temp name and renamed."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "report.md", "\n".join(parts))
    atomic_write_text(out / "rows.json", json.dumps(rows, indent=1) + "\n")
    write_provenance(out / "provenance.json", record)
    print(f"wrote {out}/report.md")
