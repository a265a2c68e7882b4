"""Peak memory and time of Flex-KD's selection pass (teacher gradients over the calibration examples): batches of a
fixed number of examples (8, as before) vs batches bounded by padded tokens (data.token_batches, what lmdistill uses).

Setting: configs/demo.yaml with the flexkd preset (teacher SmolLM2-135M-Instruct, layers of the 6-layer student's
map), its 256 calibration examples, on each task: define-word (max_length 128) and spam (emails, max_length 384).
Each (task, batching) runs in its own process: extra peak = peak RSS during the pass minus the RSS held before it
(teacher, tokenizer and data loaded). Every batching must give the same selection (checked: same indices per layer).

    .venv/bin/python benchmarks/selection_memory.py
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from common import header, provenance, write_provenance
from lmdistill.provenance import peak_memory_gib, reset_peak_memory, rss_gib
from lmdistill.data.batches import CALIBRATION_BATCH_TOKENS

TASKS = {"define-word": [], "spam": ["data.builtin=spam", "data.max_length=384"]}


def measure(task, batching):
    """In a fresh process: one selection pass with `batching` ('examples:N' or 'tokens:N')."""
    from lmdistill.build import build_parts
    from lmdistill.config import load_config
    from lmdistill.data import in_batches, token_batches
    from lmdistill.features import selectors
    config = load_config("configs/demo.yaml", ["objectives=flexkd", "run_dir=/tmp/selection_memory", *TASKS[task]])
    parts = build_parts(config, splits=("train",), log=lambda *_: None)
    feature = next(o for o in parts.objectives if o.name == "feature")
    calibration = feature.selection_pass().calibration(parts.splits["train"].examples)
    pad, (kind, size) = parts.tokenizer.pad_token_id, batching.split(":")
    batches = (in_batches(calibration, pad, int(size)) if kind == "examples" else
               token_batches(calibration, pad, int(size)))
    teacher = parts.teacher.requires_grad_(False)
    reset_peak_memory()
    before = rss_gib()
    started = time.perf_counter()
    found = selectors.teacher_gradients(teacher, batches, feature.teacher_layers())
    chosen = {t: selectors.flexkd(g, h, feature.d_student).indices.tolist() for t, (g, h) in found.items()}
    seconds = time.perf_counter() - started
    peak = peak_memory_gib()["peak_rss_gib"]
    lengths = [len(e.input_ids) for e in calibration]
    return {"task": task, "batching": batching, "examples": len(calibration),
            "mean_tokens": sum(lengths) / len(lengths), "max_tokens": max(lengths),
            "response_tokens": len(next(iter(found.values()))[0]),
            "extra_peak_gib": round(peak - before, 3), "peak_rss_gib": round(peak, 3), "seconds": round(seconds, 1),
            "indices": {str(t): v for t, v in chosen.items()}}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--batchings", nargs="+", default=["examples:8", f"tokens:{CALIBRATION_BATCH_TOKENS}"])
    p.add_argument("--out", default="benchmarks/results/selection_memory")
    p.add_argument("--one", nargs=2, metavar=("TASK", "BATCHING"), help=argparse.SUPPRESS)  # the child process
    args = p.parse_args()
    if args.one:
        print(json.dumps(measure(*args.one)))
        return
    record = provenance(args.out)
    rows = []
    for task in args.tasks:
        for batching in args.batchings:
            child = subprocess.run([sys.executable, __file__, "--one", task, batching], capture_output=True, text=True)
            if child.returncode:
                sys.exit(f"{task} / {batching} failed:\n{child.stderr[-2000:]}")
            rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
            print({k: v for k, v in rows[-1].items() if k != "indices"}, flush=True)
    for row in rows:  # batching changes memory, never the selection
        first = next(r for r in rows if r["task"] == row["task"])
        assert row["indices"] == first["indices"], f"{row['task']}: {row['batching']} selects other coordinates"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "rows.json").write_text(json.dumps(rows, indent=1))
    write_provenance(out / "provenance.json", record)
    lines = ["| task | calibration tokens (mean / max) | batching | extra peak RSS GiB | peak RSS GiB | seconds |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['task']} | {r['mean_tokens']:.0f} / {r['max_tokens']} | {r['batching']} | "
                     f"{r['extra_peak_gib']:.2f} | {r['peak_rss_gib']:.2f} | {r['seconds']:.0f} |")
    report = (header("Flex-KD selection pass: memory by batching", record)
              + "256 calibration examples per task, teacher SmolLM2-135M-Instruct in float32 on CPU, flexkd preset's "
                "teacher layers. `examples:N`: N examples per batch; `tokens:N`: at most N padded tokens per batch "
                f"(lmdistill's default is tokens:{CALIBRATION_BATCH_TOKENS}). Every batching selected the same "
                "coordinates (checked). Extra "
                "peak = peak RSS during the pass (VmHWM, reset before it) minus the RSS before it. Setup: the script's "
                "docstring.\n\n"
              + "\n".join(lines) + "\n")
    (out / "README.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
