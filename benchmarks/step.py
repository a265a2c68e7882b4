"""Time of one distillation step against its floor and against TRL, and each step's peak memory.

Modes, each a full optimizer step (forward, backward, gradient clipping at 1.0, AdamW step) on the same batches:
- floor: the teacher's forward (no_grad; logits at response positions) + the student's forward with plain CE,
  backward and step. No trainer around it: the least any logit distillation step must do.
- floor+lens: the floor plus what any logit lens must compute: the teacher's LM head on its lens rows (5 layers x
  response positions) and the student's LM head forward and backward on its own, with no divergence.
- kd (ce 0.5 + forward-KL 0.5, the demo's objectives), feature (flexkd: ce + Flex-KD feature loss), lens
  (distillens+ce: ce + reverse KL + 5-pair logit lens): lmdistill's `Trainer.train_step`, online teacher.
- kd-cache: kd with the teacher read from a teacher cache (logits: head) instead of run online.
- fkl: forward KL alone (no CE), the setting TRL's trainers run: compared with
  - trl-gkd: trl.experimental.gkd.GKDTrainer (off-policy: lmbda 0, beta 0 = forward KL, temperature 1), and
  - trl-distill: trl.DistillationTrainer (beta 0, temperature 1): its `compute_loss` (chunked JSD through the LM
    heads), backward, clipping and step on our completions (it generates its own completions on-policy; that
    generation is not timed),
  on the same models (each mode trains its own copy of the same initial student) and the same token ids.
The cross-tokenizer pair (--pair gemma-smollm2: Gemma-3-270m -> SmolLM2-135M-Instruct, each model on its own
tokenization of the batch; step_cross.py) has its own modes:
- x-floor: the teacher's forward on its own encoding with its LM head on its response rows (no_grad) + the student's
  forward with plain CE, backward and step;
- x-uld (ce + uld), x-gold (ce + gold), x-feature (ce + feature, flexkd + pearson; its selection pass runs once
  before timing): lmdistill's `Trainer.train_step`;
- x-uld-only: uld alone, compared with
  - trl-gold: trl.experimental.gold.GOLDTrainer, extended ULD with the "bayesian" merge, off-policy (step_gold.py),
  with the first step's loss also computed our way under TRL's normalisation (per example, then the batch mean).
Times: the modes interleaved in one process, --repeats rounds after --warmup rounds, median seconds per step.
Memory: each mode again in its own process: peak RSS (VmHWM, reset after warm-up) over 3 steps, and its
increase over the RSS held before the first step (models, optimizer state after warm-up).
TRL is installed only in the benchmark environment: `make bench-env`, then run with .venv-bench/bin/python.

    .venv-bench/bin/python benchmarks/step.py              # the built-in pair: SmolLM2-135M -> 6 x 256 student
    .venv-bench/bin/python benchmarks/step.py --pair tiny  # a random 4 x 128 teacher -> 2 x 64 student, quick
    .venv-bench/bin/python benchmarks/step.py --pair gemma-smollm2  # Gemma-3-270m -> SmolLM2-135M-Instruct
    .venv-bench/bin/python benchmarks/step.py --pair onpolicy  # the built-in pair, on-policy steps
"""
import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from tqdm import tqdm

from common import provenance, write_provenance
from lmdistill.provenance import peak_memory_gib, reset_peak_memory, rss_gib
from step_cross import PAIR, uld_first_batch
from step_modes import ALL_MODES, ROOT, has_trl, load, make, modes_of, objective_context
from step_onpolicy import ONPOLICY
from step_report import report


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def profile(runner, first_step, steps=3):
    """torch profiler's table of the operators taking the most time over `steps` steps."""
    from torch.profiler import ProfilerActivity
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with torch.profiler.profile(activities=activities) as prof:
        for k in range(first_step, first_step + steps):
            runner.step(k)
    sort = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=sort, row_limit=15)


