"""Shared by the benchmark scripts: one training cell, mean ± std over seeds, paired differences, the report header."""
import argparse
import datetime
import shlex
import sys
import time
from pathlib import Path

import torch

from lmdistill.compare.stats import mean_std_text as mean_std
from lmdistill.run import machine


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
    row = train(config, overwrite=True, log=lambda *_: None)["metrics"]["student"]
    return {"ce": row["ce"], "kl": row["kl"], "seconds": time.time() - started}


def header(title):
    """Title, the command that is running, machine and date."""
    return (f"# {title}\n\ncommand: `{shlex.join([sys.executable.split('/')[-1], *sys.argv])}`\n"
            f"machine: {machine(torch.device('cpu'))}; date: {datetime.date.today()}\n\n")


def rss_gib(field):
    """VmRSS (now) or VmHWM (peak since the last reset_peak_rss) of this process in GiB, from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 2**20
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak_rss():
    Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM restarts from the current RSS
