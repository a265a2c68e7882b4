"""trl-gold: TRL 1.16's GOLDTrainer (trl.experimental.gold) on the gemma-smollm2 pair's batches: cross-tokenizer
ULD with byte-offset alignment (use_extended_uld) and the chain-rule ("bayesian") merge, ULD alone (CE weight 0),
temperatures 1, off-policy (lmbda 0), on its own copy of the same initial student.

Its inputs. The student's are ours: the batch's ids, mask and labels, and each response token's byte offsets in the
response text (TRL's own encode_with_byte_offsets); the end-of-response suffix, which is no response text, gets the
zero-width offset at the text's end, as TRL gives the teacher's appended EOS. The teacher's are built inside
compute_loss from the texts it is given: the teacher's own prompt format (Gemma-3-270m's plain 'prompt\\n', as our
paired encoding renders it) and the response text. TRL 1.16's build_teacher_inputs_from_texts refuses tokenizers
that are not byte-level BPE (Gemma's is SentencePiece-style), so `teacher_inputs_from_texts` stands in for it: the
same tokenization (prompt with special tokens, completion without, EOS appended), with byte offsets from the
tokenizer's character offsets. The teacher ids it builds are checked against our paired encoding: both trainers
see the same texts and the same token ids on each side."""
import copy
from unittest import mock

import torch
from torch.nn.utils.rnn import pad_sequence

from lmdistill.data import IGNORE, collate
from lmdistill.data.encode import render


def byte_starts(text):
    """[len(text) + 1]: the byte offset of each character of `text` (and of its end) in its UTF-8 encoding."""
    out = [0]
    for ch in text:
        out.append(out[-1] + len(ch.encode("utf-8")))
    return out


def teacher_inputs_from_texts(tokenizer, prompt_texts, completion_texts, use_extended_uld=True):
    """TRL GOLD's build_teacher_inputs_from_texts for any fast tokenizer: (input_ids, labels, attention_mask,
    byte_offsets [B, L, 2]), right-padded, byte offsets relative to each completion text, (0, 0) on the prompt and
    padding, the appended EOS at (text bytes, text bytes). The offsets are always computed (trl-gold runs extended
    ULD)."""
    prompts = tokenizer(prompt_texts, add_special_tokens=True)["input_ids"]
    completions = tokenizer(completion_texts, add_special_tokens=False, return_offsets_mapping=True)
    eos = tokenizer.eos_token_id
    ids, labels, offsets = [], [], []
    for prompt, tokens, spans, text in zip(prompts, completions["input_ids"], completions["offset_mapping"],
                                           completion_texts):
        if prompt and prompt[-1] == eos:
            prompt = prompt[:-1]
        at, end = byte_starts(text), len(text.encode("utf-8"))
        sequence = torch.tensor(prompt + tokens + [eos])
        ids.append(sequence)
        labels.append(torch.cat([torch.full((len(prompt),), IGNORE), sequence[len(prompt):]]))
        offsets.append(torch.tensor([(0, 0)] * len(prompt) + [(at[a], at[b]) for a, b in spans] + [(end, end)]))
    pad = tokenizer.pad_token_id
    input_ids = pad_sequence(ids, batch_first=True, padding_value=pad)
    mask = pad_sequence([torch.ones_like(s) for s in ids], batch_first=True).bool()
    return input_ids, pad_sequence(labels, batch_first=True, padding_value=IGNORE), mask, \
        pad_sequence(offsets, batch_first=True)


def student_byte_offsets(parts, batch):
    """[B, L, 2]: each student response token's byte offsets in its response text ((0, 0) elsewhere)."""
    from trl.experimental.utils import encode_with_byte_offsets
    split = parts.splits["train"]
    out = torch.zeros(*batch["input_ids"].shape, 2, dtype=torch.long)
    for row, i in enumerate(batch["index"].tolist()):
        example, n_text = split.examples[i], split.paired.text_tokens[i][1]
        [(ids, spans)] = encode_with_byte_offsets(parts.tokenizer.backend_tokenizer, [example.response])
        response = example.input_ids[example.n_prompt:]
        if ids[:n_text] != response[:n_text]:
            raise RuntimeError(f"example {i}: TRL's tokenization of the response is not the student's encoding")
        end = len(example.response.encode("utf-8"))
        spans = spans[:n_text] + [(end, end)] * (len(response) - n_text)
        out[row, example.n_prompt:len(example.input_ids)] = torch.tensor(spans)
    return out


