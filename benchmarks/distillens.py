"""DistillLens vs logit KD at the same budget: held-out CE and KL(teacher||student) per response token.

Every method trains the same fresh student (same init and data order per seed: paired) for the same steps:
- kd-fkl: 0.5 CE + 0.5 forward KL (the `kd` preset), kd-rkl: 0.5 CE + 0.5 reverse KL;
- distillens: reverse KL + 1.0 lens, no CE (the shipped DistillLens config; lens = JSD beta 0.5 over 5 uniform
  layer pairs, final norm applied); distillens+ce: 0.5 CE + 0.5 (reverse KL + lens);
- two ablations: rkl (reverse KL alone, no CE: distillens without the lens) and distillens-raw (the lens on the
  raw residual stream, final_norm false, as in the reference code).

    .venv/bin/python benchmarks/distillens.py --steps 300 --seeds 0 1 2
"""
import json
from pathlib import Path

from common import cells_code, grid_parser, header, mean_std, paired, per_seed, provenance, train_cell, write_provenance
from lmdistill.objectives.presets import expand_preset

RKL = {"name": "logit_kd", "divergence": "reverse_kl"}
METHODS = {
    "kd-fkl": expand_preset("kd"),
    "kd-rkl": [{"name": "ce", "weight": 0.5}, {**RKL, "weight": 0.5}],
    "rkl": [{**RKL, "weight": 1.0}],
    "distillens": expand_preset("distillens"),
    "distillens+ce": expand_preset("distillens+ce"),
    "distillens-raw": [{**RKL, "weight": 1.0}, {"name": "lens", "weight": 1.0, "final_norm": False}],
}
# (method, reference): the questions the table answers
COMPARISONS = [("distillens", "kd-fkl"), ("distillens", "kd-rkl"), ("distillens+ce", "kd-fkl"),
               ("distillens+ce", "kd-rkl"), ("distillens", "rkl"), ("distillens-raw", "distillens"),
               ("distillens-raw", "rkl")]


def table(rows, seeds):
    """Methods run for only some of the seeds are listed with those seeds (n), paired over the seeds both have."""
    by = {(r["method"], r["seed"]): r for r in rows}
    have = {m: [s for s in seeds if (m, s) in by] for m in METHODS}
    lines = ["| method | n seeds | dev CE | dev KL(T‖S) | CE − kd-fkl (paired) | KL − kd-fkl (paired) | s/run |",
             "|---|---|---|---|---|---|---|"]
    for method in [m for m in METHODS if have[m]]:
        mine = [by[(method, s)] for s in have[method]]
        both = [s for s in have[method] if s in have["kd-fkl"]]
        lines.append(f"| {method} | {len(mine)} | {mean_std([r['ce'] for r in mine])} | "
                     f"{mean_std([r['kl'] for r in mine])} | {paired(by, method, 'kd-fkl', 'ce', both)} | "
                     f"{paired(by, method, 'kd-fkl', 'kl', both)} | {sum(r['seconds'] for r in mine) / len(mine):.0f} |")
    lines += ["", "Paired differences seed by seed; negative = the first method is better:", "",
              "| comparison | seeds | dev CE | dev KL(T‖S) |", "|---|---|---|---|"]
    for method, reference in COMPARISONS:
        both = [s for s in have[method] if s in have[reference]]
        if both:
            lines.append(f"| {method} − {reference} | {' / '.join(map(str, both))} | "
                         f"{per_seed(by, method, reference, 'ce', both)} | {per_seed(by, method, reference, 'kl', both)} |")
    return "\n".join(lines)


def main():
    p = grid_parser(__doc__, steps=300, out="benchmarks/results/distillens", methods=METHODS)
    p.add_argument("--report-only", action="store_true", help="write the report from the finished cells, train nothing")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = provenance(out)
    done = out / "rows.jsonl"  # one line per finished cell: an interrupted benchmark resumes where it stopped
    rows = [json.loads(line) for line in done.read_text().splitlines()] if done.exists() else []
    for seed in [] if args.report_only else args.seeds:
        for method in args.methods:
            if any(r["method"] == method and r["seed"] == seed and r["steps"] == args.steps for r in rows):
                continue
            cell = train_cell(METHODS[method], out / "runs" / f"{method}-seed{seed}", seed, args.steps,
                              args.eval_examples)
            rows.append({"method": method, "seed": seed, "steps": args.steps, **cell})
            with done.open("a") as f:
                f.write(json.dumps(rows[-1]) + "\n")
            print(json.dumps(rows[-1]), flush=True)
    rows = [r for r in rows if r["steps"] == args.steps]
    write_provenance(out / "provenance.json", record)
    report = (header("DistillLens vs logit KD at equal budget", record)
              + f"Student: configs/demo.yaml's fresh 6x256 llama (6 layers; lens pairs teacher 5/10/15/20/25 -> student "
                f"1/2/3/4/5), {args.steps} steps x batch 8, lr 1e-3, define-word; metrics on {args.eval_examples} dev "
                f"examples (teacher-forced, nats per response token); seeds {args.seeds}, paired (same init and data "
                f"order). s/run is wall time on a shared 2-core machine, not a timing measurement. Methods: see the script's docstring. "
                f"Per-cell numbers (and each cell's commit): rows.jsonl; {cells_code(rows)}.\n\n" + table(rows, args.seeds) + "\n")
    (out / "README.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
