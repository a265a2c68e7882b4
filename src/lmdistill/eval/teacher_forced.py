"""Teacher-forced metrics on response tokens: the student's CE and KL(teacher || student) when both share a
vocabulary; with two tokenizers, each model's CE on its own tokens and the bits per byte of the response text, the
one number that compares them."""
import math

import torch
import torch.nn.functional as F

from lmdistill.crosstok.uld import target_log_probs
from lmdistill.data import in_batches
from lmdistill.divergences import forward_kl
from lmdistill.teachers.outputs import output_head


@torch.no_grad()
def teacher_forced(student, teacher, examples, batch_size, pad_id, device="cpu", paired=None, side=1):
    """Mean per response token over `examples`; `student` is a ResponseLM, `teacher` a Teacher or None. With `paired`
    (crosstok.encode.Paired of the examples, a teacher with another tokenizer), bits per byte instead of KL.
    side 0: `student` is that teacher itself, alone, on its own encoding (`examples` = paired.teacher)."""
    was_training = student.training
    student.eval()
    sums = {"ce": 0.0, "kl": 0.0, "teacher_ce": 0.0}
    tokens = teacher_tokens = 0
    bits = {"bpb": 0.0, "teacher_bpb": 0.0, "bytes": 0}
    for batch in in_batches(examples, pad_id, batch_size, device):
        s = student(batch["input_ids"], batch["attention_mask"], batch["labels"])
        nll = F.cross_entropy(s.logits.float(), s.targets, reduction="none")
        sums["ce"] += nll.sum().item()
        tokens += len(s.targets)
        index = batch["index"].tolist()
        if paired is not None:
            add_bits(bits, "bpb", nll, s.where, index, paired, side, count_bytes=True)
        if teacher is None:
            continue
        t = teacher(batch)
        if t.logits is not None:
            sums["teacher_ce"] += F.cross_entropy(t.logits.float(), t.targets, reduction="sum").item()
            sums["kl"] += forward_kl(s.logits, t.logits, reduction="sum").item()
        else:  # another vocabulary, too large to hold: the head runs in chunks
            t_nll = -target_log_probs(t.final, t.targets, output_head(t.lm, teacher.vocab_size))
            sums["teacher_ce"] += t_nll.sum().item()
            teacher_tokens += len(t.targets)
            add_bits(bits, "teacher_bpb", t_nll, t.where, index, paired, 0, count_bytes=False)
    student.train(was_training)
    metrics = {"ce": sums["ce"] / tokens, "tokens": tokens}
    if teacher is not None:
        metrics["teacher_ce"] = sums["teacher_ce"] / (teacher_tokens or tokens)
        if paired is None:
            metrics["kl"] = sums["kl"] / tokens
    if paired is not None:
        n_bytes = bits.pop("bytes")
        metrics.update({k: v / n_bytes for k, v in bits.items() if k == "bpb" or teacher is not None})
        metrics["bpb_bytes"] = n_bytes
    return metrics


def add_bits(bits, key, nll, where, index, paired, side, count_bytes):
    """Add the bits of the response text tokens (paired.text_tokens[i][side]) of each complete example (rows: an
    example's response positions, in order) to bits[key], and with count_bytes its UTF-8 bytes to bits['bytes']."""
    for rows, i in zip(nll.split(where.sum(1).tolist()), index):
        if paired.complete[i]:
            bits[key] += rows[:paired.text_tokens[i][side]].sum().item() / math.log(2)
            bits["bytes"] += len(paired.student[i].response.encode("utf-8")) if count_bytes else 0
