"""The one interface every kind of teacher implements.

A teacher is called once per training batch and answers like the student does (`ModelOutputs` at the batch's
response positions): logits over the vocabulary shared with the student, the targets, and whatever the `Request`
names (hidden states, attention logits, value projections). Objectives read only that, so a new kind of teacher
(another tokenizer, text the student wrote, a served model) is one new class in one new file, and no objective
changes.

The batch is what the training loop collates: `input_ids`, `attention_mask` and `labels` [B, L] (labels are -100
outside the response), and `index` [B], the examples' positions in the training split (a teacher that looks its
outputs up, or that reads the examples' text, uses it).
"""
from typing import ClassVar

from torch import nn

from lmdistill.teachers.outputs import ModelOutputs, Request


class Teacher:
    kind: ClassVar[str]  # what the log and the report call it: "online", "cache", ...
    lm: nn.Module        # the teacher model: its config, LM head and final norm (the logit lens applies them)

    def __call__(self, batch, request=Request()) -> ModelOutputs:
        raise NotImplementedError

    @classmethod
    def refuses(cls, request) -> str | None:
        """Why this kind of teacher cannot answer `request` (what to change, in a few words), or None when it can.
        Checked against every objective's needs before a run writes anything."""
        return None
