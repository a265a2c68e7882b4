"""Time of one distillation step against its floor and against TRL, and each step's peak memory.

Modes, each a full optimizer step (forward, backward, gradient clipping at 1.0, AdamW step) on the same batches:
- floor: the teacher's forward (no_grad; logits at response positions) + the student's forward with plain CE,
  backward and step. No trainer around it: the least any logit distillation step must do.
- floor+lens: the floor plus what any logit lens must compute: the teacher's LM head on its lens rows (5 layers x
  response positions) and the student's LM head forward and backward on its own, with no divergence.
- kd (ce 0.5 + forward-KL 0.5, the demo's objectives), feature (flexkd: ce + Flex-KD feature loss), lens
  (distillens+ce: ce + reverse KL + 5-pair logit lens): lmdistill's `Trainer.train_step`, online teacher.
- kd-cache: kd with the teacher read from a teacher cache (logits: head) instead of run online.
- fkl: forward KL alone (no CE), the setting TRL's trainers run: compared with
  - trl-gkd: trl.experimental.gkd.GKDTrainer (off-policy: lmbda 0, beta 0 = forward KL, temperature 1), and
  - trl-distill: trl.DistillationTrainer (beta 0, temperature 1): its `compute_loss` (chunked JSD through the LM
    heads), backward, clipping and step on our completions (it generates its own completions on-policy; that
    generation is not timed),
  on the same models (each mode trains its own copy of the same initial student) and the same token ids.
Times: the modes interleaved in one process, --repeats rounds after --warmup rounds, median seconds per step.
Memory: each mode again in its own process: peak RSS (VmHWM, reset after warm-up) over 3 steps, and its
increase over the RSS held before the first step (models, optimizer state after warm-up).
TRL is installed only in the benchmark environment: `make bench-env`, then run with .venv-bench/bin/python.

    .venv-bench/bin/python benchmarks/step.py              # the built-in pair: SmolLM2-135M -> 6 x 256 student
    .venv-bench/bin/python benchmarks/step.py --pair tiny  # a random 4 x 128 teacher -> 2 x 64 student, quick
"""
import argparse
import copy
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from common import header, provenance, write_provenance
from lmdistill.data import IGNORE
from lmdistill.provenance import peak_memory_gib, reset_peak_memory, rss_gib
from lmdistill.teachers import response_positions

ROOT = Path(__file__).resolve().parent.parent
OURS = {
    "kd": [{"name": "ce", "weight": 0.5}, {"name": "logit_kd", "weight": 0.5, "divergence": "forward_kl"}],
    "feature": "flexkd",
    "lens": "distillens+ce",
    "kd-cache": [{"name": "ce", "weight": 0.5}, {"name": "logit_kd", "weight": 0.5, "divergence": "forward_kl"}],
    "fkl": [{"name": "logit_kd", "weight": 1.0, "divergence": "forward_kl"}],
}
MODES = ["floor", "floor+lens", *OURS, "trl-gkd", "trl-distill"]
RATIOS = [("kd", "floor", 1.10), ("feature", "floor", 1.10), ("lens", "floor", 1.35), ("floor+lens", "floor", None),
          ("lens", "floor+lens", None), ("fkl", "floor", None),
          ("fkl", "trl-gkd", 0.8), ("fkl", "trl-distill", 0.8), ("kd-cache", "kd", None)]


def quiet(*_):
    pass


