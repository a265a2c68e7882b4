"""Every result the README states, made again at the current commit: each benchmark script and compare file in turn,
each writing its results folder with its provenance (commit, clean tree or not, versions, machine, command, date).

    python benchmarks/results.py            # all of them (`make results`): the hours below, about 45 on 2 cores
    python benchmarks/results.py --quick    # each at a tiny budget into benchmarks/results-quick/
    python benchmarks/results.py --quick --jobs 2   # two entries at a time (`make results-quick`)
    python benchmarks/results.py --list     # what runs, in order, with its command and estimated time
    python benchmarks/results.py --only methods survey

The full run replaces the committed results folders; compare grids resume (finished cells are kept), so an
interrupted `make results` continues where it stopped. Each invocation records what it ran, each entry's time and exit
status, with its provenance, in run.json (benchmarks/results/, or benchmarks/results-quick/ for --quick). `--quick`
checks that every entry still runs end to end: its numbers say nothing (2-10 steps, a few examples) and it never writes
into benchmarks/results/. With --jobs N, N
quick entries run side by side, each on its share of the cores, its output in benchmarks/results-quick/logs/ (the full
run is one at a time: its timing benchmarks would measure each other). The estimates are the last measured runs on the
2-core machine (each results folder records its own times).
"""
import argparse
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = str(ROOT / ".venv/bin/python")
BENCH_PY = str(ROOT / ".venv-bench/bin/python")  # lmdistill + TRL (make bench-env), for step.py
QUICK = "benchmarks/results-quick"
TINY = ["--set", "train.steps=5", "--set", "train.eval_every=0", "--set", "data.max_train_examples=40",
        "--set", "eval.max_examples=4"]  # a grid's quick cells at a budget that only checks that they run
# grids whose student is SmolLM2-135M (about 10 s a step on one core, 30 s on emails): 2 steps
LARGE = ["--set", "train.steps=2", "--set", "data.max_train_examples=16"]
RAW_GEMMA = ["--set", "teacher.model=gemma3-270m"]  # quick: the raw teacher, not the fine-tuned one (not made)
EMAIL = ["--set", "data.builtin=email-subject", "--set", "data.max_length=384", "--set", "data.max_train_examples=1095",
         "--set", "train.steps=137"]

# generalized JSD against forward and reverse KL at the same lmbda, and against off-policy KD (two grids, one pairing)
JOIN_GJSD = ["onpolicy", "onpolicy-gjsd", "--baseline", "kd-fkl", "--compare", "gkd1-gjsd:gkd1-fkl",
             "gkd1-gjsd:gkd1-rkl", "gkd0.5-gjsd:gkd0.5-fkl", "gkd0.5-gjsd:gkd0.5-rkl", "gkd1-gjsd:kd-fkl",
             "gkd0.5-gjsd:kd-fkl"]


@dataclass
class Entry:
    name: str
    full: list          # the command that makes the committed results
    hours: float        # its last measured time on 2 cores (or, for a grid not run yet, its sizing)
    quick: list | None  # a tiny version writing under benchmarks/results-quick/; None: the full one is already small
    quick_minutes: float = 1.0  # the quick version's last measured time (--jobs 2; results-quick-run.json)


def lmdistill(*args):
    return [PY, "-m", "lmdistill", *args]


def compare(file, name, hours, quick_minutes, quick_extra=()):
    full = lmdistill("compare", f"benchmarks/{file}")
    return Entry(name, full, hours, full + ["--quick", "--run-dir", f"{QUICK}/{name}", *TINY, *quick_extra],
                 quick_minutes)


def script(file, args, hours, quick_args, quick_minutes=1.0, python=PY):
    return Entry(file + "".join(f" {a}" for a in args), [python, f"benchmarks/{file}.py", *args], hours,
                 None if quick_args is None else [python, f"benchmarks/{file}.py", *quick_args], quick_minutes)


def teacher(run_dir, hours, extra=()):
    """Gemma-3-270m fine-tuned on the task: the teacher of the cross-tokenizer grids (runs/, not committed)."""
    full = lmdistill("train", "benchmarks/crosstok-teacher.yaml", "--set", f"run_dir={run_dir}", *extra, "--overwrite")
    quick = lmdistill("train", "benchmarks/crosstok-teacher.yaml", "--set", f"run_dir={QUICK}/{Path(run_dir).name}",
                      *extra, "--set", "train.steps=3", "--set", "train.save_every=0", "--set", "eval.max_examples=4",
                      "--overwrite")
    return Entry(f"teacher {Path(run_dir).name}", full, hours, quick, 2.0)


