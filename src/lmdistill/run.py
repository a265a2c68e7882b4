"""The `train` and `eval` jobs: build parts, run, write outputs into the run directory."""
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from lmdistill import data
from lmdistill.build import build_parts, check_teacher, planned_objectives, teacher_of, wrap
from lmdistill.config import build_config, save_config
from lmdistill.config_keys import read_yaml
from lmdistill.errors import UserError
from lmdistill.eval.report import render_report
from lmdistill.eval.run import evaluate
from lmdistill.io import atomic_dir, atomic_write_json, atomic_write_text
from lmdistill.models.builtin import BUILTIN
from lmdistill.objectives.needs import union
from lmdistill.provenance import command_line, commit_text, machine, peak_memory_gib, peak_memory_text
from lmdistill.provenance import record as provenance_record
from lmdistill.responses import check_responses, describe, fit_prompts, with_teacher_responses
from lmdistill.teachers.cross_tokenizer import CrossTokenizerTeacher
from lmdistill.train.sharding import check_sharding, decoder_layers, full_state_dict, gathered_root

# Keys that may change when a run is resumed; anything else must match the saved config.
RESUMABLE_CHANGES = ("train.steps", "train.eval_every", "train.save_every", "train.log_every", "eval.")


# What a run writes; --overwrite removes these and nothing else, so a run_dir that also holds a user's
# own files (or was mistyped as one) loses nothing but lmdistill outputs.
OUTPUTS = ("config.yaml", "metrics.jsonl", "tensorboard", "checkpoints", "student", "report.md", "eval.json",
           "eval-dev.json", "eval-dev.md", "eval-test.json", "eval-test.md", "selection")


def remove_outputs(run_dir):
    for name in OUTPUTS:
        path = Path(run_dir) / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _check_resume_config(config, run_dir):
    saved = _flatten(build_config(read_yaml(run_dir / "config.yaml")).model_dump(mode="json"))
    now = _flatten(config.model_dump(mode="json"))
    for key in sorted(set(saved) | set(now)):
        if saved.get(key) != now.get(key) and not key.startswith(RESUMABLE_CHANGES):
            raise UserError(f"cannot resume {run_dir}: {key} was {saved.get(key)!r}, now {now.get(key)!r}; "
                            f"use the run's own config ({run_dir / 'config.yaml'}) or a new run_dir")


def _prepare_run_dir(config, resume, overwrite):
    run_dir = Path(config.run_dir)
    has_run = (run_dir / "config.yaml").is_file()
    if resume and not has_run:
        raise UserError(f"--resume: {run_dir} holds no run to resume; drop --resume to start one")
    if has_run and not (resume or overwrite):
        raise UserError(f"{run_dir} already holds a run; pass --resume to continue it or --overwrite to replace it")
    if resume:
        _check_resume_config(config, run_dir)
    return run_dir


def make_accelerator(config):
    from accelerate import Accelerator
    precision = config.train.mixed_precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    # cpu=True on a machine without CUDA lets several launched processes find each other over gloo.
    return Accelerator(mixed_precision=precision, cpu=not torch.cuda.is_available())


def train(config, resume=False, overwrite=False, stop_at=None, log=print):
    """Train a student as the config says; returns the final evaluation result (None when stopped early)."""
    accelerator = make_accelerator(config)
    try:
        return _train(config, accelerator, resume, overwrite, stop_at, log)
    finally:
        accelerator.end_training()  # a multi-process run's process group is destroyed also on an error


def models_line(config):
    """Which teacher and student a run uses, in one line."""
    student = config.student
    if student.model is not None:
        made = f"pretrained {student.model}"
    elif student.spec is not None:
        spec = student.spec
        made = f"fresh {spec.arch} {spec.num_layers} layers x {spec.hidden_size} wide"
    else:
        made = f"cut from the teacher ({student.from_teacher.importance} importance)"
    teacher = config.teacher.model
    if teacher in BUILTIN:
        teacher += f" (built-in: {BUILTIN[teacher]['file']} dequantised)"
    return f"teacher {teacher} ({config.teacher.dtype}); student {made} ({student.dtype})"


def _check_before_output(parts, run_dir, log):
    """What a user can fix and only the built models can tell: checked before the run writes anything."""
    log(f"models: {models_line(parts.config)}")
    log(f"data: {data.describe(parts.config.data, parts.splits)}")
    log(f"training responses: {describe(parts.config.train.responses)}")
    for split in parts.splits.values():
        log(f"{split.name}: {split.stats.summary(parts.config.data.max_length)}")
        if split.paired is not None:
            log(f"{split.name}: alignment: {split.paired.alignment_summary()}")
    for objective in parts.objectives:
        objective.check(parts.teacher, parts.teacher_examples("train"), run_dir)
    if parts.config.train.sharding == "fsdp":
        decoder_layers(parts.student), decoder_layers(parts.teacher)  # a model it cannot wrap: one line, exit 2


