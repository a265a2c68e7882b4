"""What an objective needs from the models, as data: per side, the hidden states, attention logits and value
projections (a `Request` each), and no teacher side at all for objectives that read no teacher output (CE).

The training loop asks each model for the union of what its objectives need; a run checks before it writes
anything that its kind of teacher can answer the teacher side (`Teacher.refuses`)."""
from dataclasses import dataclass

from lmdistill.teachers.outputs import Request


@dataclass(frozen=True)
class Needs:
    student: Request = Request()
    teacher: Request | None = Request()  # None: reads no teacher output (nothing to run or cache for it)


def union(needs):
    """One Needs asking for everything any of `needs` asks for."""
    student, teacher = Request(), None
    for n in needs:
        student = student | n.student
        if n.teacher is not None:
            teacher = n.teacher if teacher is None else teacher | n.teacher
    return Needs(student, teacher)