ENTRIES = [
    compare("methods.yaml", "methods", 6.0, 5),
    compare("methods-controls.yaml", "methods-controls", 1.4, 3),  # measured: 5143 s for 5 seeds, cache included
    Entry("methods --quick", lmdistill("compare", "benchmarks/methods.yaml", "--quick"), 0.8, None),
    compare("survey.yaml", "survey", 3.0, 2),
    script("distillens", ["--steps", "300", "--seeds", "0", "1", "2"], 1.5,
           ["--steps", "10", "--seeds", "0", "--eval-examples", "8", "--methods", "kd-fkl", "distillens",
            "--out", f"{QUICK}/distillens"], 2),
    script("feature_selectors", ["--steps", "150", "--seeds", "0", "1", "2"], 1.0,
           ["--steps", "10", "--seeds", "0", "--eval-examples", "8", "--methods", "sft", "flexkd",
            "--out", f"{QUICK}/feature_selectors"], 2),
    script("feature_selectors", ["--steps", "300", "--seeds", "0", "1", "2", "--out",
                                 "benchmarks/results/feature_selectors_300"], 2.0, None),
    script("pruned_importance", ["--steps", "150", "--seeds", "0", "1", "2"], 1.0,
           ["--steps", "5", "--seeds", "0", "--eval-examples", "8", "--calibration-examples", "16",
            "--out", f"{QUICK}/pruned_importance"], 2),
    script("lens_quality", [], 0.1, ["--examples", "8", "--out", f"{QUICK}/lens_quality"], 0.25),
    script("lens_memory", ["--repeats", "2", "--chunk-sizes", "64", "128"], 0.2,
           ["--repeats", "1", "--chunk-sizes", "64", "--out", f"{QUICK}/lens_memory"], 3),
    script("selection_memory", [], 0.3, ["--tasks", "define-word", "--batchings", "examples:8",
                                         "--out", f"{QUICK}/selection_memory"], 1.6),
    script("cache_fidelity", [], 0.3, ["--examples", "8", "--top-k", "16", "--out", f"{QUICK}/cache_fidelity"], 1.6),
    script("sharding_memory", [], 0.2, ["--steps", "3", "--out", f"{QUICK}/sharding"], 1.1),
    script("step", [], 0.6, None, python=BENCH_PY),
    script("step", ["--pair", "tiny"], 0.1, ["--pair", "tiny", "--repeats", "2", "--warmup", "1", "--no-memory",
                                             "--out", f"{QUICK}/step-tiny.md"], 0.8, python=BENCH_PY),
    script("step", ["--pair", "gemma-smollm2"], 0.5, None, python=BENCH_PY),
    script("step", ["--pair", "onpolicy"], 0.3, None, python=BENCH_PY),
    teacher("runs/teachers/gemma3-270m-define-word-6000", 1.5),
    compare("crosstok-fresh.yaml", "crosstok-fresh", 2.0, 3, RAW_GEMMA),
    teacher("runs/teachers/gemma3-270m-email-subject", 0.6, EMAIL),
    compare("crosstok-email.yaml", "crosstok-email", 3.8, 6, RAW_GEMMA + LARGE),  # seed 0 measured: 81 min
    compare("onpolicy.yaml", "onpolicy", 4.3, 3),
    compare("onpolicy-gjsd.yaml", "onpolicy-gjsd", 0.8, 1.1),
    compare("onpolicy-email.yaml", "onpolicy-email", 1.5, 4),  # seeds 0-1 measured: 33 and 26 min, cache 5 min
    compare("onpolicy-walltime.yaml", "onpolicy-walltime", 0.55, 1.3),
    script("equal_time", [], 0.001, ["--out", f"{QUICK}/onpolicy-equal-time"], 0.1),  # reads two grids above
    script("joined", JOIN_GJSD + ["--out", "benchmarks/results/onpolicy-joined"], 0.001,
           JOIN_GJSD + ["--out", f"{QUICK}/onpolicy-joined"], 0.1),  # reads onpolicy and onpolicy-gjsd
    compare("pretrained-cut.yaml", "pretrained-cut", 5.4, 3),  # 5 seeds x 65 min (AMD EPYC); 36 on an Intel Xeon
    compare("pretrained-cross.yaml", "pretrained-cross", 7.0, 4, RAW_GEMMA + LARGE),
    script("claims", [], 0.001, ["--out", f"{QUICK}/claims"], 0.1),  # reads the grids above, trains nothing
]


