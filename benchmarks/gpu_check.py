"""The CUDA path on tiny random models that carry the real tokenizers (SmolLM2's, and Gemma-3's for the
cross-tokenizer case): each case trains a few steps three times, on CPU in float32, on the GPU in float32 and on the
GPU with bf16 mixed precision, from the same seeded weights. It records every step's losses, the first step's
CPU/GPU agreement (that step sees identical weights and data), the evaluation, peak GPU memory and time.

    python benchmarks/gpu_check.py            # on a machine with a CUDA GPU and the built-in tokenizers prepared
    python benchmarks/gpu_check.py --cases kd --steps 3 --out /tmp/gpu   # a quick look

Writes OUT/gpu-check.json (raw numbers, provenance) and OUT/gpu-check.md. On-policy cases sample responses, so their
CPU and GPU runs see different text after the first step; the first step's agreement is not asked of them.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from step_modes import tiny_model  # benchmarks/, the script's own folder

ROOT = Path(__file__).resolve().parents[1]
FEATURE = {"name": "feature", "selector": "flexkd", "metric": "pearson"}
CASES = {
    "kd": {"objectives": [{"name": "ce"}, {"name": "logit_kd"}, {"name": "lens"}, FEATURE]},
    "cross": {"objectives": [{"name": "ce"}, {"name": "uld", "weight": 0.5}, {"name": "gold", "weight": 0.5}, FEATURE],
              "cross": True},
    "onpolicy": {"objectives": [{"name": "logit_kd", "divergence": "reverse_kl"}],
                 "responses": {"source": "student", "lmbda": 1.0, "max_new_tokens": 8}},
    "cache": {"objectives": [{"name": "ce"}, {"name": "logit_kd"}, FEATURE], "cache": True},
    "dkd": {"objectives": [{"name": "ce"}, {"name": "dkd"}]},
}
MODES = {"cpu-fp32": ("cpu", "no"), "gpu-fp32": ("cuda", "no"), "gpu-bf16": ("cuda", "bf16")}
FIRST_STEP_RTOL = 1e-4  # float32 losses: means over a few hundred terms, each O(10), summed in another order


def case_config(name, mode, models, workdir, steps):
    case, (_, precision) = CASES[name], MODES[mode]
    config = {
        "seed": 0, "run_dir": str(workdir / f"{name}-{mode}"),
        "teacher": {"model": models["gemma-teacher" if case.get("cross") else "teacher"]},
        "student": {"model": models["student"]} if case.get("cross") else
                   {"spec": {"hidden_size": 64, "num_layers": 2, "num_heads": 2}},
        "data": {"builtin": "define-word", "max_train_examples": 32, "max_length": 96},
        "objectives": case["objectives"],
        "train": {"steps": steps, "batch_size": 4, "lr": 3e-3, "warmup_steps": 0, "eval_every": 0, "log_every": 1,
                  "mixed_precision": precision},
        "eval": {"max_examples": 8, "batch_size": 4, "max_new_tokens": 8},
    }
    if "responses" in case:
        config["train"]["responses"] = case["responses"]
    if case.get("cache"):
        config["teacher_cache"] = {"dir": str(workdir / f"teacher-cache-{mode}")}
    return config


def run_one(config_path):
    """One training run in this process; prints a JSON line with what the check records."""
    import torch
    from lmdistill.config import build_config
    from lmdistill.run import train
    config = build_config(json.loads(Path(config_path).read_text()))
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = train(config, log=lambda *_: None)
    seconds = time.perf_counter() - start
    rows = [json.loads(line) for line in open(Path(config.run_dir) / "metrics.jsonl")]
    steps = [{k: v for k, v in r.items() if isinstance(v, float) and not k.startswith(("lr", "tokens"))}
             for r in rows if r["kind"] == "train"]
    metrics = result["metrics"]["student"]
    print(json.dumps({"steps": steps, "seconds": seconds,
                      "eval": {k: metrics[k] for k in ("bpb", "ce", "kl") if k in metrics},
                      "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0,
                      "provenance": result.get("provenance")}))


def launch(config, workdir, mode):
    path = workdir / f"{Path(config['run_dir']).name}.json"
    path.write_text(json.dumps(config))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    if MODES[mode][0] == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    done = subprocess.run([sys.executable, __file__, "--one", str(path)], env=env, capture_output=True, text=True)
    if done.returncode:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}",
                "stderr_tail": done.stderr[-3000:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def first_step_gaps(runs, reference, other):
    """Per loss of step 1: the relative difference between two modes' runs."""
    a, b = runs[reference]["steps"][0], runs[other]["steps"][0]
    return {k: abs(a[k] - b[k]) / max(abs(a[k]), 1e-12) for k in a if k in b and not k.startswith("grad")}