def tiny_teacher(path):
    """A random 4-layer, 128-wide llama with SmolLM2's tokenizer and vocabulary, saved at `path`."""
    from transformers import AutoModelForCausalLM, LlamaConfig
    from lmdistill.models import load_tokenizer
    tokenizer = load_tokenizer("smollm2-135m-instruct")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def load(args, workdir):
    """lmdistill's parts for the pair (train split only) and the benchmark's batches (dicts with 'index')."""
    from lmdistill.build import build_parts
    from lmdistill.config import load_config
    from lmdistill.data import BatchOrder, collate
    overrides = [f"run_dir={workdir}/run", f"train.batch_size={args.batch_size}", f"data.max_length={args.max_length}",
                 f"data.max_train_examples={args.batch_size * args.batches}"]
    if args.pair == "tiny":
        overrides += [f"teacher.model={tiny_teacher(workdir / 'teacher')}", "student.spec.hidden_size=64",
                      "student.spec.num_layers=2", "student.spec.num_heads=2", "student.spec.num_kv_heads=1"]
    config = load_config(ROOT / "configs/demo.yaml", overrides)
    parts = build_parts(config, splits=("train",), log=quiet)
    examples = parts.splits["train"].examples
    order = BatchOrder(len(examples), args.batch_size, seed=0)
    batches = []
    for k in range(args.batches):
        index = order.micro_batch(k)
        batches.append({**collate([examples[i] for i in index], parts.tokenizer.pad_token_id),
                        "index": torch.tensor(index)})
    return parts, batches


class Floor:
    """The floor; with `lens`, also the logit lens's unavoidable work: both models' LM heads on the lens rows
    (teacher forward; student forward and backward), with no divergence."""

    def __init__(self, parts, batches, lens=False):
        from lmdistill.teachers import ResponseLM
        from lmdistill.train.loop import make_optimizer
        self.student = ResponseLM(copy.deepcopy(parts.student), parts.vocab_size).train()
        self.teacher = ResponseLM(parts.teacher, parts.vocab_size)
        self.optimizer = make_optimizer(self.student.parameters(), parts.config.train)
        self.batches = batches
        self.pairs = lens_pairs(parts) if lens else []

    def step(self, k):
        from lmdistill.teachers import Request
        from lmdistill.teachers.outputs import lens_input, lm_head_logits
        b = self.batches[k % len(self.batches)]
        args = b["input_ids"], b["attention_mask"], b["labels"]
        with torch.no_grad():
            t = self.teacher(*args, Request(hidden=tuple(t for t, _ in self.pairs)))
            if self.pairs:
                lm_head_logits(t.lm, torch.cat([lens_input(t.lm, t.hidden[l], l, True) for l, _ in self.pairs]))
        out = self.student(*args, Request(hidden=tuple(s for _, s in self.pairs)))
        loss = F.cross_entropy(out.logits, out.targets)
        if self.pairs:
            rows = torch.cat([lens_input(out.lm, out.hidden[l], l, True) for _, l in self.pairs])
            loss = loss + lm_head_logits(out.lm, rows).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.student.parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


class Ours:
    """lmdistill's Trainer on its own copy of the student, fed the benchmark's batches."""

    def __init__(self, parts, batches, objectives, workdir, cached=False):
        from lmdistill.build import wrap
        from lmdistill.run import make_accelerator
        from lmdistill.train.loop import Trainer
        workdir.mkdir(parents=True, exist_ok=True)
        config, built = with_objectives(parts, objectives, run_dir=str(workdir))
        mine = dataclasses.replace(parts, config=config, student=copy.deepcopy(parts.student), objectives=built)
        student_lm, teacher = wrap(mine)
        train_teacher = self._cache(mine, workdir) if cached else None
        self.trainer = Trainer(mine, student_lm, teacher, make_accelerator(config), workdir, quiet, train_teacher)
        self.trainer.student.train()
        self.trainer._micro_batches = lambda step: [batches[step % len(batches)]]

    @staticmethod
    def _cache(parts, workdir):
        from lmdistill.config import CacheSettings
        from lmdistill.teachers.cache import load_or_build
        from lmdistill.teachers.cached import CachedTeacher
        cache = load_or_build(workdir / "cache", parts.teacher, parts.tokenizer, parts.splits["train"].examples,
                              parts.vocab_size, [], CacheSettings(logits="head"), log=quiet)
        return CachedTeacher(cache, parts.teacher)

    def step(self, k):
        return self.trainer.train_step(k)[0]["loss"]


