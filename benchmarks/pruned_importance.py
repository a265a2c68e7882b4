"""Which teacher directions should a student cut from the teacher keep? activation vs flexkd vs functional.

Each importance cuts the same 8 of SmolLM2-135M's 30 layers and keeps 252 of its 576 residual dimensions
(student.from_teacher), then trains with CE alone (no teacher signal, so only the initialisation differs)
for the same steps and data order per seed. Reports dev CE and KL(teacher||student) per response token
before training and after, mean +/- std over seeds, and the paired difference to activation.

    .venv/bin/python benchmarks/pruned_importance.py --steps 200 --seeds 0 1 2
"""
import json
import time
from pathlib import Path

from lmdistill.build import build_parts, wrap
from common import cells_code, grid_parser, header, mean_std, paired, provenance, write_provenance
from lmdistill.config import load_config
from lmdistill.eval.teacher_forced import teacher_forced
from lmdistill.run import train

IMPORTANCES = ("activation", "flexkd", "functional")


def overrides(importance, seed, steps, out, args):
    return [f"run_dir={out}", f"seed={seed}", "student.spec=null",
            f"student.from_teacher={{layers: 8, importance: {importance}, "
            f"calibration_examples: {args.calibration_examples}}}",
            "objectives=sft", f"train.steps={steps}", "train.eval_every=0", f"eval.max_examples={args.eval_examples}",
            "eval.generate=false", "eval.split=dev"]


def before_training(importance, args):
    config = load_config("configs/demo.yaml", overrides(importance, 0, 1, "unused", args))
    started = time.time()
    parts = build_parts(config, splits=("train", "dev"), log=lambda *_: None)
    seconds = time.time() - started
    student, teacher = wrap(parts)
    dev = parts.splits["dev"].examples[:args.eval_examples]
    metrics = teacher_forced(student, teacher, dev, 16, parts.tokenizer.pad_token_id)
    return {"importance": importance, "ce0": metrics["ce"], "kl0": metrics["kl"], "build_seconds": seconds,
            "parameters": sum(p.numel() for p in parts.student.parameters())}


def run(importance, seed, args):
    out = Path(args.out) / "runs" / f"{importance}-seed{seed}"
    config = load_config("configs/demo.yaml", overrides(importance, seed, args.steps, out, args))
    started = time.time()
    result = train(config, overwrite=True, log=lambda *_: None)
    row, git = result["metrics"]["student"], result["provenance"]["git"]
    return {"importance": importance, "seed": seed, "ce": row["ce"], "kl": row["kl"], "seconds": time.time() - started,
            "commit": git["commit"], "clean": git["clean"]}


def table(starts, rows, seeds):
    lines = ["| importance | parameters | dev CE before | dev KL before | dev CE after | dev KL after | "
             "CE − activation (paired) | KL − activation (paired) |", "|---|---|---|---|---|---|---|---|"]
    by = {(r["importance"], r["seed"]): r for r in rows}
    for start in starts:
        name = start["importance"]
        mine = [by[(name, s)] for s in seeds]
        lines.append(f"| {name} | {start['parameters'] / 1e6:.1f}M | {start['ce0']:.3f} | {start['kl0']:.3f} | "
                     f"{mean_std([r['ce'] for r in mine])} | {mean_std([r['kl'] for r in mine])} | "
                     f"{paired(by, name, 'activation', 'ce', seeds)} | {paired(by, name, 'activation', 'kl', seeds)} |")
    return "\n".join(lines)


def main():
    p = grid_parser(__doc__, steps=200, out="benchmarks/results/pruned_importance")
    p.add_argument("--calibration-examples", type=int, default=256, help="examples that score the teacher's dims")
    args = p.parse_args()
    record = provenance(args.out)
    starts = [before_training(name, args) for name in IMPORTANCES]
    print(json.dumps(starts), flush=True)
    rows = []
    for seed in args.seeds:
        for name in IMPORTANCES:
            rows.append(run(name, seed, args))
            print(json.dumps(rows[-1]), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "rows.json").write_text(json.dumps({"before": starts, "after": rows}, indent=1))
    write_provenance(out / "provenance.json", record)
    report = (header("Cutting a student from the teacher: which directions to keep", record) +
              f"Student: layers [0, 4, 8, 12, 17, 21, 25, 29] of SmolLM2-135M-Instruct, 252 of 576 residual dims "
              f"(student.from_teacher, {args.calibration_examples} calibration examples); trained with CE alone "
              f"(objectives: sft), {args.steps} steps x batch 8 at configs/demo.yaml's lr, define-word; metrics on "
              f"{args.eval_examples} dev examples (teacher-forced, nats per response token); seeds {args.seeds}. "
              f"`functional` rotates the residual stream, which folds the final norm into an untied lm_head: more "
              f"parameters. Per-seed numbers: rows.json; {cells_code(rows)}.\n\n"
              + table(starts, rows, args.seeds) + "\n")
    (out / "README.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
