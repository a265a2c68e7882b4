"""Several compare grids read as one: grids that share their base config, tasks and seeds (e.g.
benchmarks/onpolicy.yaml and benchmarks/onpolicy-gjsd.yaml, whose cells differ only in the method) pair cell by cell,
so their methods can be compared seed by seed like the methods of one grid.

Nothing is trained: the script reads each grid's rows.json and resolved compare.yaml from the results folder and
writes OUT (report.md, rows.json, provenance.json): per task, the compare report's table over every method of the
grids and the chosen comparisons with Holm's adjustment over them. Grids whose base, seeds or shared tasks differ are
refused (their cells would not pair), as is a method name two grids both use.

    python benchmarks/joined.py onpolicy onpolicy-gjsd --baseline kd-fkl \\
        --compare gkd1-gjsd:gkd1-fkl gkd1-gjsd:gkd1-rkl --out benchmarks/results/onpolicy-joined
"""
import argparse
import json
from pathlib import Path

import yaml

from common import fail, grid_file, header, paired_section, provenance, write_paired_report

ROOT = Path(__file__).resolve().parent / "results"


def read_grid(results, name):
    """(compare.yaml as resolved by compare, rows) of one grid's results folder."""
    spec, rows = (grid_file(results / name, part) for part in ("compare.yaml", "rows.json"))
    return yaml.safe_load(spec.read_text()), json.loads(rows.read_text())


def check_pairable(grids):
    """Refuse grids whose cells would not pair: another base, seeds, teacher or cache, a shared task set differently,
    or a method name used twice."""
    (first, (spec, _)), owner = next(iter(grids.items())), {}
    for name, (other, rows) in grids.items():
        for key in ("base_file", "base", "seeds", "teacher", "cache"):
            if other.get(key) != spec.get(key):
                fail(f"grids {first} and {name} differ in `{key}`, so their cells do not pair; join grids that "
                     "differ only in their methods")
        for task in set(spec["tasks"]) & set(other["tasks"]):
            if other["tasks"][task] != spec["tasks"][task]:
                fail(f"grids {first} and {name} set task {task} differently, so its cells do not pair")
        for method in {r["method"] for r in rows}:
            if method in owner:
                fail(f"method {method} is in both {owner[method]} and {name}; join grids with distinct method names")
            owner[method] = name


def task_parts(rows, baseline, pairs):
    """The report sections, one per task that has the baseline."""
    parts = []
    for task in sorted({r["task"] for r in rows}):
        mine = [r for r in rows if r["task"] == task]
        if baseline not in {r["method"] for r in mine}:
            parts += [f"## {task}", "", f"(no cells of the baseline {baseline} on this task: not compared)", ""]
            continue
        methods = [baseline] + sorted({r["method"] for r in mine} - {baseline})
        chosen = [(a, b) for a, b in pairs if {a, b} <= set(methods)]
        parts += paired_section(task, mine, methods, baseline, chosen)
    return parts


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("grids", nargs="+", help="results folder names, e.g. onpolicy onpolicy-gjsd")
    p.add_argument("--baseline", required=True, help="the method every table's differences are taken against")
    p.add_argument("--compare", nargs="*", default=[], metavar="METHOD:REFERENCE", help="comparisons to report")
    p.add_argument("--results", default=str(ROOT), help="the folder holding the grids' results folders")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    pairs = [tuple(text.split(":")) for text in args.compare]
    if any(len(pair) != 2 for pair in pairs):
        fail("--compare takes METHOD:REFERENCE pairs, e.g. gkd1-gjsd:gkd1-fkl")
    grids = {name: read_grid(Path(args.results), name) for name in args.grids}
    check_pairable(grids)
    rows = [r for _, grid_rows in grids.values() for r in grid_rows]
    known = {r["method"] for r in rows}
    unknown = sorted({m for pair in pairs for m in pair} - known) + sorted({args.baseline} - known)
    if unknown:
        fail(f"no cells of method(s) {', '.join(unknown)} in {', '.join(args.grids)}; "
             f"methods: {', '.join(sorted(known))}")
    out = Path(args.out)
    record = provenance(out)
    intro = (f"The cells of {', '.join(f'`{g}`' for g in args.grids)} (benchmarks/results/), paired seed by seed: "
             "the grids share their base config, tasks and seeds, so a seed gives every method the same student "
             f"initialisation and batches. Differences are method − {args.baseline}.")
    parts = [header(f"Joined grids: {' + '.join(args.grids)}", record) + intro, ""]
    parts += task_parts(rows, args.baseline, pairs)
    write_paired_report(out, parts, rows, record)


if __name__ == "__main__":
    main()