def summarise(name, runs):
    row = {"case": name, "runs": runs}
    if all("steps" in r for r in runs.values()) and not CASES[name].get("responses"):
        row["gpu_fp32_vs_cpu"] = first_step_gaps(runs, "cpu-fp32", "gpu-fp32")
        row["gpu_bf16_vs_cpu"] = first_step_gaps(runs, "cpu-fp32", "gpu-bf16")
        row["fp32_agrees"] = max(row["gpu_fp32_vs_cpu"].values()) <= FIRST_STEP_RTOL
    return row


def markdown(rows, steps):
    lines = [f"# The CUDA path on tiny models ({steps} steps per run)", "",
             "| case | mode | first-step loss | last-step loss | eval CE (nats/token) | peak GPU GiB | s | error |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        for mode, r in row["runs"].items():
            if "steps" not in r:
                lines.append(f"| {row['case']} | {mode} | | | | | | {r['error']} |")
                continue
            lines.append(f"| {row['case']} | {mode} | {r['steps'][0]['loss']:.6f} | {r['steps'][-1]['loss']:.6f} | "
                         f"{r['eval']['ce']:.4f} | {r['peak_gpu_gib']:.2f} | {r['seconds']:.1f} | |")
    lines += ["", "First step, largest relative difference from CPU float32 over the logged losses "
              f"(float32 is asked to agree within {FIRST_STEP_RTOL:g}):", "",
              "| case | GPU float32 | GPU bf16 | float32 agrees |", "|---|---|---|---|"]
    for row in rows:
        if "gpu_fp32_vs_cpu" in row:
            lines.append(f"| {row['case']} | {max(row['gpu_fp32_vs_cpu'].values()):.2e} | "
                         f"{max(row['gpu_bf16_vs_cpu'].values()):.2e} | {row['fp32_agrees']} |")
    return "\n".join(lines) + "\n"


def write(out, rows, steps):
    runs = [(mode, r) for row in rows for mode, r in row["runs"].items() if r.get("provenance")]
    provenance = next((r["provenance"] for mode, r in sorted(runs, key=lambda m: not m[0].startswith("gpu"))), None)
    record = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "date": time.strftime("%Y-%m-%d %H:%M"),
              "steps": steps, "provenance": provenance, "rows": rows}
    (out / "gpu-check.json").write_text(json.dumps(record, indent=1))
    (out / "gpu-check.md").write_text(markdown(rows, steps))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--out", default="benchmarks/results/gpu")
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        return run_one(args.one)
    import torch
    if not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device here; run it on a machine with a GPU")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        models = {"teacher": str(tiny_model(workdir / "teacher")),
                  "student": str(tiny_model(workdir / "student", hidden=64, layers=2, seed=1)),
                  "gemma-teacher": str(tiny_model(workdir / "gemma-teacher", "gemma3-270m", 64, 2, 2))}
        for name in args.cases:
            runs = {mode: launch(case_config(name, mode, models, workdir, args.steps), workdir, mode) for mode in MODES}
            rows.append(summarise(name, runs))
            print(f"{name}: " + ", ".join(f"{m} {'ok' if 'steps' in r else r['error']}" for m, r in runs.items()),
                  flush=True)
            write(out, rows, args.steps)  # after each case, so that a run stopped early keeps what it measured
    print((out / "gpu-check.md").read_text())
    failed = [row["case"] for row in rows if row.get("fp32_agrees") is False or
              any("error" in r for r in row["runs"].values())]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
