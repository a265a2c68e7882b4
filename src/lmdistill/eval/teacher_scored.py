"""How likely the teacher finds text that a model generated: the teacher reads the text after its own prompt, and
its negative log-likelihood of the text is reported per token of its tokenizer and in bits per byte (the number that
compares students with different tokenizers). Only the text is scored, not whether or where it ended.
"""
import math

import torch

from lmdistill.crosstok.uld import target_log_probs
from lmdistill.data import in_batches
from lmdistill.data.encode import Example, render
from lmdistill.teachers.outputs import output_head
from lmdistill.teachers.response_lm import ResponseLM


def scored_examples(tokenizer, prompt_ids, prompts, texts, data_cfg, chat=None):
    """Examples of the teacher's prompt ids followed by each text, rendered as the teacher's response format renders
    a response (anything its template puts before the response text is scored with it)."""
    examples = []
    for ids, prompt, text in zip(prompt_ids, prompts, texts):
        _, rendered = render(tokenizer, prompt, text, data_cfg, chat)
        start = rendered.find(text)
        response = tokenizer(rendered[:start + len(text)] if start >= 0 else text, add_special_tokens=False)
        examples.append(Example(list(ids) + response["input_ids"], len(ids), prompt, text))
    return examples


@torch.no_grad()
def teacher_scored(teacher_lm, tokenizer, examples, batch_size, device="cpu"):
    """Per example (nats, teacher tokens, UTF-8 bytes) of its response text under the teacher."""
    was_training = teacher_lm.training
    teacher_lm.eval()
    lm = ResponseLM(teacher_lm, logits=False)  # a large vocabulary's logits only a chunk of positions at a time
    head = output_head(teacher_lm, teacher_lm.get_output_embeddings().weight.shape[0])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    scores = []
    for batch in in_batches(examples, pad, batch_size, device):
        out = lm(batch["input_ids"], batch["attention_mask"], batch["labels"])
        nll = -target_log_probs(out.final, out.targets, head)
        for rows, i in zip(nll.split(out.where.sum(1).tolist()), batch["index"].tolist()):
            scores.append((rows.sum().item(), len(rows), len(examples[i].response.encode("utf-8"))))
    teacher_lm.train(was_training)
    return scores


def summary(scores):
    """{"gen_nll": nats per teacher token, "gen_bpb": bits per byte} over all scored texts; a metric whose
    denominator is zero (every text empty) is left out."""
    nats, tokens, n_bytes = (sum(column) for column in zip(*scores)) if scores else (0.0, 0, 0)
    out = {"gen_nll": nats / tokens} if tokens else {}
    return out | ({"gen_bpb": nats / math.log(2) / n_bytes} if n_bytes else {})


def bits_per_byte(score):
    nats, _, n_bytes = score
    return nats / math.log(2) / n_bytes if n_bytes else None
