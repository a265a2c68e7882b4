"""The on-policy modes of benchmarks/step.py (--pair onpolicy: the built-in pair, SmolLM2-135M-Instruct -> the demo's
6 x 256 student): every step, the student samples a response of up to --max-new-tokens tokens (temperature 1) to each
prompt of the batch, the teacher scores every token of them and the student takes one optimizer step on forward KL.
- op-ours: lmdistill's Trainer with train.responses {source: student, lmbda: 1} and logit_kd (forward KL);
- op-trl-gkd: trl.experimental.gkd.GKDTrainer.training_step with lmbda 1 and beta 0 (forward KL), then clipping
  and AdamW step;
- op-trl-distill: trl.DistillationTrainer (beta 0): its _prepare_inputs (which generates), compute_loss, backward,
  clipping and step, on the same prompts rendered by the same chat template and system prompt;
- gen-bare: a bare `model.generate` of the batch (left-padded prompts, KV cache, sampling), and
- gen-ours: lmdistill's responses.sampling.write on the same batch: their tokens per second are compared.
"""
import copy
import dataclasses

import torch

ONPOLICY = "onpolicy"
ONPOLICY_MODES = ["op-ours", "op-trl-gkd", "op-trl-distill", "gen-bare", "gen-ours"]
MAX_NEW_TOKENS = 32


def responses_config(max_new_tokens):
    from lmdistill.config import ResponsesConfig
    return ResponsesConfig(source="student", lmbda=1.0, max_new_tokens=max_new_tokens)


def prompts_of(batch):
    """Each example's prompt ids (before its first label)."""
    out = []
    for ids, labels in zip(batch["input_ids"], batch["labels"]):
        start = int((labels != -100).nonzero()[0])
        out.append(ids[:start].tolist())
    return out


class OnPolicyOurs:
    def __init__(self, parts, batches, workdir, max_new_tokens):
        from lmdistill.build import wrap
        from lmdistill.run import make_accelerator
        from lmdistill.train.batches import micro_batches
        from lmdistill.train.loop import Trainer
        from step_modes import quiet, with_objectives
        workdir.mkdir(parents=True, exist_ok=True)
        objectives = [{"name": "logit_kd", "weight": 1.0, "divergence": "forward_kl"}]
        config, built = with_objectives(parts, objectives, run_dir=str(workdir))
        config.train.responses = responses_config(max_new_tokens)
        mine = dataclasses.replace(parts, config=config, student=copy.deepcopy(parts.student), objectives=built)
        student_lm, teacher = wrap(mine)
        trainer = Trainer(mine, student_lm, teacher, make_accelerator(config), workdir, quiet)
        trainer.student.train()
        split = parts.splits["train"]
        trainer._micro_batches = lambda step: micro_batches(
            split, [batches[step % len(batches)]["index"].tolist()], trainer.pad, trainer.accelerator.device,
            trainer.writer, lambda: trainer.unwrapped.lm, step, trainer.accelerator.autocast)
        self.trainer = trainer

    def step(self, k):
        return self.trainer.train_step(k)[0]["loss"]


class Generate:
    """gen-bare or gen-ours: the student's sampled responses to batch k's prompts; returns the tokens generated."""

    def __init__(self, parts, batches, ours, max_new_tokens):
        from lmdistill.responses.sampling import left_padded, stop_ids
        self.model, self.ours, self.cfg = parts.student, ours, responses_config(max_new_tokens)
        self.pad, self.stop = parts.tokenizer.pad_token_id, stop_ids(parts.tokenizer, parts.config.data)
        self.prompts = [prompts_of(b) for b in batches]
        self.padded = [left_padded(p, self.pad) for p in self.prompts]

    def step(self, k):
        from lmdistill.responses.sampling import write
        i = k % len(self.prompts)
        if self.ours:
            return float(sum(len(r) for r in write(self.model, self.prompts[i], self.pad, self.stop, self.cfg, k)))
        ids, mask = self.padded[i]
        with torch.no_grad():
            out = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=self.cfg.max_new_tokens,
                                      do_sample=True, temperature=1.0, top_p=1.0, top_k=0, pad_token_id=self.pad,
                                      eos_token_id=self.stop)
        new = out[:, ids.shape[1]:]
        return float(((new != self.pad) | torch.isin(new, torch.tensor(self.stop))).sum())