def hours_text(h):
    return f"{h * 3600:.0f} s" if h < 100 / 3600 else f"{h * 60:.0f} min" if h < 1 else f"{h:.1f} h"


def run(entries, quick, jobs=1, log=print):
    """Run each entry's full (or quick) command from the repository root, in order (jobs at a time); returns the
    names that failed."""
    chosen = [(e, e.quick if quick else e.full) for e in entries if not (quick and e.quick is None)]
    if quick and jobs > 1:
        chosen.sort(key=lambda item: -item[0].quick_minutes)  # longest first: the last to start are short
    estimate = sum(e.hours for e, _ in chosen) if not quick else None
    started, times = time.time(), []

    def one(i, entry, command):
        elapsed = time.time() - started
        left = f", about {hours_text(max(estimate - elapsed / 3600, 0))} left" if estimate else ""
        log(f"[{i}/{len(chosen)}] {entry.name}: {' '.join(command[1:])} ({hours_text(elapsed / 3600)} so far{left})")
        began = time.time()
        code = run_entry(entry, command, jobs)
        times.append({"name": entry.name, "command": command[1:], "seconds": round(time.time() - began, 1),
                      "exit": code})
        took = hours_text((time.time() - began) / 3600)
        log(f"[{i}/{len(chosen)}] {entry.name}: {'FAILED' if code else 'done'} in {took}"
            + (f", see {log_path(entry)}" if jobs > 1 else "") + ("; going on with the next" if code else ""))

    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(lambda item: one(item[0], *item[1]), enumerate(chosen, 1)))
    failed = [t["name"] for t in times if t["exit"] != 0]
    log(f"done in {hours_text((time.time() - started) / 3600)}: {len(chosen) - len(failed)} of {len(chosen)} ran"
        + (f"; failed: {', '.join(failed)}" if failed else ""))
    write_record(ROOT / (QUICK if quick else "benchmarks/results") / "run.json", times, started, jobs)
    return failed


def write_record(path, times, started, jobs):
    """What this invocation ran: each entry's time and exit status, the total, and the provenance (commit, clean or
    not, versions, machine, command, date)."""
    from lmdistill.io import atomic_write_json
    from lmdistill.provenance import record
    atomic_write_json(path, {"jobs": jobs, "total_seconds": round(time.time() - started, 1), "entries": times,
                             "provenance": record()})


def log_path(entry):
    return ROOT / QUICK / "logs" / (re.sub(r"[^A-Za-z0-9_.-]+", "_", entry.name).strip("_") + ".log")


def run_entry(entry, command, jobs):
    """One entry's command; with jobs > 1 its output goes to its log file and it gets its share of the cores
    (unless OMP_NUM_THREADS is set)."""
    if jobs == 1:
        return subprocess.run(command, cwd=ROOT).returncode
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))
    path = log_path(entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as out:
        return subprocess.run(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT).returncode


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="every entry at a tiny budget, into " + QUICK)
    p.add_argument("--only", nargs="+", metavar="NAME", help="only these entries (names as --list shows them)")
    p.add_argument("--list", action="store_true", help="print the entries and their commands, run nothing")
    p.add_argument("--jobs", type=int, default=1, help="with --quick: run this many entries at a time")
    args = p.parse_args(argv)
    if args.jobs < 1 or (args.jobs > 1 and not args.quick):
        p.error("--jobs takes a count of 1 or more, and above 1 only with --quick (the full run's timing "
                "benchmarks would measure each other); drop --jobs or add --quick")
    entries = ENTRIES
    if args.only:
        unknown = sorted(set(args.only) - {e.name for e in ENTRIES})
        if unknown:
            p.error(f"unknown entries {unknown}; --list shows them")
        entries = [e for e in ENTRIES if e.name in args.only]
    if args.list:
        for e in entries:
            quick = " ".join(e.quick[1:]) if e.quick else "(not in --quick: already small, or made by another)"
            print(f"{e.name} ({hours_text(e.hours)})\n  full:  {' '.join(e.full[1:])}\n  quick: {quick}")
        print(f"total: {hours_text(sum(e.hours for e in entries))} on 2 cores")
        return 0
    return 1 if run(entries, args.quick, args.jobs) else 0


if __name__ == "__main__":
    sys.exit(main())
