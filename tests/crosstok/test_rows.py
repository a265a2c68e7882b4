"""A batch's alignment as rows of each model's outputs."""
import pytest
import torch

from lmdistill.crosstok.rows import batch_alignment, identity_alignment


def test_groups_of_each_example_land_after_the_rows_of_the_examples_before():
    # example 0: 3 teacher / 4 student rows; example 1: 2 teacher / 1 student rows, its last student row in no group
    groups = [[(0, 1, 0, 2), (1, 3, 2, 4)], [(0, 2, 0, 1)]]
    a = batch_alignment(groups, [3, 2], [4, 2])
    assert a.teacher.last.tolist() == [0, 2, 4] and a.teacher_starts.tolist() == [0, 1, 3]
    assert a.student.last.tolist() == [1, 3, 4] and a.student_starts.tolist() == [0, 2, 4]
    assert a.teacher.group.tolist() == [0, 1, 1, 2, 2]
    assert a.student.group.tolist() == [0, 0, 1, 1, 2, -1]


def test_a_group_past_an_examples_rows_is_refused():
    with pytest.raises(ValueError, match="past the example"):
        batch_alignment([[(0, 3, 0, 1)]], [2], [1])


def test_identity_alignment_makes_every_row_its_own_group():
    a = identity_alignment(4)
    for rows in (a.teacher, a.student):
        assert torch.equal(rows.last, torch.arange(4)) and torch.equal(rows.group, torch.arange(4))