class TRL:
    """One of TRL's distillation trainers on its own copy of the student, fed the same token ids."""

    def __init__(self, parts, batches, kind, workdir):
        from datasets import Dataset
        self.kind = kind
        records = [{"prompt": [{"role": "user", "content": "x"}], "completion": [{"role": "assistant", "content": "y"}]}] * 8
        common = dict(output_dir=str(workdir), per_device_train_batch_size=len(batches[0]["input_ids"]),
                      learning_rate=parts.config.train.lr, max_grad_norm=1.0, report_to=[], use_cpu=True,
                      temperature=1.0, beta=0.0, bf16=False, logging_steps=10**9, save_strategy="no")
        student = copy.deepcopy(parts.student)
        if kind == "trl-gkd":
            from trl.experimental.gkd import GKDConfig, GKDTrainer
            self.trainer = GKDTrainer(model=student, teacher_model=parts.teacher, args=GKDConfig(**common, lmbda=0.0),
                                      train_dataset=Dataset.from_list(records), processing_class=parts.tokenizer)
            self.inputs = [{k: b[k] for k in ("input_ids", "attention_mask", "labels")} for b in batches]
        else:
            from trl import DistillationConfig, DistillationTrainer
            self.trainer = DistillationTrainer(model=student, teacher_model=parts.teacher,
                                               args=DistillationConfig(**common), train_dataset=Dataset.from_list(records),
                                               processing_class=parts.tokenizer)
            self.inputs = [self._split(b, parts.tokenizer.pad_token_id) for b in batches]
        self.trainer.create_optimizer_and_scheduler(num_training_steps=10**6)
        self.model = self.trainer.accelerator.prepare(self.trainer.model)
        self.model.train()

    @staticmethod
    def _split(batch, pad_id):
        """Our right-padded sequences as TRL's prompt (left-padded) + completion (right-padded) tensors."""
        from torch.nn.utils.rnn import pad_sequence
        prompts, completions = [], []
        for ids, mask, labels in zip(batch["input_ids"], batch["attention_mask"], batch["labels"]):
            start = int((labels != IGNORE).nonzero()[0])
            end = int(mask.sum())
            prompts.append(ids[:start])
            completions.append(ids[start:end])
        prompt_ids = pad_sequence(prompts, batch_first=True, padding_value=pad_id, padding_side="left")
        completion_ids = pad_sequence(completions, batch_first=True, padding_value=pad_id)
        prompt_mask = pad_sequence([torch.ones_like(p) for p in prompts], batch_first=True, padding_side="left")
        completion_mask = pad_sequence([torch.ones_like(c) for c in completions], batch_first=True)
        return {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "completion_ids": completion_ids,
                "completion_mask": completion_mask, "num_items_in_batch": completion_mask.sum()}

    def step(self, k):
        t = self.trainer
        inputs = self.inputs[k % len(self.inputs)]
        n = int(response_positions(inputs["labels"]).sum()) if self.kind == "trl-gkd" else inputs["num_items_in_batch"]
        with t.compute_loss_context_manager():
            loss = t.compute_loss(self.model, inputs, num_items_in_batch=n)
        t.accelerator.backward(loss)
        t.accelerator.clip_grad_norm_(self.model.parameters(), 1.0)
        t.optimizer.step()
        t.lr_scheduler.step()
        self.model.zero_grad(set_to_none=True)
        return float(loss)


def with_objectives(parts, objectives, **changes):
    """(parts.config with these objectives and changes, the objectives built for parts' models)."""
    from lmdistill.build import ObjectiveContext
    from lmdistill.config import build_config
    from lmdistill.objectives import build_objectives
    config = build_config({**parts.config.model_dump(mode="json"), "objectives": objectives, **changes})
    context = ObjectiveContext(parts.teacher.config, parts.student.config, parts.vocab_size)
    return config, build_objectives(config.objectives, context)


def lens_pairs(parts):
    """The (teacher, student) layer pairs of the lens objective in OURS['lens']."""
    return next(o.pairs for o in with_objectives(parts, OURS["lens"])[1] if o.name == "lens")


def make(mode, parts, batches, workdir):
    if mode in ("floor", "floor+lens"):
        return Floor(parts, batches, lens=mode == "floor+lens")
    if mode.startswith("trl-"):
        return TRL(parts, batches, mode, workdir / mode)
    return Ours(parts, batches, OURS[mode], workdir / mode, cached=mode == "kd-cache")


