"""The report of benchmarks/step.py: per-mode time and memory, the time and memory ratios against their targets."""
import statistics

import torch

from common import header
from step_modes import has_trl

RATIOS = [("kd", "floor", 1.10), ("feature", "floor", 1.10), ("lens", "floor", 1.35), ("floor+lens", "floor", None),
          ("lens", "floor+lens", None), ("fkl", "floor", None),
          ("fkl", "trl-gkd", 0.8), ("fkl", "trl-distill", 0.8), ("kd-cache", "kd", None),
          ("x-uld", "x-floor", 1.25), ("x-gold", "x-floor", 1.25), ("x-feature", "x-floor", 1.25),
          ("x-uld-only", "x-floor", None), ("x-uld-only", "trl-gold", 0.8),
          ("op-ours", "op-trl-gkd", 0.8), ("op-ours", "op-trl-distill", 0.8),
          ("gen-ours", "gen-bare", round(1 / 0.9, 3))]
MEMORY_RATIOS = [("x-uld", "x-floor", 1.2), ("x-gold", "x-floor", 1.2), ("x-feature", "x-floor", 1.2),
                 ("x-uld-only", "x-floor", None), ("trl-gold", "x-floor", None)]


def trl_version():
    import trl
    return trl.__version__


def trl_note(modes):
    if any("trl-" in m for m in modes):
        return f"; trl {trl_version()}"
    if has_trl():
        return "; TRL's modes not among --modes"
    return "; TRL not installed here (make bench-env), its modes skipped"


def met(ratio, target):
    return "" if target is None else ("yes" if ratio <= target else "**no**")


def memory_lines(memory):
    """The peak-RSS ratios with their targets, as rows of the time-ratio table (its first column holds them)."""
    lines = []
    if "lens" in memory and "kd" in memory:
        ratio = memory["lens"]["peak_rss_gib"] / memory["kd"]["peak_rss_gib"]
        lines.append(f"| lens / kd peak RSS | {ratio:.3f} | | | <= 1.2 | {met(ratio, 1.2)} |")
        inc = memory["lens"]["step_increase_gib"] / max(memory["kd"]["step_increase_gib"], 1e-9)
        lines.append(f"| lens / kd step's RSS increase | {inc:.2f} | | | | |")
    for a, b, target in MEMORY_RATIOS:
        if a in memory and b in memory:
            ratio = memory[a]["peak_rss_gib"] / memory[b]["peak_rss_gib"]
            lines.append(f"| {a} / {b} peak RSS | {ratio:.3f} | | | {'' if target is None else f'<= {target}'} "
                         f"| {met(ratio, target)} |")
    return lines


def time_ratios(a, b):
    """(of total time, per-round median, of medians) for two modes' timings, each with `rounds_s` and `median_s`."""
    total = sum(a["rounds_s"]) / sum(b["rounds_s"])
    paired = statistics.median(x / y for x, y in zip(a["rounds_s"], b["rounds_s"]))
    return total, paired, a["median_s"] / b["median_s"]


def time_ratio_line(times, a, b, target):
    total, paired, medians = time_ratios(times[a], times[b])
    bound = "" if target is None else f"<= {target}"
    return (f"| {a} / {b} time | {total:.3f} | {paired:.3f} | {medians:.3f} | {bound} "
            f"| {met(max(total, paired), target)} |")


def rel(value, reference):
    return f"{(value - reference) / reference:+.1e}"


