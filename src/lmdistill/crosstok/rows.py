"""A batch's aligned groups as rows of each model's outputs: ModelOutputs hold one row per response position, example
after example (row r of an example predicts its response token r), so a group (t0, t1, s0, s1) of example k is the
teacher rows t0..t1-1 and the student rows s0..s1-1 after the rows of the examples before k."""
from dataclasses import dataclass

import torch

from lmdistill.crosstok.uld import GroupRows


@dataclass
class BatchAlignment:
    teacher: GroupRows
    student: GroupRows
    teacher_starts: torch.Tensor  # [G] the row predicting each group's first teacher token: its hidden state ends at
    student_starts: torch.Tensor  # [G] the same character as the student's row (the aligned positions features use)


def batch_alignment(groups, teacher_lengths, student_lengths, device="cpu"):
    """BatchAlignment of per-example `groups` lists, given each example's number of response rows on each side."""
    cols = [[] for _ in range(4)]  # teacher last, teacher start, student last, student start
    t_group = torch.full((sum(teacher_lengths),), -1, dtype=torch.long)
    s_group = torch.full((sum(student_lengths),), -1, dtype=torch.long)
    t_off = s_off = g = 0
    for example, n_t, n_s in zip(groups, teacher_lengths, student_lengths):
        for t0, t1, s0, s1 in example:
            if t1 > n_t or s1 > n_s:
                raise ValueError(f"group {(t0, t1, s0, s1)} lies past the example's {n_t} teacher / {n_s} student rows")
            t_group[t_off + t0:t_off + t1] = g
            s_group[s_off + s0:s_off + s1] = g
            for col, value in zip(cols, (t_off + t1 - 1, t_off + t0, s_off + s1 - 1, s_off + s0)):
                col.append(value)
            g += 1
        t_off, s_off = t_off + n_t, s_off + n_s
    t_last, t_start, s_last, s_start = (torch.tensor(c, dtype=torch.long, device=device) for c in cols)
    return BatchAlignment(GroupRows(t_last, t_group.to(device)), GroupRows(s_last, s_group.to(device)), t_start, s_start)


def identity_alignment(n_rows, device="cpu"):
    """Every row its own group on both sides: the alignment of two models that share a tokenizer."""
    rows = torch.arange(n_rows, device=device)
    return BatchAlignment(GroupRows(rows, rows.clone()), GroupRows(rows.clone(), rows.clone()), rows.clone(), rows.clone())
