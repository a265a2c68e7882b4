"""On-policy distillation at equal wall time (issue 23): off-policy forward-KL KD given about the training time of a
GKD lmbda-1 cell (benchmarks/onpolicy-walltime.yaml) set beside every method of the 100-step grid
(benchmarks/onpolicy.yaml), paired seed by seed (the same seed gives the same student initialisation and prompts).

Nothing is trained: the script reads both grids' rows.json and writes benchmarks/results/onpolicy-equal-time/
(report.md, rows.json, provenance.json). Holm's family is the table of comparisons on one task.

    python benchmarks/equal_time.py
"""
import argparse
import json
from pathlib import Path

from common import grid_file, header, paired_section, provenance, write_paired_report

ROOT = Path(__file__).resolve().parent / "results"
LONG = "kd-fkl (equal time)"
AGAINST = ["gkd1-fkl", "gkd1-rkl", "gkd0.5-fkl", "gkd0.5-rkl", "distillm", "seqkd", "kd-fkl"]


def merged_rows(steps_rows, time_rows):
    """The 100-step grid's rows plus the equal-time grid's, whose kd-fkl is renamed LONG; tasks both grids ran."""
    tasks = {r["task"] for r in time_rows}
    long = [{**r, "method": LONG} for r in time_rows if r["method"] == "kd-fkl"]
    return [r for r in steps_rows if r["task"] in tasks] + long


def read_rows(folder):
    return json.loads(grid_file(folder, "rows.json").read_text())


def steps_text(steps):
    return " / ".join(str(s) for s in sorted(steps)) or "-"


def report(rows):
    parts = []
    for task in sorted({r["task"] for r in rows}):
        mine = [r for r in rows if r["task"] == task]
        methods = [LONG] + sorted({r["method"] for r in mine} - {LONG})
        long, short = ({r["steps"] for r in mine if (r["method"] == LONG) == is_long} for is_long in (True, False))
        steps = f"`{LONG}`: {steps_text(long)} steps; the other methods {steps_text(short)}."
        parts += paired_section(task, mine, methods, LONG, [(LONG, m) for m in AGAINST], intro=[steps, ""])
    return parts


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default=str(ROOT), help="the folder holding both grids' results folders")
    p.add_argument("--out", default=str(ROOT / "onpolicy-equal-time"))
    args = p.parse_args(argv)
    results, out = Path(args.results), Path(args.out)
    rows = merged_rows(read_rows(results / "onpolicy"), read_rows(results / "onpolicy-walltime"))
    record = provenance(out)
    parts = [header("Off-policy KD at the training time of on-policy GKD", record) +
             f"`{LONG}` is `benchmarks/onpolicy-walltime.yaml`'s forward-KL KD, given the steps that take about the "
             "training time of a GKD lmbda-1 cell; the other rows are `benchmarks/onpolicy.yaml`'s 100-step cells. "
             f"Differences are method − {LONG} over the seeds both have (negative = lower, i.e. better); train s is "
             "each cell's training time (generation included), the quantity held equal.", ""] + report(rows)
    write_paired_report(out, parts, rows, record)


if __name__ == "__main__":
    main()