def comparison_lines(times, comparison):
    """The first step's ULD: x-uld-only's and trl-gold's, and ours under TRL's normalisation."""
    if comparison is None:
        return []
    c = comparison
    parts = [f"First step's ULD, same initial student and first batch ({c['groups']} aligned groups, "
             f"{c['student_tokens']} student response tokens): ours {c['ours']:.6f} (sum over groups / student "
             f"response tokens)"]
    if "x-uld-only" in times:
        parts.append(f"x-uld-only's first step {times['x-uld-only']['first_loss']:.6f}")
    parts.append(f"ours under TRL's normalisation (each example's sum over its groups / its groups, then the mean "
                 f"over examples) {c['ours_trl_normalised']:.6f}")
    if "float64_trl_normalised" in c:
        ref = c["float64_trl_normalised"]
        parts.append(f"the same in float64 on the same float32 logits {ref:.6f} "
                     f"(ours {rel(c['ours_trl_normalised'], ref)})")
    if "trl-gold" in times:
        trl = times["trl-gold"]["first_loss"]
        parts.append(f"trl-gold {trl:.6f} (relative difference {rel(c['ours_trl_normalised'], trl)}"
                     + (f"; from the float64 value {rel(trl, c['float64_trl_normalised'])}"
                        if "float64_trl_normalised" in c else "")
                     + f"); TRL's aligned groups are ours in {c['same_groups']} of {c['examples']} examples")
    why = ("Where the groups agree, what remains is float32 rounding (the float64 value shows whose): TRL sums the "
           "differences of all of the teacher's sorted probabilities (the student's padded with zeros), we sum the "
           "shorter vocabulary's length of them and take the rest's mass from the group's total; and TRL's floor of "
           "1e-8 on each earlier token's probability in a multi-token group.")
    if "trl-gold" in times and c["same_groups"] < c["examples"]:
        why += (" Groups can differ where a character's bytes are split over tokens: TRL aligns byte offsets and "
                "may close a group inside the character, ours closes only after its last token on both sides.")
    return ["", "; ".join(parts) + ". " + why]


def report(args, times, tokens, memory, modes, record, comparison=None):
    lines = [header(f"Step time against the floor and TRL ({args.pair} pair)", record),
             f"Batch: {args.batch_size} define-word examples of up to {args.max_length} tokens ({tokens:.0f} tokens "
             f"per batch on average, {args.batches} batches cycled); {args.repeats} interleaved rounds after "
             f"{args.warmup} warm-up; torch {torch.__version__}, {torch.get_num_threads()} threads"
             + trl_note(modes)
             + ". Every round's time: the .json beside this file.\n",
             "| mode | median s/step | min | max | tokens/s | peak RSS GiB | step's RSS increase GiB |",
             "|---|---|---|---|---|---|---|"]
    for mode in modes:
        t, m = times[mode], memory.get(mode, {})
        lines.append(f"| {mode} | {t['median_s']:.3f} | {t['min_s']:.3f} | {t['max_s']:.3f} "
                     f"| {tokens / t['median_s']:.0f} "
                     f"| {m.get('peak_rss_gib', float('nan')):.2f} | {m.get('step_increase_gib', float('nan')):.3f} |")
    lines += ["", "Time ratios: of the total time over the same steps, and the median of the per-round ratios (the "
              "modes of one round run back to back on the same batch, so this pairs them under the same load); met "
              "only when both are within the target. The ratio of the two medians is shown too: with batches of "
              "different length its medians can fall on different batches, so it does not decide.", "",
              "| ratio | of total time | per round | of medians | target | met |", "|---|---|---|---|---|---|"]
    lines += [time_ratio_line(times, a, b, target) for a, b, target in RATIOS if a in times and b in times]
    lines += memory_lines(memory) + comparison_lines(times, comparison)
    same = [m for m in ("fkl", "trl-gkd", "trl-distill") if m in times]
    if len(same) > 1:
        lines += ["", "Same work: the first step's loss (forward KL per response token, same initial student and "
                  "batch): "
                  + ", ".join(f"{m} {times[m]['first_loss']:.5f}" for m in same) + "."]
    if "gen-bare" in times and "gen-ours" in times:
        rates = {m: times[m]["first_loss"] / times[m]["median_s"] for m in ("gen-bare", "gen-ours")}
        lines += ["", f"Generation: gen-bare {rates['gen-bare']:.0f} generated tokens/s, "
                  f"gen-ours {rates['gen-ours']:.0f} "
                  f"(gen-ours / gen-bare {rates['gen-ours'] / rates['gen-bare']:.3f}, target >= 0.9; the time ratio's "
                  f"target above is its inverse). Both generated {times['gen-bare']['first_loss']:.0f} and "
                  f"{times['gen-ours']['first_loss']:.0f} tokens in their first step."]
    if "floor+lens" in times and "floor" in times:
        bound = max(time_ratios(times["floor+lens"], times["floor"])[:2])
        lines += ["", f"The lens's LM-head projections alone (floor+lens, no divergence) take {bound:.2f}x the floor "
                  "(the larger of its ratio of total time and per round)"
                  + (": the <= 1.35 target is out of reach for any exact logit lens on this pair; lens / floor+lens "
                     "is the part an implementation controls." if bound > 1.35 else ".")]
    return "\n".join(lines) + "\n"
