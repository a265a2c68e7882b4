"""The training loop: one optimizer step = grad_accum micro-batches, every objective's token-sum
divided by the global number of response tokens in the step (across micro-batches and processes)."""
import math
import signal
import threading
import time
from collections import defaultdict
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from accelerate.utils import gather_object
from tqdm.auto import tqdm

from lmdistill.data import BatchOrder
from lmdistill.errors import UserError
from lmdistill.eval.teacher_forced import teacher_forced
from lmdistill.objectives import labels_of
from lmdistill.objectives.needs import union
from lmdistill.responses import make_writer
from lmdistill.teachers import response_positions
from lmdistill.train.batches import micro_batches
from lmdistill.train.gradient_norms import objective_gradient_norms
from lmdistill.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from lmdistill.train.logger import MetricsLogger
from lmdistill.train.schedule import warmup_cosine
from lmdistill.train.sharded_checkpoint import is_sharded_checkpoint, load_sharded, save_sharded
from lmdistill.train.sharding import gathered_root, grad_norm_and_clip, shard_models
from lmdistill.train.weighting import Weighting


def make_optimizer(parameters, cfg):
    """AdamW; no weight decay on vectors (norm weights, biases)."""
    params = [p for p in parameters if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)


class Trainer:
    def __init__(self, parts, student_lm, teacher, accelerator, run_dir, log=print, train_teacher=None):
        """`teacher` (online) evaluates on dev; `train_teacher` (default: the same; or a cached teacher, or one with
        another tokenizer reading the training split's encoding) trains."""
        self.parts, self.cfg, self.log = parts, parts.config.train, log
        self.accelerator, self.run_dir = accelerator, Path(run_dir)
        self.objectives, self.labels = parts.objectives, labels_of(parts.objectives)
        self.sharded = self.cfg.sharding == "fsdp"
        if self.sharded:  # (sharding moves each unit to the device: the whole teacher need not fit on one)
            shard_models(student_lm, teacher.model, accelerator.num_processes, log)
        for objective in self.objectives:
            objective.total_steps = self.cfg.steps  # for objectives with their own (per-pair) schedules
            # (sharded, every process runs a selection pass together)
            objective.prepare(parts.teacher, parts.teacher_examples("train"), parts.teacher_pad_id, log, self.run_dir)
        self.extra = torch.nn.ModuleDict({label: torch.nn.ModuleList(o.trainable_modules())
                                          for label, o in zip(self.labels, self.objectives) if o.trainable_modules()})
        self.teacher = teacher
        self.train_teacher = train_teacher or teacher
        self.needs = union(o.needs() for o in self.objectives)  # what each model's call must return
        self.optimizer = make_optimizer(list(student_lm.parameters()) + list(self.extra.parameters()), self.cfg)
        self.scheduler = warmup_cosine(self.optimizer, self.cfg.warmup_steps, self.cfg.steps, self.cfg.min_lr_ratio)
        if not self.sharded:  # (sharded, the plain optimizer: its state is saved shard by shard)
            student_lm, self.optimizer = accelerator.prepare(student_lm, self.optimizer)
        self.student = student_lm
        # Objectives call their modules directly, never through a DDP wrapper: train_step averages their gradients.
        self.extra.to(accelerator.device)
        self.pad = parts.tokenizer.pad_token_id
        self.order = BatchOrder(len(parts.splits["train"].examples), self.cfg.batch_size, self.cfg.grad_accum,
                                parts.config.seed, accelerator.num_processes, accelerator.process_index)
        self.weighting = Weighting(self.cfg.weighting, [o.weight for o in self.objectives],
                                   [o.params.schedule for o in self.objectives], self.cfg.steps)
        self.writer = make_writer(parts, accelerator)  # None unless the student writes responses
        self.step = 0
        self.bad_in_a_row = 0  # consecutive steps skipped for a non-finite loss or gradient
        self.skipped = 0
        self.interrupted = False

    @property
    def unwrapped(self):
        return self.student if self.sharded else self.accelerator.unwrap_model(self.student)

    def _no_sync(self, last):
        """Gradients are averaged over processes only at the last micro-batch of a step."""
        if self.sharded:
            self.student.set_requires_gradient_sync(last)
            return nullcontext()
        return nullcontext() if last else self.accelerator.no_sync(self.student)

    def resume(self):
        path = latest_checkpoint(self.run_dir)
        if path is None:
            return False
        extra = self.accelerator.unwrap_model(self.extra)
        load = load_sharded if is_sharded_checkpoint(path) else load_checkpoint
        self.step, state = load(path, self.unwrapped.lm, extra, self.optimizer, self.scheduler)
        self.skipped, self.bad_in_a_row = state.get("skipped", 0), state.get("bad_in_a_row", 0)
        self.weighting.load_state(state.get("weighting"))
        if self.writer is not None:
            self.writer.load_state(state["responses"][self.accelerator.process_index])
        self.log(f"resumed from {path} at step {self.step}")
        return True

    def _micro_batches(self, step):
        return micro_batches(self.parts.splits["train"], self.order.step(step), self.pad, self.accelerator.device,
                             self.writer, lambda: self.unwrapped.lm, step, self._writing)

    @contextmanager
    def _writing(self):
        """The context the student writes responses in (generate bypasses a sharded root's forward)."""
        with self.accelerator.autocast(), gathered_root(self.student if self.sharded else None):
            yield

    def train_step(self, step):
        """One optimizer step; returns per-token component losses, token counts and the grad norm."""
        acc = self.accelerator
        micro = self._micro_batches(step)
        local_tokens = sum(int(response_positions(b["labels"]).sum()) for b in micro)
        global_tokens = acc.reduce(torch.tensor(local_tokens, device=acc.device), "sum").item()
        # DDP and FSDP average gradients over processes; scaling by world size turns that into a global sum.
        scale = acc.num_processes / max(global_tokens, 1)
        for objective in self.objectives:
            objective.step = step
        if self.weighting.wants_gradients(step):
            self._measure_gradients(step, micro[0])
        weights = self.weighting.weights(step)
        on = self.weighting.on(step)  # an objective its schedule switches off is not computed
        sums = defaultdict(float)
        for k, batch in enumerate(micro):
            with self._no_sync(k == len(micro) - 1), acc.autocast():
                s, t = self._forward(self.student, batch)
                losses = [o.loss(s, t, batch) if active else None for o, active in zip(self.objectives, on)]
                total = sum(w * l for w, l in zip(weights, losses) if l is not None) * scale
            acc.backward(total)
            for label, l in zip(self.labels, losses):
                if l is not None:
                    sums[label] += l.detach().float()
        components = {label: acc.reduce(v, "sum").item() / global_tokens for label, v in sums.items()}
        components.update(self._objective_stats())
        components["loss"] = sum(w * components[label] for w, label, active in zip(weights, self.labels, on) if active)
        self.weighting.after_step(step, [components.get(label) for label in self.labels])
        components.update({f"weight_{label}": w for label, w in zip(self.labels, weights)})  # the weights used
        if acc.num_processes > 1:  # what DDP does for the student's gradients
            for p in self.extra.parameters():
                if p.grad is not None:
                    p.grad = acc.reduce(p.grad, "mean")
        # Gradients are already averaged over processes, so every process reaches the same verdict.
        params = list(self.student.parameters()) + list(self.extra.parameters())
        if self.sharded:
            grad_norm = grad_norm_and_clip(params, self.cfg.max_grad_norm or math.inf)
        else:
            grad_norm = float(acc.clip_grad_norm_(params, self.cfg.max_grad_norm or math.inf))
        if math.isfinite(components["loss"]) and math.isfinite(grad_norm):
            self.optimizer.step()
            self.bad_in_a_row = 0
        else:
            self._skip(step, components, grad_norm)
        self.scheduler.step()  # a skipped step still advances the schedule: lr stays a function of the step
        self.optimizer.zero_grad(set_to_none=True)
        seen = sum(int(b["attention_mask"].sum()) for b in micro)
        return components, seen * acc.num_processes, grad_norm if self.cfg.max_grad_norm else None

    def _objective_stats(self):
        """The extra numbers objectives log (Objective.take_stats), each a mean over every process."""
        out = {}
        for label, objective in zip(self.labels, self.objectives):
            for name, (total, count) in objective.take_stats().items():
                pair = self.accelerator.reduce(torch.tensor([total, count], device=self.accelerator.device,
                                                            dtype=torch.float64), "sum")
                if pair[1] > 0:
                    out[f"{label}_{name}"] = (pair[0] / pair[1]).item()
        return out

    def _forward(self, student, batch):
        """The student's and the (training) teacher's outputs on a micro-batch, with what the objectives need."""
        s = student(batch["input_ids"], batch["attention_mask"], batch["labels"], self.needs.student)
        t = self.train_teacher(batch, self.needs.teacher) if self.needs.teacher is not None else None
        return s, t

    def _measure_gradients(self, step, batch):
        """gradnorm: updates the weighting's factors from the objectives' gradient norms (train/gradient_norms.py)."""
        self.weighting.from_gradients(step, *objective_gradient_norms(self, step, batch))

    def _skip(self, step, components, grad_norm):
        self.bad_in_a_row += 1
        self.skipped += 1
        bad = [k for k, v in components.items() if not math.isfinite(v)] or [f"gradient norm ({grad_norm})"]
        self.log(f"warning: step {step + 1} skipped, non-finite {', '.join(bad)} "
                 f"({self.bad_in_a_row} in a row, {self.skipped} in all)")
        if self.bad_in_a_row >= self.cfg.max_bad_steps:
            raise UserError(f"training stopped at step {step + 1}: {self.bad_in_a_row} steps in a row had a non-finite "
                            f"{', '.join(bad)}; lower train.lr, set train.max_grad_norm, or check the data and "
                            f"objectives (train.max_bad_steps={self.cfg.max_bad_steps})")

    def evaluate_dev(self):
        dev = self.parts.splits.get("dev")
        if dev is None:
            return None
        return teacher_forced(self.unwrapped, self.teacher, dev.examples[:self.cfg.eval_examples],
                              self.parts.config.eval.batch_size, self.pad, self.accelerator.device, dev.paired)

    def save(self):
        counters = {"skipped": self.skipped, "bad_in_a_row": self.bad_in_a_row, "weighting": self.weighting.state()}
        if self.writer is not None:  # each process's own replay buffer
            counters["responses"] = gather_object([self.writer.state()])
        extra = self.accelerator.unwrap_model(self.extra)
        if self.sharded:
            return save_sharded(self.run_dir, self.step, self.unwrapped.lm, extra, self.optimizer, self.scheduler,
                                self.cfg.keep_checkpoints, counters, self.accelerator.is_main_process)
        if self.accelerator.is_main_process:
            return save_checkpoint(self.run_dir, self.step, self.unwrapped.lm, extra, self.optimizer,
                                   self.scheduler, self.parts.tokenizer, self.cfg.keep_checkpoints, counters)

    def _window_stats(self):
        """What the log adds for a window of steps: with written responses, the share of micro-batches of each kind,
        the probability that the student writes, and the share of the window's time spent generating."""
        if self.writer is None:
            return {}
        seconds = time.time() - self.window_start
        stats = {f"responses_{k}": v for k, v in self.writer.take_stats().items()}
        stats["responses_generate_share"] = (self.writer.seconds - self.window_generating) / max(seconds, 1e-9)
        self.window_generating = self.writer.seconds
        return stats

    def fit(self, stop_at=None):
        """Train to train.steps (or stop_at, leaving a checkpoint to --resume from); returns step losses."""
        cfg, acc = self.cfg, self.accelerator
        last = min(stop_at or cfg.steps, cfg.steps)
        self.student.train()
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not acc.is_main_process, dynamic_ncols=True,
                   mininterval=1.0, desc="train")
        self.window_tokens, self.window_start = 0, time.time()
        self.window_generating = self.writer.seconds if self.writer is not None else 0.0
        history = []
        if self.writer is not None and self.writer.wants_start:
            self.writer.after_dev(self.evaluate_dev()["ce"])  # the adaptive schedule's first reference point
        self.logger = MetricsLogger(self.run_dir, acc.is_main_process)  # opened here: fit() closes it on any exit
        try:
            with self._sigint_saves(), bar:  # (closing the bar on an error puts the error message on its own line)
                while self.step < last and not self._interrupt_requested():
                    self._fit_step(bar, history)
            self.save()
        finally:
            self.logger.close()  # also on an error: a TensorBoard writer left open keeps a thread alive
        if self.interrupted:
            self.log(f"interrupted at step {self.step}: checkpoint saved; continue with --resume")
            raise KeyboardInterrupt
        return history

    @contextmanager
    def _sigint_saves(self):
        """The first Ctrl-C asks the loop to stop after the current step and save; a second one stops at once."""
        def first(*_):
            self.interrupted = True
            signal.signal(signal.SIGINT, signal.default_int_handler)
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGINT, first)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _interrupt_requested(self):
        """Whether any process was interrupted: all processes stop at the same step."""
        if self.accelerator.num_processes == 1:
            return self.interrupted
        flag = torch.tensor(float(self.interrupted), device=self.accelerator.device)
        self.interrupted = self.accelerator.reduce(flag, "sum").item() > 0
        return self.interrupted

    def _fit_step(self, bar, history):
        cfg = self.cfg
        components, tokens, grad_norm = self.train_step(self.step)
        self.step += 1
        self.window_tokens += tokens
        history.append(components["loss"])
        rate = self.window_tokens / max(time.time() - self.window_start, 1e-9)
        bar.set_postfix(loss=f"{components['loss']:.3f}", tok_s=f"{rate:.0f}", refresh=False)
        bar.update(1)
        if self.step % cfg.log_every == 0 or self.step == cfg.steps:
            self.logger.log(self.step, "train", {**components, "lr": self.scheduler.get_last_lr()[0],
                                                 "grad_norm": grad_norm, "tokens_per_s": rate,
                                                 "skipped_steps": self.skipped, **self._window_stats()})
            self.window_tokens, self.window_start = 0, time.time()
        if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.steps:
            metrics = self.evaluate_dev()
            if metrics:
                if self.writer is not None:
                    self.writer.after_dev(metrics["ce"])
                self.logger.log(self.step, "dev", metrics)
                bar.write(f"step {self.step}: dev CE {metrics['ce']:.3f}"
                          + (f", KL {metrics['kl']:.3f}" if "kl" in metrics else ""))
            self.window_tokens, self.window_start = 0, time.time()  # tokens/s counts training time only
        if cfg.save_every and self.step % cfg.save_every == 0 and self.step < cfg.steps:
            self.save()
