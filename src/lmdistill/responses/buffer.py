"""DistiLLM's replay buffer: the latest student-written examples, sampled again in later steps."""
from collections import deque

from lmdistill.data.encode import Example
from lmdistill.responses.cross import PairedExample


class ReplayBuffer:
    def __init__(self, size):
        self.examples = deque(maxlen=size)

    def __len__(self):
        return len(self.examples)

    @property
    def full(self):
        return len(self.examples) == self.examples.maxlen

    def add(self, examples):
        self.examples.extend(examples)

    def sample(self, rng, n):
        """n distinct examples (fewer when the buffer holds fewer), drawn with `rng` (random.Random)."""
        return rng.sample(list(self.examples), min(n, len(self.examples)))

    def state(self):
        return [to_state(e) for e in self.examples]

    def load_state(self, state):
        self.examples.clear()
        self.examples.extend(from_state(s) for s in state)


def to_state(example):
    state = {"ids": example.input_ids, "n_prompt": example.n_prompt}
    if isinstance(example, PairedExample):
        state |= {"teacher": to_state(example.teacher), "groups": example.groups}
    return state


def from_state(state):
    if "teacher" not in state:
        return Example(state["ids"], state["n_prompt"], "", "")
    return PairedExample(state["ids"], state["n_prompt"], "", "", teacher=from_state(state["teacher"]),
                         groups=[tuple(g) for g in state["groups"]])