class OnPolicyTRL:
    """GKDTrainer (lmbda 1) or DistillationTrainer, each generating on-policy inside its step."""

    def __init__(self, parts, batches, kind, workdir, max_new_tokens):
        from datasets import Dataset
        self.kind, self.parts = kind, parts
        system = parts.config.data.system_prompt
        self.messages = [[[{"role": "system", "content": system}, {"role": "user", "content": text}]
                          for text in self._prompt_texts(parts, b)] for b in batches]
        records = [{"prompt": m, "completion": [{"role": "assistant", "content": "y"}]} for m in self.messages[0]]
        common = dict(output_dir=str(workdir), per_device_train_batch_size=len(batches[0]["input_ids"]),
                      learning_rate=parts.config.train.lr, max_grad_norm=1.0, report_to=[], use_cpu=True,
                      temperature=1.0, beta=0.0, bf16=False, logging_steps=10**9, save_strategy="no")
        student = copy.deepcopy(parts.student)
        if kind == "op-trl-gkd":
            from trl.experimental.gkd import GKDConfig, GKDTrainer
            self.trainer = GKDTrainer(model=student, teacher_model=parts.teacher, args=GKDConfig(**common, lmbda=1.0,
                                                                                    max_new_tokens=max_new_tokens),
                                      train_dataset=Dataset.from_list(records), processing_class=parts.tokenizer)
            self.inputs = [self._gkd_inputs(b, parts.tokenizer.pad_token_id) for b in batches]
        else:
            from trl import DistillationConfig, DistillationTrainer
            self.trainer = DistillationTrainer(model=student, teacher_model=parts.teacher,
                                               args=DistillationConfig(**common, max_completion_length=max_new_tokens),
                                               train_dataset=Dataset.from_list(records),
                                               processing_class=parts.tokenizer)
        self.trainer.create_optimizer_and_scheduler(num_training_steps=10**6)
        self.trainer.current_gradient_accumulation_steps = 1  # what Trainer.train sets before its first step
        self.model = self.trainer.accelerator.prepare(self.trainer.model)
        self.model.train()

    @staticmethod
    def _prompt_texts(parts, batch):
        examples = parts.splits["train"].examples
        return [examples[i].prompt for i in batch["index"].tolist()]

    @staticmethod
    def _gkd_inputs(batch, pad_id):
        from lmdistill.responses.sampling import left_padded
        ids, mask = left_padded(prompts_of(batch), pad_id)
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "labels": batch["labels"],
                "prompts": ids, "prompt_attention_mask": mask}

    def step(self, k):
        t = self.trainer
        if self.kind == "op-trl-gkd":
            inputs = dict(self.inputs[k % len(self.inputs)])
            loss = t.training_step(self.model, inputs, num_items_in_batch=None)
        else:
            inputs = t._prepare_inputs([{"prompt": m} for m in self.messages[k % len(self.messages)]])
            with t.compute_loss_context_manager():
                loss = t.compute_loss(self.model, inputs, num_items_in_batch=inputs.get("num_items_in_batch"))
            t.accelerator.backward(loss)
        from step_modes import trl_update
        return trl_update(t, self.model, loss)


def make_onpolicy(mode, parts, batches, workdir, max_new_tokens=MAX_NEW_TOKENS):
    if mode == "op-ours":
        return OnPolicyOurs(parts, batches, workdir / mode, max_new_tokens)
    if mode.startswith("gen-"):
        return Generate(parts, batches, mode == "gen-ours", max_new_tokens)
    return OnPolicyTRL(parts, batches, mode, workdir / mode, max_new_tokens)
