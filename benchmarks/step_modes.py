"""The modes of benchmarks/step.py: the benchmark's pair and batches, and one runner per mode whose `step(k)` is one
full optimizer step on batch k (cycled): Floor (floor, floor+lens), Ours (lmdistill's Trainer: kd, feature, lens,
kd-cache, fkl) and TRL (trl-gkd, trl-distill); for the cross-tokenizer pair (step_cross.py) CrossFloor (x-floor),
Ours (x-uld, x-gold, x-feature, x-uld-only) and TRLGold (trl-gold, step_gold.py); for on-policy steps
(step_onpolicy.py) op-ours, op-trl-gkd, op-trl-distill, gen-bare and gen-ours."""
import copy
import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F

from lmdistill.data import IGNORE
from lmdistill.teachers import response_positions
from step_cross import CROSS, CROSS_MODES, PAIR, CrossFloor, cross_config
from step_onpolicy import ONPOLICY, ONPOLICY_MODES, make_onpolicy

ROOT = Path(__file__).resolve().parent.parent
OURS = {
    "kd": [{"name": "ce", "weight": 0.5}, {"name": "logit_kd", "weight": 0.5, "divergence": "forward_kl"}],
    "feature": "flexkd",
    "lens": "distillens+ce",
    "kd-cache": [{"name": "ce", "weight": 0.5}, {"name": "logit_kd", "weight": 0.5, "divergence": "forward_kl"}],
    "fkl": [{"name": "logit_kd", "weight": 1.0, "divergence": "forward_kl"}],
}
MODES = ["floor", "floor+lens", *OURS, "trl-gkd", "trl-distill"]
ALL_MODES = MODES + CROSS_MODES + ONPOLICY_MODES


def modes_of(pair):
    return {PAIR: CROSS_MODES, ONPOLICY: ONPOLICY_MODES}.get(pair, MODES)


def quiet(*_):
    pass


def tiny_model(path, tokenizer_name="smollm2-135m-instruct", hidden=128, layers=4, seed=0):
    """A random llama with a built-in tokenizer and its whole vocabulary, saved at `path` (by default the tiny
    pair's 4-layer, 128-wide teacher with SmolLM2's tokenizer)."""
    from transformers import AutoModelForCausalLM, LlamaConfig
    from lmdistill.models import load_tokenizer
    tokenizer = load_tokenizer(tokenizer_name)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=3 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
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
        overrides += [f"teacher.model={tiny_model(workdir / 'teacher')}", "student.spec.hidden_size=64",
                      "student.spec.num_layers=2", "student.spec.num_heads=2", "student.spec.num_kv_heads=1"]
    if args.pair == PAIR:  # the student's encoding: its examples; the teacher's own: split.paired
        config = cross_config(ROOT / "configs/demo.yaml", overrides)
    else:
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
        return trl_update(t, self.model, loss)


def trl_update(trainer, model, loss):
    """What a TRL trainer does after its backward pass: clipping at 1.0, the optimizer's and scheduler's steps."""
    trainer.accelerator.clip_grad_norm_(model.parameters(), 1.0)
    trainer.optimizer.step()
    trainer.lr_scheduler.step()
    model.zero_grad(set_to_none=True)
    return float(loss.detach())


def with_objectives(parts, objectives, **changes):
    """(parts.config with these objectives and changes, the objectives built for parts' models)."""
    from lmdistill.config import build_config
    from lmdistill.objectives import build_objectives
    config = build_config({**parts.config.model_dump(mode="json"), "objectives": objectives, **changes})
    return config, build_objectives(config.objectives, objective_context(parts))


def objective_context(parts):
    """What objectives know of parts' models: with two tokenizers, both vocabularies and their shared tokens."""
    from lmdistill.build import objective_context as context
    student_tokenizer = parts.tokenizer if parts.cross_tokenizer else None  # parts.tokenizer: the student's
    return context(parts.teacher.config, parts.student.config, parts.vocab_size, parts.teacher_tokenizer,
                   student_tokenizer)


def lens_pairs(parts):
    """The (teacher, student) layer pairs of the lens objective in OURS['lens']."""
    return next(o.pairs for o in with_objectives(parts, OURS["lens"])[1] if o.name == "lens")


def make(mode, parts, batches, workdir):
    if mode in ONPOLICY_MODES:
        return make_onpolicy(mode, parts, batches, workdir)
    if mode == "x-floor":
        return CrossFloor(parts, batches)
    if mode == "trl-gold":
        from step_gold import TRLGold
        return TRLGold(parts, batches, workdir / mode)
    if mode in CROSS:
        return Ours(parts, batches, CROSS[mode], workdir / mode)
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
