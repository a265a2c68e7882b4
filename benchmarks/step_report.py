"""The report of benchmarks/step.py: per-mode time and memory, the time and memory ratios against their targets."""
import torch

from common import header

RATIOS = [("kd", "floor", 1.10), ("feature", "floor", 1.10), ("lens", "floor", 1.35), ("floor+lens", "floor", None),
          ("lens", "floor+lens", None), ("fkl", "floor", None),
          ("fkl", "trl-gkd", 0.8), ("fkl", "trl-distill", 0.8), ("kd-cache", "kd", None)]


def trl_version():
    import trl
    return trl.__version__


def report(args, times, tokens, memory, modes, record):
    lines = [header(f"Step time against the floor and TRL ({args.pair} pair)", record),
             f"Batch: {args.batch_size} define-word examples of up to {args.max_length} tokens ({tokens:.0f} tokens per "
             f"batch on average, {args.batches} batches cycled); {args.repeats} interleaved rounds after {args.warmup} "
             f"warm-up; torch {torch.__version__}, {torch.get_num_threads()} threads"
             + ("" if "trl-gkd" in modes else "; TRL not installed here (make bench-env), its modes skipped")
             + (f"; trl {trl_version()}" if "trl-gkd" in modes else "")
             + ". Every round's time: the .json beside this file.\n",
             "| mode | median s/step | min | max | tokens/s | peak RSS GiB | step's RSS increase GiB |",
             "|---|---|---|---|---|---|---|"]
    for mode in modes:
        t, m = times[mode], memory.get(mode, {})
        lines.append(f"| {mode} | {t['median_s']:.3f} | {t['min_s']:.3f} | {t['max_s']:.3f} | {tokens / t['median_s']:.0f} "
                     f"| {m.get('peak_rss_gib', float('nan')):.2f} | {m.get('step_increase_gib', float('nan')):.3f} |")
    lines += ["", "| ratio | measured | target | met |", "|---|---|---|---|"]
    for a, b, target in RATIOS:
        if a in times and b in times:
            ratio = times[a]["median_s"] / times[b]["median_s"]
            met = "" if target is None else ("yes" if ratio <= target else "**no**")
            lines.append(f"| {a} / {b} time | {ratio:.3f} | {'' if target is None else f'<= {target}'} | {met} |")
    if "lens" in memory and "kd" in memory:
        ratio = memory["lens"]["peak_rss_gib"] / memory["kd"]["peak_rss_gib"]
        lines.append(f"| lens / kd peak RSS | {ratio:.3f} | <= 1.2 | {'yes' if ratio <= 1.2 else '**no**'} |")
        inc = memory["lens"]["step_increase_gib"] / max(memory["kd"]["step_increase_gib"], 1e-9)
        lines.append(f"| lens / kd step's RSS increase | {inc:.2f} | | |")
    same = [m for m in ("fkl", "trl-gkd", "trl-distill") if m in times]
    if len(same) > 1:
        lines += ["", "Same work: the first step's loss (forward KL per response token, same initial student and batch): "
                  + ", ".join(f"{m} {times[m]['first_loss']:.5f}" for m in same) + "."]
    if "floor+lens" in times and "floor" in times:
        bound = times["floor+lens"]["median_s"] / times["floor"]["median_s"]
        lines += ["", f"The lens's LM-head projections alone (floor+lens, no divergence) take {bound:.2f}x the floor"
                  + (": the <= 1.35 target is out of reach for any exact logit lens on this pair; lens / floor+lens "
                     "is the part an implementation controls." if bound > 1.35 else ".")]
    return "\n".join(lines) + "\n"
