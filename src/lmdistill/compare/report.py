"""The compare report: per task a Markdown table (mean +/- std over seeds, paired difference vs the baseline
with a 95 % t interval), the teacher and trivial baselines beside it, and a PNG (metric by method with seed
points; training-loss curves)."""
import io
from collections import Counter
from pathlib import Path

from lmdistill.compare.stats import holm, mean, mean_std_text, paired
from lmdistill.io import atomic_write_bytes, atomic_write_text
from lmdistill.provenance import commit_text, record, summary

METRICS = [("bpb", "bits/byte", "{:.4f}"), ("bpb_before", "bits/byte before", "{:.4f}"), ("ce", "CE", "{:.3f}"),
           ("ce_before", "CE before", "{:.3f}"),
           ("kl", "KL(T‖S)", "{:.3f}"), ("rougeL", "ROUGE-L", "{:.1f}"), ("accuracy", "acc %", "{:.1f}"),
           ("gen_bpb", "gen. bits/byte (T)", "{:.3f}"), ("distinct2", "distinct-2", "{:.3f}"),
           ("loops", "loops %", "{:.0f}"), ("sampled_gen_bpb", "sampled: gen. bits/byte (T)", "{:.3f}"),
           ("sampled_distinct2", "sampled: distinct-2", "{:.3f}")]
DIFFERENCES = [("bpb", "bits/byte"), ("ce", "CE"), ("kl", "KL"), ("gen_bpb", "gen. bits/byte")]


def signed(x, fmt="{:.3f}"):
    return ("+" if x >= 0 else "−") + fmt.format(abs(x))


def difference_text(d):
    if d is None:
        return "-"
    if d["interval"] is None:
        return f"{signed(d['mean'])} (1 seed)"
    lo, hi = d["interval"]
    return f"{signed(d['mean'])} [{signed(lo)}, {signed(hi)}] ({d['lower_in']}/{d['n']} lower)"


def paired_on(by, method, reference, key, seeds):
    """The paired difference method - reference on key over the seeds where both rows have it (a generation metric
    is missing when every generated text was empty); None when there are none."""
    seeds = [s for s in seeds if key in by[(method, s)] and key in by[(reference, s)]]
    return paired([by[(method, s)][key] for s in seeds], [by[(reference, s)][key] for s in seeds]) if seeds else None


