"""Teacher-forced metrics on response tokens: the student's CE and KL(teacher || student)."""
import torch
import torch.nn.functional as F

from lmdistill.data import in_batches
from lmdistill.divergences import forward_kl


@torch.no_grad()
def teacher_forced(student, teacher, examples, batch_size, pad_id, device="cpu"):
    """Mean per response token over `examples`; `student` is a ResponseLM, `teacher` an OnlineTeacher or None."""
    was_training = student.training
    student.eval()
    sums = {"ce": 0.0, "kl": 0.0, "teacher_ce": 0.0}
    tokens = 0
    for batch in in_batches(examples, pad_id, batch_size, device):
        s = student(batch["input_ids"], batch["attention_mask"], batch["labels"])
        sums["ce"] += F.cross_entropy(s.logits.float(), s.targets, reduction="sum").item()
        if teacher is not None:
            t = teacher(batch)
            sums["teacher_ce"] += F.cross_entropy(t.logits.float(), t.targets, reduction="sum").item()
            sums["kl"] += forward_kl(s.logits, t.logits, reduction="sum").item()
        tokens += len(s.targets)
    student.train(was_training)
    metrics = {k: v / tokens for k, v in sums.items() if teacher is not None or k == "ce"}
    metrics["tokens"] = tokens
    return metrics
