"""The headline held-out metrics (eval/teacher_forced.py) against an independent computation on a real batch: each
model's own loss from `labels=`, and KL(teacher || student) brute-forced in float64 from the full logits."""
import pytest
import torch

from lmdistill.build import build_parts
from lmdistill.config import build_config
from lmdistill.data import IGNORE, collate
from lmdistill.eval.teacher_forced import teacher_forced
from lmdistill.teachers import OnlineTeacher, ResponseLM
from conftest import tiny_config
from tolerance import TINY_STUDENT, llama_terms, typical

pytestmark = [pytest.mark.numerical, pytest.mark.e2e]


def test_teacher_forced_metrics_equal_the_models_own_loss_and_a_float64_kl(tmp_path, word_data):
    parts = build_parts(build_config(tiny_config(tmp_path, word_data)), splits=("test",), log=lambda *_: None)
    student, teacher, vocab = parts.student.eval(), parts.teacher, parts.vocab_size
    # the kept columns are the whole vocabulary of both: the models' own losses normalise over the same tokens
    assert vocab == student.config.vocab_size == teacher.config.vocab_size
    examples, pad = parts.splits["test"].examples[:6], parts.tokenizer.pad_token_id
    got = teacher_forced(ResponseLM(student, vocab), OnlineTeacher(teacher, vocab), examples, 4, pad)  # 4 + 2, padded

    # one example at a time, no padding: Hugging Face's own shifted cross-entropy (prompt labels are IGNORE), and
    # KL(p || q) = sum_v p (log p - log q) over the response positions from the full logits in float64
    sums, tokens, widths = {"ce": 0.0, "teacher_ce": 0.0, "kl": 0.0}, 0, []
    scale = {"student": 0.0, "teacher": 0.0}
    with torch.no_grad():
        for example in examples:
            batch = collate([example], pad)
            n = int((batch["labels"][:, 1:] != IGNORE).sum())
            s = student(**batch)
            t = teacher(**batch)
            sums["ce"] += s.loss.item() * n
            sums["teacher_ce"] += t.loss.item() * n
            where = batch["labels"][0, 1:] != IGNORE
            log_q = torch.log_softmax(s.logits[0, :-1][where].double(), -1)
            log_p = torch.log_softmax(t.logits[0, :-1][where].double(), -1)
            sums["kl"] += (log_p.exp() * (log_p - log_q)).sum().item()
            tokens += n
            widths.append(batch["input_ids"].shape[1])
            scale["student"] = max(scale["student"], s.logits.abs().max().item())
            scale["teacher"] = max(scale["teacher"], t.logits.abs().max().item())
    want = {key: value / tokens for key, value in sums.items()}
    assert got["tokens"] == tokens

    # Padded batches of 4 against single examples: other summation orders through each model's float32 forward
    # (tolerance.py: typical, on the size of its logits); a log-prob off by e carries into CE and KL as e.
    width = max(widths) + 1
    student_tol = typical(llama_terms(TINY_STUDENT, width, vocab=vocab), scale["student"])
    teacher_tol = typical(llama_terms(teacher.config, width, vocab=vocab), scale["teacher"])
    assert got["ce"] == pytest.approx(want["ce"], rel=0, abs=student_tol)
    assert got["teacher_ce"] == pytest.approx(want["teacher_ce"], rel=0, abs=teacher_tol)
    assert got["kl"] == pytest.approx(want["kl"], rel=0, abs=student_tol + teacher_tol)
    assert got["kl"] > 100 * (student_tol + teacher_tol)  # a random student is far from the teacher: not vacuous