def task_table(rows, methods, baseline):
    """Markdown rows for one task; paired differences over the seeds both methods finished."""
    by = {(r["method"], r["seed"]): r for r in rows}
    used = [m for m in METRICS if any(m[0] in r for r in rows)]
    differences = [(key, title) for key, title in DIFFERENCES if any(key in r for r in rows)]
    header = (["method", "seeds"] + [title for _, title, _ in used]
              + [f"{title} − {baseline} (95 % CI)" for _, title in differences] + ["train s", "peak RSS GiB"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in methods:
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["seed"])
        if not mine:
            continue
        cells = [method, str(len(mine))]
        for key, _, fmt in used:
            values = [r[key] for r in mine if key in r]
            cells.append(mean_std_text(values, fmt) if values else "-")
        for key, _ in differences:
            if method == baseline:
                cells.append("(baseline)")
                continue
            seeds = [r["seed"] for r in mine if (baseline, r["seed"]) in by]
            cells.append(difference_text(paired_on(by, method, baseline, key, seeds)))
        cells.append(f"{mean([r.get('train_seconds', 0) for r in mine]):.0f}")
        cells.append(f"{max(r.get('peak_rss_gib', 0) for r in mine):.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_comparisons(rows, comparisons, keys, primary):
    """(method, reference, {key: paired difference}) for each (method, reference) pair both finished, over the seeds
    both have; each primary difference with a p-value gains `holm`, adjusted over all of them (the family), whose
    size is returned too."""
    by = {(r["method"], r["seed"]): r for r in rows}
    found = []
    for method, reference in comparisons:
        seeds = sorted(s for m, s in by if m == method and (reference, s) in by)
        if seeds:
            found.append((method, reference, {key: paired_on(by, method, reference, key, seeds) for key in keys}))
    tested = [d[primary] for *_, d in found if d[primary] is not None and d[primary]["p"] is not None]
    for d, adjusted in zip(tested, holm([d["p"] for d in tested])):
        d["holm"] = adjusted
    return found, len(tested)


def comparisons_table(rows, comparisons, primary="ce"):
    """Paired differences for chosen (method, reference) pairs, over the seeds both finished, and on the primary
    metric each one's p-value with Holm's adjustment over the table's comparisons (the family-wise verdict)."""
    keys = [(key, title) for key, title in DIFFERENCES if any(key in r for r in rows)]
    found, family = paired_comparisons(rows, comparisons, [key for key, _ in keys], primary)
    if not found:
        return ""
    lines = ["| comparison | " + " | ".join(f"{title} difference (95 % CI)" for _, title in keys)
             + f" | {primary} p | Holm p ({family} comparisons) | Holm verdict at 5 % |",
             "|---|" + "---|" * (len(keys) + 3)]
    for method, reference, d in found:
        cells = [difference_text(d[key]) for key, _ in keys] + holm_cells(d[primary])
        lines.append(f"| {method} − {reference} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def holm_cells(d):
    """[p, Holm-adjusted p, verdict] of one comparison on the primary metric."""
    if d is None:
        return ["-", "-", "(not measured)"]
    if d["p"] is None:
        return ["-", "-", "(1 seed)"]
    verdict = ("first lower" if d["mean"] < 0 else "first higher") if d["holm"] <= 0.05 else "not resolved"
    return [f"{d['p']:.3f}", f"{d['holm']:.3f}", verdict]


def reference_table(reference):
    if not reference:
        return "(reference rows not computed yet)"
    rows = reference["rows"]
    used = [m for m in METRICS if any(m[0] in r for r in rows.values())]
    lines = ["| reference | " + " | ".join(t for _, t, _ in used) + " |", "|---|" + "---|" * len(used)]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(fmt.format(row[k]) if k in row else "-" for k, _, fmt in used) + " |")
    return "\n".join(lines)


def plot(path, task, rows, curves, methods, primary="ce"):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    present = [m for m in methods if any(r["method"] == m for r in rows)]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    ax = axes[0]
    for i, method in enumerate(present):
        values = [r[primary] for r in rows if r["method"] == method]
        ax.scatter([i] * len(values), values, color="tab:blue", alpha=0.6, s=18, zorder=3)
        ax.plot([i - 0.3, i + 0.3], [mean(values)] * 2, color="black", lw=2, zorder=4)
    ax.set_xticks(range(len(present)), present, rotation=45, ha="right")
    unit = "bits/byte of the response text" if primary == "bpb" else "nats/token"
    ax.set_ylabel(f"held-out {primary.upper()} ({unit}; lower is better)")
    ax.set_title(f"{task}: {primary.upper()} by method (points = seeds, bar = mean)")
    ax.grid(axis="y", alpha=0.3)
    ax = axes[1]
    for method in present:
        series = [curves[key]["train"] for key in curves
                  if key[0] == task and key[1] == method and curves[key]["train"]]
        if not series:
            continue
        n = min(len(s) for s in series)
        steps = [s for s, _ in series[0][:n]]
        ax.plot(steps, [mean([s[j][1] for s in series]) for j in range(n)], label=method, lw=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (each method's own objective)")
    ax.set_yscale("log")
    ax.set_title("training loss, mean over seeds")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, image.getvalue())


def machines_line(rows):
    """Which machines the cells ran on: timings, and the last digits of the metrics, differ between machines."""
    counts = Counter(r.get("machine", "not recorded") for r in rows)
    text = "; ".join(f"{name} ({n} cell{'s' * (n != 1)})" for name, n in counts.most_common())
    if len(counts) > 1:
        return f"cells ran on {len(counts)} machines: {text}. Timings compare only within one machine."
    return f"cells ran on: {text}" if counts else ""


def commits_line(rows):
    """Which commits the cells' code came from, and whether the tree was clean: a grid made from several commits (or
    a dirty tree) is not one version of the code."""
    counts = Counter(commit_text({"commit": r.get("commit"), "clean": r.get("clean")}) for r in rows)
    text = "; ".join(f"{name} ({n} cell{'s' * (n != 1)})" for name, n in counts.most_common())
    if len(counts) > 1:
        return f"cells' code came from {len(counts)} versions: {text}."
    return f"cells' code: commit {text}" if counts else ""


def describe_cache(cache):
    logits = (f"top-{cache.top_k} log-probs + the rest's mass" if cache.logits == "topk"
              else "logits from the stored final hidden state through the teacher's head, exact")
    return f"{logits}; hidden states {cache.hidden_dtype}"


def write_report(compare, rows, curves, references, root, run_note="", online=(), provenance=None):
    """`online`: the methods whose cells ran the teacher online although the grid uses the cache (attention).
    `provenance`: this invocation's record (provenance.record()), made now when not given."""
    provenance = provenance or record(exclude=[root])
    methods, baseline = list(compare.methods), compare.baseline_method
    steps = sorted({r["steps"] for r in rows})
    parts = [f"# lmdistill compare: {root}", "",
             "This report (provenance.json):  ", summary(provenance) + (f"; {run_note}" if run_note else "")
             + "  ", "", "The cells (each cell's eval.json has its full provenance; rows.json its numbers):  ",
             commits_line(rows) + "  ", machines_line(rows), "",
             f"Grid: {len(compare.tasks)} task(s) x {len(methods)} methods x seeds {compare.seeds}; steps "
             f"{steps}; teacher in training: "
             + (f"cache ({describe_cache(compare.cache)})" if compare.teacher == "cache" else "online")
             + (f", online for {', '.join(online)} (the cache holds no attention)" if online else "") + ". "
             "Every method of a seed starts from the same student initialisation and sees the same batches (paired). "
             f"CE and KL(T‖S) are teacher-forced nats per response token on held-out examples (lower is better), "
             f"computed with the online teacher; with a teacher of another tokenizer, bits/byte (of the response text, "
             f"teacher-forced) is the metric that compares models and CE is per token of the student's tokenizer; "
             f"`CE before` and `bits/byte before` are the student's own before training (a pretrained student's, "
             f"and any student's across tokenizers). "
             f"Differences are method − {baseline}, "
             "seed by seed, with a Student-t 95 % interval; `k/n lower` counts seeds where the method's value is "
             "lower. train s: mean training time per cell; peak RSS: the largest over the cell's seeds (each cell is "
             "its own process).", ""]
    if compare.not_applicable:
        parts += ["Not applicable in this grid:", ""] + [f"- {name}: {why}" for name, why in
                                                         compare.not_applicable.items()] + [""]
    for task in compare.tasks:
        task_rows = [r for r in rows if r["task"] == task]
        reference = references.get(task)
        parts += [f"## {task}", ""]
        if reference:
            parts.append(f"Held-out split `{reference['split']}`: {reference['examples']} examples, "
                         f"{reference['response_tokens']} response tokens, task kind {reference['task_kind']}.\n")
        if not task_rows:
            parts += ["(no finished cells yet)", ""]
            continue
        parts += [task_table(task_rows, methods, baseline), ""]
        primary = "bpb" if all("bpb" in r for r in task_rows) else "ce"
        questions = comparisons_table(task_rows, compare.comparisons, primary)
        if questions:
            parts += ["Paired comparisons (negative = the first method is lower, i.e. better). The p-values are "
                      f"two-sided paired t-tests on {primary}; Holm's adjustment over this table's comparisons "
                      "keeps the chance of any false verdict among them at 5 %; the raw intervals stay as they are.",
                      "", questions, ""]
        parts += [reference_table(reference), ""]
        image = f"compare-{task}.png"
        plot(root / image, task, task_rows, curves, methods, primary)
        parts += [f"![{task}]({image})", ""]
    text = "\n".join(parts) + "\n"
    atomic_write_text(Path(root) / "report.md", text)
    return text