def _train(config, accelerator, resume, overwrite, stop_at, log):
    from lmdistill.train.loop import Trainer
    if not accelerator.is_main_process:
        log = lambda *_: None  # noqa: E731
    run_dir = _prepare_run_dir(config, resume, overwrite)
    check_sharding(config, accelerator.num_processes)
    if config.teacher_cache is not None:
        from lmdistill.teachers.cache import check_dir
        from lmdistill.teachers.cached import CachedTeacher
        check_teacher(CachedTeacher, planned_objectives(config))  # from the models' configs: before any model loads
        check_dir(config.teacher_cache.dir)  # before anything is written
    seed_everything(config.seed)
    started = time.time()
    parts = build_parts(config, log=log)
    check_responses(parts)
    parts = fit_prompts(with_teacher_responses(parts, accelerator.device, log, accelerator.is_main_process,
                                               accelerator.wait_for_everyone), log)
    _check_before_output(parts, run_dir, log)
    accelerator.wait_for_everyone()  # every process has checked run_dir before the main one writes to it
    if accelerator.is_main_process:
        if overwrite and not resume:
            remove_outputs(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / "config.yaml")
    accelerator.wait_for_everyone()
    if config.train.sharding != "fsdp" or config.teacher_cache is not None:
        # (under fsdp, sharding moves the teacher to the device unit by unit; the cache is built by one process)
        parts.teacher.to(accelerator.device)
    student_lm, teacher = wrap(parts)
    dev_teacher = teacher_of(parts, "dev") if parts.cross_tokenizer and "dev" in parts.splits else teacher
    trainer = Trainer(parts, student_lm, dev_teacher, accelerator, run_dir, log,
                      train_teacher=training_teacher(parts, accelerator, log) or teacher)
    if resume:
        trainer.resume()
    # a pretrained student's own level, and any student's across tokenizers, where bits per byte compare the two
    measured = config.student.spec is None or parts.cross_tokenizer
    before = untrained(parts, student_lm, accelerator, trainer.sharded) if measured and not resume else None
    n_params = sum(p.numel() for p in parts.student.parameters())
    log(f"student: {n_params / 1e6:.1f}M parameters; teacher: "
        f"{sum(p.numel() for p in parts.teacher.parameters()) / 1e6:.1f}M; {config.train.steps} steps")
    train_start = time.time()
    history = trainer.fit(stop_at)
    if trainer.step < config.train.steps:
        log(f"stopped at step {trainer.step}; continue with --resume")
        return None
    times = (started, train_start, time.time())
    if trainer.sharded:  # sharded models are gathered and evaluated by every process together; the main one writes
        result = _finish(parts, trainer, teacher, run_dir, history, times, log, before)
        _part_ways(accelerator)
        return result
    _part_ways(accelerator)
    if not accelerator.is_main_process:
        return None
    return _finish(parts, trainer, teacher, run_dir, history, times, log, before)


def _part_ways(accelerator):
    """All processes leave the process group together: one that tears it down while another still holds it open can
    abort the other (gloo). Unsharded, the main process then evaluates and writes alone."""
    accelerator.wait_for_everyone()
    accelerator.state.destroy_process_group()


def untrained(parts, student_lm, accelerator, sharded=False):
    """The student's teacher-forced CE and bits per byte on the held-out examples before training (a pretrained
    student's own level, what distillation must improve on); a sharded student is run by every process together."""
    from lmdistill.eval.run import held_out
    from lmdistill.eval.teacher_forced import teacher_forced
    if not accelerator.is_main_process and not sharded:
        return None
    split = parts.config.eval.split
    forced = teacher_forced(student_lm, None, held_out(parts, split), parts.config.eval.batch_size,
                            parts.tokenizer.pad_token_id, accelerator.device, parts.splits[split].paired)
    return {"ce": forced["ce"], **({"bpb": forced["bpb"]} if parts.cross_tokenizer else {})}


