"""The cross-tokenizer pair of benchmarks/step.py: Gemma-3-270m (teacher) -> SmolLM2-135M-Instruct (student), each
reading the batch in its own tokenization. Its floor (x-floor), lmdistill's objectives for it, and our ULD on the
first batch under TRL GOLD's normalisation, for the first-step loss comparison with trl-gold."""
import copy
import dataclasses
import statistics

import torch
import torch.nn.functional as F

PAIR = "gemma-smollm2"
TEACHER, STUDENT = "gemma3-270m", "smollm2-135m-instruct"
CROSS = {
    "x-uld": [{"name": "ce"}, {"name": "uld"}],
    "x-gold": [{"name": "ce"}, {"name": "gold"}],
    "x-feature": [{"name": "ce"}, {"name": "feature", "selector": "flexkd", "metric": "pearson"}],
    "x-uld-only": [{"name": "uld"}],
}
CROSS_MODES = ["x-floor", *CROSS, "trl-gold"]


def cross_config(path, overrides):
    """The config at `path` with `overrides`, the teacher and student replaced by the pair (student.model in place
    of the file's student.spec), and plain CE as its objective (each mode brings its own)."""
    from lmdistill.config import apply_overrides, build_config, read_yaml
    data = apply_overrides(read_yaml(path), overrides)
    data.update(teacher={"model": TEACHER}, student={"model": STUDENT}, objectives=[{"name": "ce"}])
    return build_config(data)


class CrossFloor:
    """x-floor: the teacher's forward on its own encoding of the batch (lmdistill's cross-tokenizer teacher, which
    returns the last hidden state) and its LM head on its response rows, then the student's forward with plain CE,
    backward, clipping and AdamW step."""

    def __init__(self, parts, batches):
        from lmdistill.build import teacher_of
        from lmdistill.teachers import ResponseLM
        from lmdistill.train.loop import make_optimizer
        self.student = ResponseLM(copy.deepcopy(parts.student), parts.vocab_size).train()
        self.teacher = teacher_of(parts, "train")
        self.optimizer = make_optimizer(self.student.parameters(), parts.config.train)
        self.batches = batches

    def step(self, k):
        from lmdistill.teachers.outputs import lm_head_logits
        b = self.batches[k % len(self.batches)]
        with torch.no_grad():
            t = self.teacher(b)
            lm_head_logits(self.teacher.lm, t.final)
        out = self.student(b["input_ids"], b["attention_mask"], b["labels"])
        loss = F.cross_entropy(out.logits, out.targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.student.parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())


def one_example(batch, k):
    return {key: value[k:k + 1] for key, value in batch.items()}


@torch.no_grad()
def uld_first_batch(parts, batch, context):
    """Our `uld` objective on `batch` with the initial student, one example at a time: its sum over the example's
    aligned groups, and the number of groups and of student response tokens. Returns our loss (the sums over the
    batch's student response tokens, what x-uld-only's first step reports) and the same sums under TRL GOLD's
    normalisation (each example's sum over its groups, then the mean over examples)."""
    from lmdistill.build import teacher_of
    from lmdistill.objectives import build_objectives
    from lmdistill.teachers import ResponseLM
    from lmdistill.config import build_config
    from lmdistill.teachers.outputs import output_head
    params = build_config({**parts.config.model_dump(mode="json"), "objectives": CROSS["x-uld-only"]}).objectives
    uld = build_objectives(params, context)[0]
    student, teacher = ResponseLM(parts.student, parts.vocab_size), teacher_of(parts, "train")
    head = output_head(teacher.lm, context.teacher_vocab)
    sums, sums64, groups, tokens = [], [], [], 0
    for k in range(len(batch["input_ids"])):
        one = one_example(batch, k)
        s, t = student(one["input_ids"], one["attention_mask"], one["labels"]), teacher(one)
        sums.append(float(uld.loss(s, t, one)))
        # the same loss in float64 on the same float32 logits: what the loss arithmetic alone rounds
        t64 = dataclasses.replace(t, logits=head.fn(t.final).double())
        sums64.append(float(uld.loss(dataclasses.replace(s, logits=s.logits.double()), t64, one)))
        groups.append(len(t.alignment.student.last))
        tokens += len(s.targets)

    def trl_normalised(values):  # TRL: each example's sum over its groups / its groups (0 with none), then the mean
        return statistics.fmean(v / g if g else 0.0 for v, g in zip(values, groups))
    return {"ours": sum(sums) / tokens, "ours_trl_normalised": trl_normalised(sums),
            "float64_trl_normalised": trl_normalised(sums64), "groups": sum(groups), "student_tokens": tokens}
