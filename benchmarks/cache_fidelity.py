"""How far does each objective move when the teacher comes from the cache instead of running online?

On the first --examples training examples of the built-in task, a student (default: a trained kd-fkl student of the
quick grid; else configs/demo.yaml's fresh one) is scored by each objective twice: with the online teacher and with
the cached one: logits: head (the final hidden state stored in float32, the teacher's LM head applied at training
time; other hidden states float16) and logits: topk (top-k log-probs + the rest's mass spread evenly; hidden states
float16, or float32 where the column says so).
Reported: the relative difference of the loss (summed over the examples), and the cosine and relative norm
difference of the gradient w.r.t. the student's parameters. Also the teacher's share of the time: online teacher
forward vs reading the cache, per batch of 8.

    .venv/bin/python benchmarks/cache_fidelity.py
"""
import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from common import header, provenance, write_provenance
from lmdistill.build import ObjectiveContext, build_parts
from lmdistill.config import CacheSettings, Config, load_config
from lmdistill.data import collate
from lmdistill.teachers import OnlineTeacher, Request, ResponseLM, response_positions
from lmdistill.teachers.cache import load_or_build
from lmdistill.teachers.cached import CachedTeacher
from lmdistill.models import load_model
from lmdistill.objectives import build_objectives
from lmdistill.objectives.needs import union

KD = {"name": "logit_kd"}
OBJECTIVES = {
    "forward KL": {**KD, "divergence": "forward_kl"},
    "forward KL, T=2": {**KD, "divergence": "forward_kl", "temperature": 2.0},
    "reverse KL": {**KD, "divergence": "reverse_kl"},
    "generalized JSD": {**KD, "divergence": "generalized_jsd"},
    "skew forward KL": {**KD, "divergence": "skew_forward_kl"},
    "TVD": {**KD, "divergence": "tvd"},
    "AKL": {**KD, "divergence": "akl"},
    "feature projection+mse (last)": {"name": "feature", "selector": "projection", "metric": "mse"},
    "feature random+pearson (last)": {"name": "feature", "selector": "random", "metric": "pearson"},
    "feature cka (last)": {"name": "feature", "selector": "none", "metric": "cka"},
    "lens (JSD, 5 pairs)": {"name": "lens"},
}
STUDENT = "benchmarks/results/methods-quick/cells/define-word/kd-fkl/seed0/student"


def loss_and_grad(objective, student, teacher, batches):
    student.zero_grad(set_to_none=True)
    total, needs = 0.0, objective.needs()
    for batch in batches:
        s = student(batch["input_ids"], batch["attention_mask"], batch["labels"], needs.student)
        loss = objective.loss(s, teacher(batch, needs.teacher), batch)
        loss.backward()
        total += loss.item()
    grad = torch.cat([p.grad.flatten() for p in student.parameters() if p.grad is not None])
    return total, grad.clone()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--examples", type=int, default=128)
    p.add_argument("--top-k", type=int, nargs="+", default=[16, 64, 256, 1024])
    p.add_argument("--student", default=STUDENT)
    p.add_argument("--out", default="benchmarks/results/cache_fidelity")
    args = p.parse_args()
    torch.manual_seed(0)
    out = Path(args.out)
    record = provenance(out)
    parts, student_note, batches = load_pair(args)
    objectives, layers = prepare_objectives(parts, out)
    student = ResponseLM(parts.student, parts.vocab_size)
    online = OnlineTeacher(parts.teacher, parts.vocab_size)
    reference = {name: loss_and_grad(o, student, online, batches) for name, o in objectives.items()}
    settings = cache_settings(args.top_k)
    columns, passes = compare_caches(parts, settings, objectives, layers, student, batches, reference, out)
    passes["online"] = pass_seconds(lambda: [online(b, Request(hidden=tuple(layers))) for b in batches])
    timing = {label: statistics.median(t) / len(batches) for label, t in passes.items()}
    report = report_text(record, student_note, batches, list(settings), columns, timing)
    out.mkdir(parents=True, exist_ok=True)
    (out / "rows.json").write_text(json.dumps(
        {"columns": {label: {name: dict(zip(("loss_rel_diff", "grad_cosine", "grad_rel_diff"), c))
                             for name, c in cells.items()} for label, cells in columns.items()},
         "teacher_pass_seconds": passes, "batches": len(batches)}, indent=1))
    write_provenance(out / "provenance.json", record)
    (out / "README.md").write_text(report)
    print(report)


