"""A short Markdown report of a run: metrics table, run facts, a few sample generations."""

COLUMNS = [("bpb", "bits/byte", "{:.4f}"), ("ce", "CE (nats/token)", "{:.3f}"), ("kl", "KL(T‖S)", "{:.3f}"),
           ("rougeL", "ROUGE-L", "{:.1f}"), ("accuracy", "accuracy %", "{:.1f}"),
           ("gen_bpb", "generations: teacher's bits/byte", "{:.3f}"), ("distinct1", "distinct-1", "{:.3f}"),
           ("distinct2", "distinct-2", "{:.3f}"), ("loops", "loops %", "{:.0f}")]


GENERATIONS = ("Of each model's generations, the teacher's bits per byte (the teacher reads the text after its own "
               "prompt), distinct word 1- and 2-grams over all of them, and the share that loop: run to the length "
               "limit with a second half that repeats word 3-grams of the first.")


def metrics_table(rows):
    used = [c for c in COLUMNS if any(c[0] in r for r in rows.values())]
    lines = ["| model | " + " | ".join(title for _, title, _ in used) + " |",
             "|---|" + "---|" * len(used)]
    for name, row in rows.items():
        cells = []
        for key, _, fmt in used:
            value = fmt.format(row[key]) if key in row else "-"
            if f"{key}_std" in row:
                value += " ± " + fmt.format(row[f"{key}_std"])
            cells.append(value)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sample_scores(sample, name):
    """' (teacher: 1.234 bits/byte, loops)' for one generation of a sample; samples of older runs have none."""
    notes = []
    if sample.get(f"{name}_gen_bpb") is not None:
        notes.append(f"teacher: {sample[f'{name}_gen_bpb']:.3f} bits/byte")
    if sample.get(f"{name}_loops"):
        notes.append("loops")
    return f" ({', '.join(notes)})" if notes else ""


def render_report(result, facts):
    primary = ("bits per byte of the response text, teacher-forced, is the primary metric (the models tokenize "
               "differently: each CE is per token of its own tokenizer)" if "bpb" in result["metrics"]["student"] else
               "CE and KL are teacher-forced on response tokens (the primary metrics)")
    parts = ["# lmdistill report\n",
             f"Held-out split `{result['split']}`: {result['examples']} examples, {result['response_tokens']} "
             f"response tokens, task: {result['task']}. {primary[0].upper() + primary[1:]}; ROUGE-L is of "
             f"generations, beside trivial baselines.\n",
             metrics_table(result["metrics"]), ""]
    if facts:
        parts += ["## Run", *[f"- {k}: {v}" for k, v in facts.items()], ""]
    if result["samples"]:
        parts.append("## Samples")
        for s in result["samples"]:
            parts.append(f"- prompt: {s['prompt'][:120]!r}\n  - reference: {s['reference'][:120]!r}")
            parts += [f"  - {name}: {s[name][:120]!r}{sample_scores(s, name)}" for name in ("student", "teacher")
                      if s.get(name) is not None]
    return "\n".join(parts) + "\n"
