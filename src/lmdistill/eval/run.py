"""Evaluate a student (and, for reference, the teacher and trivial baselines) on a held-out split."""
import statistics
import time

from lmdistill.build import teacher_of
from lmdistill.eval.generation import generate
from lmdistill.eval.scores import baselines, score
from lmdistill.eval.teacher_forced import teacher_forced


def _generated_scores(model, parts, prompts, references, device, tokenizer=None):
    """Scores of one model's generations: one pass per seed when sampling, mean and std over seeds."""
    ev = parts.config.eval
    seeds = ev.seeds if ev.do_sample else ev.seeds[:1]
    runs, first = [], None
    for seed in seeds:
        outputs = generate(model, tokenizer or parts.tokenizer, prompts, ev.max_new_tokens, ev.batch_size, ev.do_sample,
                           ev.temperature, ev.top_p, seed, device)
        first = first or outputs
        runs.append(score(outputs, references, parts.task))
    result = {k: statistics.mean(r[k] for r in runs) for k in runs[0]}
    if len(runs) > 1:
        result.update({f"{k}_std": statistics.stdev(r[k] for r in runs) for k in runs[0]})
    return result, first


def held_out(parts, split_name):
    """The evaluated examples of a split (limited to eval.max_examples). Examples, not raw records: teacher-forced
    metrics and generations then cover the same examples (records whose prompt did not fit max_length were
    dropped from both)."""
    return parts.splits[split_name].examples[:parts.config.eval.max_examples]


def reference_rows(parts, teacher_lm, split_name, device="cpu", log=print):
    """Generation scores of the teacher (when given) and of the trivial baselines on the held-out examples, and
    the teacher's outputs: what every student is reported beside (one pass per task in `compare`)."""
    examples = held_out(parts, split_name)
    references = [e.response for e in examples]
    rows, teacher_out = {}, [""] * len(examples)
    if teacher_lm is not None:
        log(f"generating {len(examples)} answers with the teacher")
        own = parts.teacher_examples(split_name)[:len(examples)]  # its own prompt format and tokens
        rows["teacher"], teacher_out = _generated_scores(teacher_lm, parts, [e.input_ids[:e.n_prompt] for e in own],
                                                         references, device, parts.teacher_tokenizer)
    train_responses = [r["response"] for r in parts.splits["train"].records] if "train" in parts.splits else []
    for name, (predictions, _) in baselines(train_responses, [e.prompt for e in examples], references,
                                            parts.task).items():
        rows[name] = score(predictions, references, parts.task)
    return rows, teacher_out


def evaluate(parts, student_lm, teacher, split_name, device="cpu", log=print):
    """Metrics dict for the student, teacher and baselines on `split_name` (limited to eval.max_examples)."""
    ev = parts.config.eval
    examples = held_out(parts, split_name)
    references = [e.response for e in examples]
    pad = parts.tokenizer.pad_token_id
    started = time.time()
    paired = parts.splits[split_name].paired
    if paired is not None:  # the teacher reads its own encoding of this split
        teacher = teacher_of(parts, split_name)
    forced = teacher_forced(student_lm, teacher if ev.teacher else None, examples, ev.batch_size, pad, device, paired)
    rows = {"student": {"ce": forced["ce"]}}
    if paired is not None:
        rows["student"]["bpb"] = forced["bpb"]
    if ev.teacher:
        if paired is None:
            rows["student"]["kl"] = forced["kl"]
        rows["teacher"] = {"ce": forced["teacher_ce"]}
        if paired is not None:
            rows["teacher"]["bpb"] = forced["teacher_bpb"]
    samples = []
    if ev.generate:
        prompts = [e.input_ids[:e.n_prompt] for e in examples]
        log(f"generating {len(prompts)} answers with the student")
        student_scores, student_out = _generated_scores(student_lm.lm, parts, prompts, references, device)
        rows["student"].update(student_scores)
        teacher_out = [""] * len(examples)
        if ev.baselines:
            reference, teacher_out = reference_rows(parts, teacher.lm if ev.teacher else None, split_name, device, log)
            if ev.teacher:
                rows["teacher"].update(reference.pop("teacher"))
            rows.update(reference)
        samples = [{"prompt": e.prompt, "reference": e.response, "student": s, "teacher": t}
                   for e, s, t in list(zip(examples, student_out, teacher_out))[:5]]
    if paired is not None:
        rows["student"]["bpb_bytes"] = forced["bpb_bytes"]  # the response text the bits per byte cover
    return {"split": split_name, "examples": len(examples), "response_tokens": forced["tokens"], "task": parts.task,
            "metrics": rows, "samples": samples, "seconds": round(time.time() - started, 1)}
