"""Evaluate a student (and, for reference, the teacher and trivial baselines) on a held-out split."""
import statistics
import time

from lmdistill.build import teacher_of
from lmdistill.eval.generation import generate
from lmdistill.eval.repetition import loops, repetition
from lmdistill.eval.scores import baselines, score
from lmdistill.eval.teacher_forced import teacher_forced
from lmdistill.eval.teacher_scored import bits_per_byte, scored_examples, summary, teacher_scored


def _generated_scores(model, parts, prompts, references, device, tokenizer=None, scorer=None, sample=None):
    """Scores of one model's generations (one pass per seed when sampling: mean and std over seeds), and the texts
    of the first pass with their own scores. sample: sample instead of eval.do_sample's choice."""
    ev = parts.config.eval
    sample = ev.do_sample if sample is None else sample
    seeds = ev.seeds if sample else ev.seeds[:1]
    runs, first = [], None
    for seed in seeds:
        texts, ended = generate(model, tokenizer or parts.tokenizer, prompts, ev.max_new_tokens, ev.batch_size,
                                sample, ev.temperature, ev.top_p, seed, device)
        metrics, details = text_scores(texts, ended, references, parts.task, scorer)
        first = first or details
        runs.append(metrics)
    keys = [k for k in runs[0] if all(k in r for r in runs)]
    result = {k: statistics.mean(r[k] for r in runs) for k in keys}
    if len(runs) > 1:
        result.update({f"{k}_std": statistics.stdev(r[k] for r in runs) for k in keys})
    return result, first


def text_scores(texts, ended, references, task, scorer=None):
    """(metrics, per text {'text', 'loops', 'gen_bpb'}): ROUGE-L (and accuracy), repetition and, with a
    `scorer` (texts -> teacher_scored per text), the teacher's likelihood of the texts."""
    metrics = score(texts, references, task) | repetition(texts, ended)
    per = scorer(texts) if scorer is not None else [None] * len(texts)
    if scorer is not None:
        metrics |= summary(per)
    details = [{"text": t, "loops": loops(t, e), "gen_bpb": bits_per_byte(p) if p else None}
               for t, e, p in zip(texts, ended, per)]
    return metrics, details


def teacher_scorer(parts, teacher_lm, split_name, device="cpu"):
    """texts -> per text teacher_scored, each text read by the teacher after its own prompt of the held-out example
    at the same position; None without a teacher."""
    if teacher_lm is None:
        return None
    own = held_out_teacher(parts, split_name)
    tokenizer = parts.teacher_tokenizer or parts.tokenizer
    chat = parts.config.teacher.use_chat_template if parts.cross_tokenizer else None

    def scorer(texts):
        examples = scored_examples(tokenizer, [e.input_ids[:e.n_prompt] for e in own], [e.prompt for e in own], texts,
                                   parts.config.data, chat)
        return teacher_scored(teacher_lm, tokenizer, examples, parts.config.eval.batch_size, device)
    return scorer


def held_out(parts, split_name):
    """The evaluated examples of a split (limited to eval.max_examples). Examples, not raw records: teacher-forced
    metrics and generations then cover the same examples (records whose prompt did not fit max_length were
    dropped from both)."""
    return parts.splits[split_name].examples[:parts.config.eval.max_examples]


def held_out_teacher(parts, split_name):
    """The same examples in the teacher's own encoding."""
    return parts.teacher_examples(split_name)[:len(held_out(parts, split_name))]


def reference_rows(parts, teacher_lm, split_name, device="cpu", log=print):
    """Generation scores of the teacher (when given) and of the trivial baselines on the held-out examples, and
    the teacher's outputs: what every student is reported beside (one pass per task in `compare`)."""
    examples = held_out(parts, split_name)
    references = [e.response for e in examples]
    scorer = teacher_scorer(parts, teacher_lm, split_name, device)
    rows, teacher_out = {}, [None] * len(examples)
    if teacher_lm is not None:
        log(f"generating {len(examples)} answers with the teacher")
        own = held_out_teacher(parts, split_name)  # its own prompt format and tokens
        rows["teacher"], teacher_out = _generated_scores(teacher_lm, parts, [e.input_ids[:e.n_prompt] for e in own],
                                                         references, device, parts.teacher_tokenizer, scorer)
    train_responses = [r["response"] for r in parts.splits["train"].records] if "train" in parts.splits else []
    for name, (predictions, _) in baselines(train_responses, [e.prompt for e in examples], references,
                                            parts.task).items():
        rows[name], _ = text_scores(predictions, [True] * len(predictions), references, parts.task, scorer)
    return rows, teacher_out


def sample(example, student, teacher):
    """A sample of the report: the texts, with whether each loops and the teacher's bits per byte of it."""
    out = {"prompt": example.prompt, "reference": example.response}
    for name, details in (("student", student), ("teacher", teacher)):
        if details is not None:
            out |= {name: details["text"], f"{name}_loops": details["loops"],
                    f"{name}_gen_bpb": details["gen_bpb"]}
    return out


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
        scorer = teacher_scorer(parts, teacher.lm if ev.teacher else None, split_name, device)
        student_scores, student_out = _generated_scores(student_lm.lm, parts, prompts, references, device,
                                                        scorer=scorer)
        rows["student"].update(student_scores)
        if ev.also_sample:
            log(f"sampling {len(prompts)} answers with the student")
            rows["student (sampled)"], _ = _generated_scores(student_lm.lm, parts, prompts, references, device,
                                                             scorer=scorer, sample=True)
        teacher_out = [None] * len(examples)
        if ev.baselines:
            reference, teacher_out = reference_rows(parts, teacher.lm if ev.teacher else None, split_name, device, log)
            if ev.teacher:
                rows["teacher"].update(reference.pop("teacher"))
            rows.update(reference)
        samples = [sample(e, s, t) for e, s, t in list(zip(examples, student_out, teacher_out))[:5]]
    if paired is not None:
        rows["student"]["bpb_bytes"] = forced["bpb_bytes"]  # the response text the bits per byte cover
    return {"split": split_name, "examples": len(examples), "response_tokens": forced["tokens"], "task": parts.task,
            "metrics": rows, "samples": samples, "seconds": round(time.time() - started, 1)}
