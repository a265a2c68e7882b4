"""DistiLLM's replay buffer: the latest student-written examples, sampled again in later steps."""
from collections import deque

from lmdistill.data.encode import Example


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
        return [[e.input_ids, e.n_prompt] for e in self.examples]

    def load_state(self, state):
        self.examples.clear()
        self.examples.extend(Example(ids, n_prompt, "", "") for ids, n_prompt in state)
