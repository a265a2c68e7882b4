"""Peak memory and time of the DistillLens lens loss: our chunked implementation vs the naive one.

Setting: SmolLM2's vocabulary (49152), teacher width 576 and student width 256 (configs/demo.yaml's student), 5 layer
pairs, a batch of 8 x 128 positions, every position a response position (the worst case). Heads are each model's final
RMSNorm + LM head with random weights of those shapes (memory and time do not depend on the values).
- naive: DistillLens's reference layout: the lens logits of all pairs stacked as [pairs x batch, 128, V] in float32 for
  teacher and student, JSD over the whole tensors, mean over tokens, mean over pairs; then backward.
- chunked: `lmdistill`'s lens objective path (divergences.generalized_jsd with heads and pair weights, chunks of
  positions with each chunk's backward run inside the chunk).
Each mode runs in its own process: peak memory = peak RSS (or peak CUDA allocation) during forward + backward minus the
memory held before (models' heads and the hidden states). Time: median of --repeats forward + backward after a warm-up.
Both compute the same loss and gradients; the script checks they agree.

    .venv/bin/python benchmarks/lens_memory.py
"""
import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from common import header, provenance, write_provenance
from lmdistill.provenance import peak_memory_gib, reset_peak_memory, rss_gib

VOCAB, D_TEACHER, D_STUDENT, PAIRS, BATCH, LENGTH = 49152, 576, 256, 5, 8, 128


def setup(device, seed=0):
    torch.manual_seed(seed)
    heads = {}
    for role, d in (("student", D_STUDENT), ("teacher", D_TEACHER)):
        norm = torch.nn.RMSNorm(d, eps=1e-5).to(device)
        head = torch.nn.Linear(d, VOCAB, bias=False).to(device)
        if role == "teacher":
            norm.requires_grad_(False)
            head.requires_grad_(False)
        heads[role] = (norm, head)
    hs = torch.randn(PAIRS, BATCH, LENGTH, D_STUDENT, device=device) * 3
    ht = torch.randn(PAIRS, BATCH, LENGTH, D_TEACHER, device=device) * 3
    return heads, hs.requires_grad_(True), ht


def naive(heads, hs, ht):
    (s_norm, s_head), (t_norm, t_head) = heads["student"], heads["teacher"]
    s = s_head(s_norm(hs)).float().flatten(0, 1)  # [pairs x batch, length, V], as the reference stacks them
    with torch.no_grad():
        t = t_head(t_norm(ht)).float().flatten(0, 1)
    lp, lq = t.log_softmax(-1), s.log_softmax(-1)
    lm = torch.logaddexp(lp, lq) - torch.log(torch.tensor(2.0))
    per_token = 0.5 * (lp.exp() * (lp - lm)).sum(-1) + 0.5 * (lq.exp() * (lq - lm)).sum(-1)
    return per_token.view(PAIRS, -1).mean(-1).mean()


def chunked(heads, hs, ht, chunk_size):
    from lmdistill.divergences import Head, generalized_jsd
    (s_norm, s_head), (t_norm, t_head) = heads["student"], heads["teacher"]
    s_in = s_norm(hs).flatten(0, 2)
    with torch.no_grad():
        t_in = t_norm(ht).flatten(0, 2)
    weights = torch.full((s_in.shape[0],), 1 / PAIRS, device=s_in.device)
    total = generalized_jsd(s_in, t_in, chunk_size=chunk_size, reduction="sum", weights=weights, beta=0.5,
                            student_head=Head(s_head, tuple(s_head.parameters())), teacher_head=Head(t_head))
    return total / (BATCH * LENGTH)


def measure(mode, device, repeats, chunk_size):
    """Run in a fresh process: one mode, its peak memory over the first forward + backward, then timed repeats."""
    heads, hs, ht = setup(device)
    params = [hs, *heads["student"][0].parameters(), *heads["student"][1].parameters()]
    loss_fn = (lambda: naive(heads, hs, ht)) if mode == "naive" else (lambda: chunked(heads, hs, ht, chunk_size))

    def step():
        for p in params:
            p.grad = None
        started = time.perf_counter()
        loss = loss_fn()
        loss.backward()
        if device == "cuda":
            torch.cuda.synchronize()
        return loss.item(), time.perf_counter() - started

    if device == "cuda":
        torch.cuda.synchronize()
    before = torch.cuda.memory_allocated() / 2**30 if device == "cuda" else rss_gib()
    reset_peak_memory(device)
    loss, first = step()
    peak = peak_memory_gib(device)["peak_gpu_gib" if device == "cuda" else "peak_rss_gib"] - before
    grads = [p.grad.double().norm().item() for p in params]
    times = [step()[1] for _ in range(repeats)]
    return {"mode": mode, "device": device, "chunk_size": chunk_size if mode == "chunked" else None, "loss": loss,
            "grad_norms": grads, "extra_peak_gib": round(peak, 3), "first_s": round(first, 3),
            "median_s": round(statistics.median(times), 3), "times": [round(t, 3) for t in times]}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--chunk-sizes", type=int, nargs="+", default=[128, 1024])
    p.add_argument("--out", default="benchmarks/results/lens_memory")
    p.add_argument("--one", nargs=2, metavar=("MODE", "CHUNK"), help=argparse.SUPPRESS)  # the child process
    args = p.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], args.device, args.repeats, int(args.one[1]))))
        return
    record = provenance(args.out, args.device)
    rows = []
    for mode, chunk in [("naive", 0)] + [("chunked", c) for c in args.chunk_sizes]:
        child = subprocess.run([sys.executable, __file__, "--one", mode, str(chunk), "--device", args.device,
                                "--repeats", str(args.repeats)], capture_output=True, text=True, check=True)
        rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    base = rows[0]
    for row in rows[1:]:  # the same loss and gradients
        assert abs(row["loss"] - base["loss"]) <= 1e-5 * abs(base["loss"]), (row["loss"], base["loss"])
        assert all(abs(a - b) <= 1e-4 * abs(b) for a, b in zip(row["grad_norms"], base["grad_norms"]))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rows-{args.device}.json").write_text(json.dumps(rows, indent=1))
    write_provenance(out / f"provenance-{args.device}.json", record)
    memory = "peak CUDA allocation" if args.device == "cuda" else "peak RSS"
    lines = [f"| implementation | extra {memory} (GiB) | time forward + backward (s, median of {args.repeats}) | "
             f"vs naive: memory | vs naive: time |", "|---|---|---|---|---|"]
    for row in rows:
        name = row["mode"] + (f", chunk {row['chunk_size']}" if row["chunk_size"] else "")
        lines.append(f"| {name} | {row['extra_peak_gib']:.3f} | {row['median_s']:.2f} | "
                     f"{row['extra_peak_gib'] / base['extra_peak_gib']:.3f}x | {row['median_s'] / base['median_s']:.2f}x |")
    report = (header(f"Lens loss: chunked vs naive ({args.device})", record)
              + f"Vocabulary {VOCAB}, teacher width {D_TEACHER}, student width {D_STUDENT}, {PAIRS} layer pairs, batch "
                f"{BATCH} x {LENGTH} positions, all of them response positions; JSD beta 0.5, T 1; float32. Extra memory "
                f"= {memory} during the first forward + backward minus what was held before. Loss and gradient norms of "
                f"every implementation agree (checked). Setup and method: the script's docstring. Every timed repeat: "
                f"rows-{args.device}.json.\n\n"
              + "\n".join(lines) + "\n")
    (out / f"README-{args.device}.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
