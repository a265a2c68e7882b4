"""Flex-KD vs its controls at the same budget: held-out CE and KL(teacher||student) per response token.

Each method trains the same fresh student (same init and data order per seed: paired) with
CE + 1.0 * feature(selector, pearson, last layer); `sft` is CE alone. A selector's artifact is computed
once and shared by its seeds (it does not depend on the seed). Writes a Markdown table with mean +/- std
over seeds and the paired difference to flexkd.

    .venv/bin/python benchmarks/feature_selectors.py --steps 300 --seeds 0 1 2 \
        --out benchmarks/results/feature_selectors_300
"""
import json
import statistics
from pathlib import Path

from common import cells_code, grid_parser, header, mean_std, paired, provenance, train_cell, write_provenance
from lmdistill.features.registry import get_selector

METHODS = {
    "sft": [{"name": "ce", "weight": 1.0}],
    **{s: [{"name": "ce", "weight": 1.0}, {"name": "feature", "weight": 1.0, "selector": s, "metric": "pearson"}]
       for s in ("flexkd", "functional", "projection", "pca", "random")},
}


def run(method, seed, args):
    objectives = [dict(o) for o in METHODS[method]]
    for o in objectives:
        if o["name"] == "feature" and get_selector(o["selector"]).selects:
            o["selection_file"] = str(Path(args.out) / "selection" / f"{o['selector']}.safetensors")
    row = train_cell(objectives, Path(args.out) / "runs" / f"{method}-seed{seed}", seed, args.steps, args.eval_examples)
    return {"method": method, "seed": seed, **row}


def table(rows, seeds):
    lines = ["| method | dev CE | dev KL(T‖S) | CE − flexkd (paired) | KL − flexkd (paired) | s/run |",
             "|---|---|---|---|---|---|"]
    by = {(r["method"], r["seed"]): r for r in rows}
    for method in [m for m in METHODS if (m, seeds[0]) in by]:
        mine = [by[(method, s)] for s in seeds]
        lines.append(f"| {method} | {mean_std([r['ce'] for r in mine])} | {mean_std([r['kl'] for r in mine])} | "
                     f"{paired(by, method, 'flexkd', 'ce', seeds)} | {paired(by, method, 'flexkd', 'kl', seeds)} | "
                     f"{statistics.mean(r['seconds'] for r in mine):.0f} |")
    return "\n".join(lines)


def main():
    p = grid_parser(__doc__, steps=150, out="benchmarks/results/feature_selectors", methods=METHODS)
    args = p.parse_args()
    record = provenance(args.out)
    rows = []
    for seed in args.seeds:
        for method in args.methods:
            rows.append(run(method, seed, args))
            print(json.dumps(rows[-1]), flush=True)
    out = Path(args.out)
    (out / "rows.json").write_text(json.dumps(rows, indent=1))
    write_provenance(out / "provenance.json", record)
    report = (header("Feature selectors at equal budget", record) + f"Student: configs/demo.yaml's fresh 6x256 llama, {args.steps} steps x batch 8, "
              f"define-word; metrics on {args.eval_examples} dev examples (teacher-forced, per response token); "
              f"seeds {args.seeds}; feature = pearson on the last layer, weight 1.0, beside CE 1.0; selections from the "
              f"first 256 training examples, computed once per selector (`selection/`; the first seed's run includes that pass). Per-cell numbers: rows.json; "
              f"{cells_code(rows)}.\n\n"
              + table(rows, args.seeds) + "\n")
    (out / "README.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
