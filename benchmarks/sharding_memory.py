"""Per-process model memory and step time under train.sharding: none and fsdp, at 2 processes (torchrun, gloo on CPU,
or NCCL on 2 GPUs).

Each mode runs `torchrun --nproc_per_node 2 benchmarks/sharding_memory.py --one MODE`. Every process builds
configs/demo.yaml's pair (the built-in SmolLM2-135M-Instruct teacher, run online, and the fresh 6 x 256 student)
through lmdistill's own Trainer, which shards both under fsdp, and trains --steps steps of the demo's objectives
(CE + forward-KL KD, batch 4 per process). It reports what this process holds, tensor by tensor (the local shards
under fsdp; a tied tensor once):
- the teacher's parameters; the student's parameters; the student's gradients (just before each optimizer step:
  they are freed after it); the AdamW state;
- its resident memory after the steps and at its peak, which also count activations, libraries and the data (every
  process loads both models whole before sharding them, so the peak is that of the load);
- the median step time after 2 warm-up steps.
The report gives fsdp / none for each. `--out` receives rows.json (both modes, both processes, every step time),
provenance.json and README.md.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, provenance, write_provenance  # noqa: E402


def local_bytes(tensors):
    """Bytes of the tensors this process holds (a DTensor's local shard), each storage counted once."""
    from torch.distributed.tensor import DTensor
    seen, total = set(), 0
    for t in tensors:
        t = t.to_local() if isinstance(t, DTensor) else t
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


def rss_bytes():
    """This process's resident memory now (Linux)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(mode, steps):
    import resource

    from accelerate.utils import gather_object

    from lmdistill.build import build_parts, wrap
    from lmdistill.config import load_config
    from lmdistill.run import make_accelerator, seed_everything
    from lmdistill.train.loop import Trainer
    quiet = lambda *_: None  # noqa: E731
    workdir = tempfile.mkdtemp(prefix="sharding-memory-")
    config = load_config("configs/demo.yaml", [f"run_dir={workdir}", f"train.steps={steps}", f"train.sharding={mode}",
                                               "train.batch_size=4", "train.eval_every=0", "data.max_train_examples=400"])
    accelerator = make_accelerator(config)
    seed_everything(config.seed)
    parts = build_parts(config, log=quiet)
    parts.teacher.to(accelerator.device)
    student_lm, teacher = wrap(parts)
    trainer = Trainer(parts, student_lm, teacher, accelerator, workdir, quiet)
    trainer.student.train()
    grads = []
    real_step = trainer.optimizer.step

    def step_and_count(*args, **kwargs):
        grads.append(local_bytes(p.grad for p in trainer.student.parameters() if p.grad is not None))
        return real_step(*args, **kwargs)
    trainer.optimizer.step = step_and_count
    times = []
    for k in range(steps):
        started = time.perf_counter()
        trainer.train_step(k)
        times.append(time.perf_counter() - started)
    optimizer_state = [v for s in trainer.optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
    row = {"mode": mode, "rank": accelerator.process_index, "processes": accelerator.num_processes,
           "teacher_params": local_bytes(teacher.model.parameters()),
           "student_params": local_bytes(trainer.student.parameters()),
           "student_grads": max(grads), "optimizer_state": local_bytes(optimizer_state),
           "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "rss_after": rss_bytes(),
           "step_seconds": [round(t, 4) for t in times], "median_step_s": statistics.median(times[2:])}
    row["model_total"] = sum(row[k] for k in ("teacher_params", "student_params", "student_grads", "optimizer_state"))
    rows = gather_object([row])
    if accelerator.is_main_process:
        print("ROWS " + json.dumps(rows), flush=True)
    accelerator.end_training()


def report(rows, record, steps):
    by = {(r["mode"], r["rank"]): r for r in rows}
    gib = 2 ** 30
    keys = [("teacher_params", "teacher parameters"), ("student_params", "student parameters"),
            ("student_grads", "student gradients"), ("optimizer_state", "AdamW state"),
            ("model_total", "model memory, all four"), ("rss_after", "RSS after the steps"), ("peak_rss", "peak RSS")]
    lines = ["| per process | none, rank 0 | fsdp, rank 0 | fsdp, rank 1 | fsdp / none (rank 0) |", "|---|---|---|---|---|"]
    for key, name in keys:
        a, b, c = by[("none", 0)][key], by[("fsdp", 0)][key], by[("fsdp", 1)][key]
        lines.append(f"| {name} (GiB) | {a / gib:.3f} | {b / gib:.3f} | {c / gib:.3f} | {b / a:.2f} |")
    a, b = by[("none", 0)]["median_step_s"], by[("fsdp", 0)]["median_step_s"]
    lines.append(f"| median step time (s) | {a:.3f} | {b:.3f} | {by[('fsdp', 1)]['median_step_s']:.3f} | {b / a:.2f} |")
    return (header("Sharding: per-process memory and step time, none vs fsdp at 2 processes", record)
            + f"configs/demo.yaml's pair (SmolLM2-135M-Instruct teacher online, fresh 6 x 256 student), CE + forward-KL "
              f"KD, batch 4 per process, {steps} steps; memory counted tensor by tensor (local shards; gradients just "
              f"before an optimizer step). Target: model memory per process <= 0.6x of none. Method: the script's "
              f"docstring; every step time: rows.json.\n\n" + "\n".join(lines) + "\n")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=12, help="at least 3: the step time is the median after 2 warm-up steps")
    p.add_argument("--out", default="benchmarks/results/sharding")
    p.add_argument("--one", choices=["none", "fsdp"], help=argparse.SUPPRESS)  # under torchrun
    args = p.parse_args()
    if args.steps < 3:
        p.error(f"--steps {args.steps}: at least 3 (the step time is the median after 2 warm-up steps)")
    if args.one:
        measure(args.one, args.steps)
        return
    record = provenance(args.out)
    torchrun = str(Path(sys.executable).parent / "torchrun")
    rows = []
    for mode in ("none", "fsdp"):
        child = subprocess.run([torchrun, "--nproc_per_node", "2", __file__, "--one", mode, "--steps", str(args.steps)],
                               capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
        found = [line for line in child.stdout.splitlines() if line.startswith("ROWS ")]
        if child.returncode != 0 or not found:
            sys.exit(f"{mode}: exit {child.returncode}\n{child.stderr[-3000:]}")
        rows += json.loads(found[-1][5:])
        print(json.dumps(rows[-2:]), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "rows.json").write_text(json.dumps(rows, indent=1))
    write_provenance(out / "provenance.json", record)
    text = report(rows, record, args.steps)
    (out / "README.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