class TRLGold:
    """trl-gold: GOLDTrainer's compute_loss, backward, clipping at 1.0 and AdamW step, as the TRL runner of
    step_modes does for its trainers."""

    def __init__(self, parts, batches, workdir):
        from datasets import Dataset
        from trl.experimental.gold import GOLDConfig, GOLDTrainer
        records = [{"prompt": [{"role": "user", "content": "x"}],
                    "completion": [{"role": "assistant", "content": "y"}]}] * 8  # not read: steps get our inputs
        args = GOLDConfig(output_dir=str(workdir), per_device_train_batch_size=len(batches[0]["input_ids"]),
                          learning_rate=parts.config.train.lr, max_grad_norm=1.0, report_to=[], use_cpu=True,
                          bf16=False, logging_steps=10**9, save_strategy="no", lmbda=0.0, temperature=1.0,
                          use_uld_loss=True, use_extended_uld=True, uld_token_merge_strategy="bayesian",
                          uld_crossentropy_weight=0.0, uld_distillation_weight=1.0, uld_student_temperature=1.0,
                          uld_teacher_temperature=1.0, uld_skip_student_eos=False, uld_skip_teacher_eos=False,
                          teacher_tokenizer_name_or_path=parts.teacher.name_or_path)
        self.trainer = GOLDTrainer(model=copy.deepcopy(parts.student), teacher_model=parts.teacher, args=args,
                                   train_dataset=Dataset.from_list(records), processing_class=parts.tokenizer)
        self.trainer.create_optimizer_and_scheduler(num_training_steps=10**6)
        self.model = self.trainer.accelerator.prepare(self.trainer.model)
        self.model.train()
        self.parts = parts
        self.inputs = [self._inputs(b) for b in batches]
        self.check_teacher(batches[0], self.inputs[0])

    def _inputs(self, batch):
        split, cfg = self.parts.splits["train"], self.parts.config
        examples = [split.paired.teacher[i] for i in batch["index"].tolist()]
        chat = cfg.teacher.use_chat_template
        prompts = [render(self.parts.teacher_tokenizer, e.prompt, e.response, cfg.data, chat)[0] for e in examples]
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "labels": batch["labels"],
                "byte_offsets": student_byte_offsets(self.parts, batch), "original_prompt_text": prompts,
                "original_completion_text": [e.response for e in examples]}

    def teacher_inputs(self, inputs):
        return teacher_inputs_from_texts(self.trainer.teacher_tokenizer, inputs["original_prompt_text"],
                                         inputs["original_completion_text"])

    def check_teacher(self, batch, inputs):
        """RuntimeError unless the teacher ids TRL builds are those of our paired encoding of the batch."""
        ours = collate([self.parts.splits["train"].paired.teacher[i] for i in batch["index"].tolist()],
                       self.parts.teacher_pad_id)
        ids, labels, _, _ = self.teacher_inputs(inputs)
        if not (torch.equal(ids, ours["input_ids"]) and torch.equal(labels, ours["labels"])):
            raise RuntimeError("trl-gold's teacher inputs are not our paired encoding of the batch")

    def groups(self, k):
        """Per example of batch k: TRL's aligned groups as (t0, t1, s0, s1) over the response tokens."""
        from trl.experimental.gold.gold_trainer import ULDLoss
        inputs = self.inputs[k % len(self.inputs)]
        _, t_labels, _, t_offsets = self.teacher_inputs(inputs)
        out = []
        for s_row, s_off, t_row, t_off in zip(inputs["labels"], inputs["byte_offsets"], t_labels, t_offsets):
            s_groups, t_groups = ULDLoss._align_by_byte_offsets(s_off[s_row != IGNORE].tolist(),
                                                                t_off[t_row != IGNORE].tolist())
            out.append([(t[0], t[-1] + 1, s[0], s[-1] + 1) for s, t in zip(s_groups, t_groups) if s and t])
        return out

    def step(self, k):
        from trl.experimental.gold import gold_trainer
        t = self.trainer
        inputs = self.inputs[k % len(self.inputs)]
        with mock.patch.object(gold_trainer, "build_teacher_inputs_from_texts", teacher_inputs_from_texts), \
                t.compute_loss_context_manager():
            loss = t.compute_loss(self.model, inputs)
        t.accelerator.backward(loss)
        t.accelerator.clip_grad_norm_(self.model.parameters(), 1.0)
        t.optimizer.step()
        t.lr_scheduler.step()
        self.model.zero_grad(set_to_none=True)
        return float(loss.detach())