def _finish(parts, trainer, teacher, run_dir, history, times, log, before=None):
    """Save the student, evaluate it and write eval.json and report.md beside it."""
    config, accelerator, n_params = parts.config, trainer.accelerator, sum(p.numel() for p in parts.student.parameters())
    started, train_start, train_end = times
    train_seconds = train_end - train_start
    save_student(trainer, parts.tokenizer, run_dir / "student")
    with gathered_root(trainer.unwrapped), gathered_root(getattr(teacher, "model", None)):
        result = evaluate(parts, trainer.unwrapped, teacher, config.eval.split, accelerator.device, log)
    if not accelerator.is_main_process:
        return None
    if before is not None:
        rows = result["metrics"]
        result["metrics"] = {"student": rows.pop("student"), "student before training": before, **rows}
    facts = {"steps": config.train.steps, "train loss (first -> last 10 steps)":
             f"{np.mean(history[:10]):.3f} -> {np.mean(history[-10:]):.3f}" if history else "resumed at the end",
             "train time": f"{train_seconds:.0f} s", "wall time": f"{time.time() - started:.0f} s",
             "peak memory": peak_memory_text(), "student parameters": f"{n_params / 1e6:.1f}M",
             "models": models_line(config), "data": data.describe(config.data, parts.splits),
             "training responses": describe(config.train.responses),
             "objectives": ", ".join(f"{o.name} x {o.weight}" for o in parts.objectives),
             "teacher in training": f"{trainer.train_teacher.kind} {config.teacher_cache.dir}"
             if trainer.train_teacher.kind.startswith("cache") else trainer.train_teacher.kind, "command": command_line()}
    result["resources"] = {"train_seconds": round(train_seconds, 1), "wall_seconds": round(time.time() - started, 1),
                           **peak_memory_gib(), "machine": machine(accelerator.device, accelerator.num_processes)}
    # the commit (clean or not), library versions, kernels, command and date this result comes from; the run's own
    # directory does not count as an uncommitted change (it is being written)
    result["provenance"] = provenance_record(accelerator.device, accelerator.num_processes, exclude=[run_dir])
    facts["code"] = commit_text(result["provenance"]["git"])
    write_results(run_dir, result, facts, log)
    return result


def save_student(trainer, tokenizer, directory):
    """The trained student as a plain save_pretrained directory (sharded weights gathered first)."""
    weights = full_state_dict(trainer.unwrapped.lm) if trainer.sharded else None
    if not trainer.accelerator.is_main_process:
        return
    with atomic_dir(directory) as tmp:
        trainer.unwrapped.lm.save_pretrained(tmp, safe_serialization=True, state_dict=weights)
        tokenizer.save_pretrained(tmp)


def training_teacher(parts, accelerator, log=print):
    """The teacher read from config.teacher_cache (built by the main process when missing or stale), or None (the
    online teacher trains)."""
    cfg, needs = parts.config.teacher_cache, union(o.needs() for o in parts.objectives)
    if cfg is None or needs.teacher is None:  # e.g. SFT: nothing to read
        return None
    if parts.cross_tokenizer:  # the cache holds the teacher's own encoding, bound to the student's tokenizer too
        from lmdistill.teachers.cached import shared_cache
        cache = shared_cache(cfg, parts.teacher, parts.teacher_tokenizer, parts.teacher_examples("train"),
                             len(parts.teacher_tokenizer), needs.teacher.hidden, accelerator.is_main_process,
                             accelerator.wait_for_everyone, log, student_tokenizer=parts.tokenizer)
        return CrossTokenizerTeacher(parts.teacher, len(parts.teacher_tokenizer), parts.teacher_pad_id,
                                     parts.splits["train"].paired, cache)
    from lmdistill.teachers.cached import cached_teacher
    return cached_teacher(cfg, parts.teacher, parts.tokenizer, parts.splits["train"].examples, parts.vocab_size,
                          needs.teacher.hidden, accelerator.is_main_process, accelerator.wait_for_everyone, log)


def write_results(run_dir, result, facts, log=print, json_name="eval.json", report_name="report.md"):
    atomic_write_json(Path(run_dir) / json_name, {**result, "facts": facts})
    report = render_report(result, facts)
    atomic_write_text(Path(run_dir) / report_name, report)
    log(report)


def evaluate_run(run_dir, overrides=(), student=None, split=None, log=print):
    """`lmdistill eval`: evaluate a trained run's student (or another student) with the run's config."""
    from lmdistill.config import apply_overrides
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir} is not a run directory (no config.yaml); give the run_dir of `lmdistill train`")
    config = build_config(apply_overrides(read_yaml(run_dir / "config.yaml"), overrides))
    split = split or config.eval.split
    if data.split_path(config.data, split) is None:
        raise UserError(f"the run's config gives no data.{split}; pass --set data.{split}=FILE.jsonl or another --split")
    student_path = student or run_dir / "student"
    if not Path(student_path).exists():
        raise UserError(f"no student at {student_path}; finish training first or pass --student")
    started = time.time()
    parts = build_parts(config, splits=("train", split), student_path=str(student_path))
    student_lm, teacher = wrap(parts)
    result = evaluate(parts, student_lm, teacher, split, log=log)
    result["provenance"] = provenance_record(exclude=[run_dir])
    facts = {"student": str(student_path), "data": data.describe(config.data, parts.splits),
             "command": command_line(), "wall time": f"{time.time() - started:.0f} s", "peak memory": peak_memory_text(),
             "code": commit_text(result["provenance"]["git"])}
    write_results(run_dir, result, facts, log, f"eval-{split}.json", f"eval-{split}.md")
    return result