def has_trl():
    try:
        import trl  # noqa: F401
        return True
    except ImportError:
        return False


def trl_version():
    import trl
    return trl.__version__


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def profile(runner, first_step, steps=3):
    """torch profiler's table of the operators taking the most time over `steps` steps."""
    from torch.profiler import ProfilerActivity
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with torch.profiler.profile(activities=activities) as prof:
        for k in range(first_step, first_step + steps):
            runner.step(k)
    sort = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=sort, row_limit=15)


def time_modes(args, modes, workdir):
    parts, batches = load(args, workdir)
    runners = {mode: make(mode, parts, batches, workdir) for mode in modes}
    times = {mode: [] for mode in modes}
    first_loss = {}
    for r in range(args.warmup + args.repeats):
        for mode, runner in runners.items():  # interleaved: a slow phase of the machine hits every mode alike
            sync()
            start = time.perf_counter()
            loss = runner.step(r)
            sync()
            first_loss.setdefault(mode, loss)
            if r >= args.warmup:
                times[mode].append(time.perf_counter() - start)
    tokens = sum(int(b["attention_mask"].sum()) for b in batches) / len(batches)
    profiles = {mode: profile(runners[mode], args.warmup + args.repeats) for mode in args.profile if mode in runners}
    return profiles, {mode: {"median_s": statistics.median(t), "min_s": min(t), "max_s": max(t),
                             "first_loss": first_loss[mode], "rounds_s": t} for mode, t in times.items()}, tokens


def memory_of(args, mode, workdir):
    """In this (fresh) process: peak RSS over 3 steps of `mode` after 2 warm-up steps, and the increase over before."""
    parts, batches = load(args, workdir)
    runner = make(mode, parts, batches, workdir)
    for k in range(2):
        runner.step(k)
    before = rss_gib()
    reset_peak_memory()
    for k in range(2, 5):
        runner.step(k)
    peak = peak_memory_gib()  # since the reset: these 3 steps
    return {**peak, "step_increase_gib": peak["peak_rss_gib"] - before}


def memory_modes(args, modes):
    out = {}
    for mode in modes:
        cmd = [sys.executable, __file__, "--memory-of", mode, "--pair", args.pair, "--batch-size", str(args.batch_size),
               "--max-length", str(args.max_length), "--batches", str(args.batches)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"memory of {mode} failed:\n{done.stderr[-3000:]}")
        out[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


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


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pair", choices=["builtin", "tiny"], default="builtin")
    p.add_argument("--modes", nargs="+", choices=MODES, default=None, help="default: all (TRL's when installed)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--batches", type=int, default=4, help="distinct batches, cycled")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--no-memory", action="store_true", help="skip the per-mode memory processes")
    p.add_argument("--profile", nargs="*", default=["floor+lens", "lens"], choices=MODES,
                   help="modes whose operator profile is added to the report")
    p.add_argument("--out", default=None, help="default: benchmarks/results/step/PAIR.md")
    p.add_argument("--memory-of", help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        if args.memory_of:
            print(json.dumps(memory_of(args, args.memory_of, Path(tmp))))
            return
        modes = args.modes or [m for m in MODES if has_trl() or not m.startswith("trl-")]
        out = Path(args.out or ROOT / f"benchmarks/results/step/{args.pair}.md")
        record = provenance(out.parent)
        profiles, times, tokens = time_modes(args, modes, Path(tmp))
    memory = {} if args.no_memory else memory_modes(args, modes)
    text = report(args, times, tokens, memory, modes, record)
    for mode, table in profiles.items():
        text += f"\n## Profile of {mode} (3 steps)\n\n```\n{table}\n```\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    (out.with_suffix(".json")).write_text(json.dumps({"times": times, "memory": memory, "tokens": tokens}, indent=1))
    write_provenance(out.with_suffix(".provenance.json"), record)
    print(text)


if __name__ == "__main__":
    main()