def load_pair(args):
    """The demo's parts on the first --examples training examples, with the --student when it exists; a note naming
    the student; the examples in batches of 8 (dicts with 'index')."""
    config = load_config("configs/demo.yaml", ["data.max_train_examples=" + str(args.examples)])
    parts = build_parts(config, splits=("train",), log=lambda *_: None)
    student_note = "configs/demo.yaml's fresh student"
    if Path(args.student).is_dir():
        parts.student, student_note = load_model(args.student), f"the trained student {args.student}"
    examples = parts.splits["train"].examples
    batches = [{**collate(examples[i:i + 8], parts.tokenizer.pad_token_id), "index": torch.arange(i, i + 8)}
               for i in range(0, len(examples) - 7, 8)]
    return parts, student_note, batches


def prepare_objectives(parts, out):
    """OBJECTIVES built and prepared for parts' models, and the teacher layers they need together."""
    examples = parts.splits["train"].examples
    context = ObjectiveContext(parts.teacher.config, parts.student.config, parts.vocab_size)
    specs = Config.model_validate({"objectives": list(OBJECTIVES.values())}).objectives
    objectives = dict(zip(OBJECTIVES, build_objectives(specs, context)))
    for o in objectives.values():
        o.prepare(parts.teacher, examples, parts.tokenizer.pad_token_id, log=lambda *_: None, run_dir=out / "work")
    layers = union(o.needs() for o in objectives.values()).teacher.hidden
    return objectives, layers


def cache_settings(top_k):
    """The cache settings compared, by column label: head, each top-k, the largest top-k with float32 hidden states."""
    settings = {"head": CacheSettings(logits="head")}
    settings.update({f"k={k}": CacheSettings(logits="topk", top_k=k) for k in top_k})
    settings[f"k={max(top_k)} float32"] = CacheSettings(logits="topk", top_k=max(top_k), hidden_dtype="float32")
    return settings


def compare_caches(parts, settings, objectives, layers, student, batches, reference, out):
    """For each cache setting: each objective's (loss relative difference, gradient cosine, gradient relative
    difference) against its online `reference`, and the seconds of each pass of the cached teacher."""
    examples = parts.splits["train"].examples
    columns, passes = {}, {}
    for label, setting in settings.items():
        path = out / "work" / ("cache-" + label.replace("=", "").replace(" ", "-"))
        cache = load_or_build(path, parts.teacher, parts.tokenizer, examples, parts.vocab_size, layers,
                              setting, log=lambda *_: None)
        cached = CachedTeacher(cache, parts.teacher)
        columns[label] = {}
        for name, o in objectives.items():
            value, grad = loss_and_grad(o, student, cached, batches)
            ref_value, ref_grad = reference[name]
            grad, ref_grad = grad.double(), ref_grad.double()
            columns[label][name] = (abs(value - ref_value) / abs(ref_value),
                                    (grad @ ref_grad / (grad.norm() * ref_grad.norm())).item(),
                                    ((grad - ref_grad).norm() / ref_grad.norm()).item())
        passes[label] = pass_seconds(lambda: [cached(b, Request(hidden=tuple(layers))) for b in batches])
    return columns, passes


def report_text(record, student_note, batches, names, columns, timing):
    """The README: one row per objective, one column per cache setting, then the teacher's time per batch."""
    report = header("Teacher cache fidelity: each objective, cached teacher vs online", record)
    report += (f"Student: {student_note}; {len(batches) * 8} define-word training examples in batches of 8 "
               f"({sum(int(response_positions(b['labels']).sum()) for b in batches)} response positions). Cell: relative "
               f"loss difference / gradient cosine / relative gradient difference (gradient w.r.t. every student "
               f"parameter); cosine 1 and differences near 1e-7 mean float32 rounding. head: logits through the teacher's LM head from the stored final hidden state (float32); k=K: top-K log-probs + rest. Other hidden states float16 unless the column says float32.\n\n")
    report += "| objective | " + " | ".join(names) + " |\n|---|" + "---|" * len(names) + "\n"
    for name in OBJECTIVES:
        cells = [f"{c[name][0]:.1e} / {c[name][1]:.5f} / {c[name][2]:.1e}" for c in columns.values()]
        report += f"| {name} | " + " | ".join(cells) + " |\n"
    report += ("\nTeacher time per batch of 8 (median of 3 passes): online forward (the layers above) "
               f"{timing['online'] * 1000:.0f} ms; from the cache: "
               + ", ".join(f"{n} {timing[n] * 1000:.1f} ms" for n in names) + ".\n")
    return report


def pass_seconds(fn, repeats=3):
    """Seconds of each of `repeats` passes of fn (no gradients)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        with torch.no_grad():
            fn()
        times.append(time.perf_counter() - started)
    return times


if __name__ == "__main__":
    main()