def time_modes(args, modes, workdir):
    parts, batches = load(args, workdir)
    runners = {mode: make(mode, parts, batches, workdir) for mode in modes}
    comparison = first_step_comparison(parts, batches, runners) if args.pair == PAIR else None
    times = {mode: [] for mode in modes}
    first_loss = {}
    rounds = tqdm(range(args.warmup + args.repeats), desc=f"rounds of every mode ({args.warmup} warm-up)",
                  file=sys.stderr)
    for r in rounds:
        for mode, runner in runners.items():  # interleaved: a slow phase of the machine hits every mode alike
            sync()
            start = time.perf_counter()
            loss = runner.step(r)
            sync()
            first_loss.setdefault(mode, loss)
            if r >= args.warmup:
                times[mode].append(time.perf_counter() - start)
    tokens = sum(int(b["attention_mask"].sum()) for b in batches) / len(batches)
    profiled = [mode for mode in args.profile if mode in runners]
    if profiled:
        print(f"profiling {', '.join(profiled)}: 3 steps each", file=sys.stderr)
    profiles = {mode: profile(runners[mode], args.warmup + args.repeats) for mode in profiled}
    return profiles, {mode: {"median_s": statistics.median(t), "min_s": min(t), "max_s": max(t),
                             "first_loss": first_loss[mode], "rounds_s": t} for mode, t in times.items()}, tokens, \
        comparison


def first_step_comparison(parts, batches, runners):
    """Our ULD on the first batch with the initial student, ours and under TRL's normalisation, and (with trl-gold)
    in how many of its examples TRL's aligned groups are ours."""
    out = uld_first_batch(parts, batches[0], objective_context(parts))
    if "trl-gold" in runners:
        paired = parts.splits["train"].paired
        ours = [paired.groups[i] for i in batches[0]["index"].tolist()]
        out["same_groups"] = sum(a == b for a, b in zip(runners["trl-gold"].groups(0), ours))
        out["examples"] = len(ours)
    return out


def memory_of(args, mode, workdir):
    """In this (fresh) process: peak RSS over 3 steps of `mode` after 2 warm-up steps, and the increase over before."""
    parts, batches = load(args, workdir)
    runner = make(mode, parts, batches, workdir)
    for k in range(2):
        runner.step(k)
    before = rss_gib()
    reset_peak_memory()
    for k in range(2, 5):
        runner.step(k)
    peak = peak_memory_gib()  # since the reset: these 3 steps
    return {**peak, "step_increase_gib": peak["peak_rss_gib"] - before}


def memory_modes(args, modes):
    out = {}
    for mode in tqdm(modes, desc="peak memory, one process per mode", file=sys.stderr):
        cmd = [sys.executable, __file__, "--memory-of", mode, "--pair", args.pair, "--batch-size", str(args.batch_size),
               "--max-length", str(args.max_length), "--batches", str(args.batches)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"memory of {mode} failed:\n{done.stderr[-3000:]}")
        out[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pair", choices=["builtin", "tiny", PAIR, ONPOLICY], default="builtin",
                   help=f"{ONPOLICY}: the built-in pair's on-policy steps (step_onpolicy.py)")
    p.add_argument("--modes", nargs="+", choices=ALL_MODES, default=None,
                   help="default: all of the pair's (TRL's when installed)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--batches", type=int, default=4, help="distinct batches, cycled")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--no-memory", action="store_true", help="skip the per-mode memory processes")
    p.add_argument("--profile", nargs="*", default=["floor+lens", "lens"], choices=ALL_MODES,
                   help="modes whose operator profile is added to the report")
    p.add_argument("--out", default=None, help="default: benchmarks/results/step/PAIR.md")
    p.add_argument("--memory-of", help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        if args.memory_of:
            print(json.dumps(memory_of(args, args.memory_of, Path(tmp))))
            return
        modes = args.modes or [m for m in modes_of(args.pair) if has_trl() or "trl-" not in m]
        if set(modes) - set(modes_of(args.pair)):
            p.error(f"the {args.pair} pair's modes are {', '.join(modes_of(args.pair))}")
        out = Path(args.out or ROOT / f"benchmarks/results/step/{args.pair}.md")
        record = provenance(out.parent)
        profiles, times, tokens, comparison = time_modes(args, modes, Path(tmp))
    memory = {} if args.no_memory else memory_modes(args, modes)
    text = report(args, times, tokens, memory, modes, record, comparison)
    for mode, table in profiles.items():
        text += f"\n## Profile of {mode} (3 steps)\n\n```\n{table}\n```\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    (out.with_suffix(".json")).write_text(json.dumps({"times": times, "memory": memory, "tokens": tokens,
                                                       "first_step_uld": comparison}, indent=1))
    write_provenance(out.with_suffix(".provenance.json"), record)
    print(text)


if __name__ == "__main__":
    main()
