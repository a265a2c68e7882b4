"""Which micro-batches the student writes, and writing them: with probability lmbda (GKD), or with DistiLLM's adaptive
probability, which rises when the dev CE grows, and its replay buffer. The choice for micro-batch k of step s
depends only on (seed, s, k), so every process makes the same one and a resumed run makes the same ones again."""
import random
import time
from collections import Counter

from lmdistill.data.encode import Example
from lmdistill.responses import sampling
from lmdistill.responses.buffer import ReplayBuffer

CHOICES = ("written", "replayed", "dataset")


def fresh_share(replay, step, steps):
    """DistiLLM's replay_ratio: the share of student-written batches that are generated afresh."""
    return {"decreasing": 1 - step / steps, "constant": 0.5, "increasing": step / steps}[replay]


def after_prompts(examples, responses):
    """The examples' prompts followed by the student's response ids (one tokenizer: trained on as sampled)."""
    return [Example(e.input_ids[:e.n_prompt] + r, e.n_prompt, e.prompt, "") for e, r in zip(examples, responses)]


class StudentWriter:
    def __init__(self, cfg, seed, steps, pad_id, stop, process_index=0, device="cpu", make_examples=after_prompts):
        """cfg: train.responses (source: student); stop: the token ids that end a response; make_examples:
        (the dataset's examples, response ids) -> the examples to train on (responses.cross for two tokenizers)."""
        self.cfg, self.seed, self.steps, self.make_examples = cfg, seed, steps, make_examples
        self.pad_id, self.stop, self.rank, self.device = pad_id, stop, process_index, device
        self.probability = cfg.adaptive.start if cfg.adaptive is not None else cfg.lmbda
        self.buffer = ReplayBuffer(cfg.adaptive.buffer_size) if cfg.adaptive is not None else None
        self.last_dev = None  # adaptive: the dev CE at the start or at the last rise
        self.seconds = 0.0    # spent generating
        self.counts = Counter()

    def choose(self, step, r):
        """'written', 'replayed' or 'dataset' for a uniform draw r."""
        p = self.probability
        if self.buffer is None:
            return "written" if r < p else "dataset"
        if r < p * fresh_share(self.cfg.adaptive.replay, step, self.steps) or (r < p and not self.buffer.full):
            return "written"
        return "replayed" if r < p else "dataset"

    def examples(self, model, step, k, examples):
        """What micro-batch k of `step` trains on, given the dataset's `examples` for it."""
        rng = random.Random(sampling.seed_of(self.seed, step, k))
        choice = self.choose(step, rng.random())
        self.counts[choice] += 1
        if choice == "dataset":
            return examples
        if choice == "replayed":
            return self.buffer.sample(rng, len(examples))
        started = time.time()
        prompts = [e.input_ids[:e.n_prompt] for e in examples]
        responses = sampling.write(model, prompts, self.pad_id, self.stop, self.cfg,
                                   sampling.seed_of(self.seed, step, k, self.rank), self.device)
        self.seconds += time.time() - started
        written = self.make_examples(examples, responses)
        if self.buffer is not None:
            self.buffer.add(written)
        return written

    @property
    def wants_start(self):
        """Whether the dev CE before training is needed (the adaptive schedule's first reference point)."""
        return self.cfg.adaptive is not None and self.last_dev is None

    def after_dev(self, ce):
        """Adaptive: the probability rises by `rise` when the dev CE has grown by `tolerance` since the last rise."""
        adaptive = self.cfg.adaptive
        if adaptive is None:
            return
        if self.last_dev is None:
            self.last_dev = ce
        elif ce >= self.last_dev + adaptive.tolerance:
            self.probability = min(1.0, self.probability + adaptive.rise)
            self.last_dev = ce

    def take_stats(self):
        """The share of micro-batches of each kind since the last call, the current probability, and (with two
        tokenizers) how many written responses since the last call the teacher's tokenizer could not take."""
        total = sum(self.counts.values())
        stats = {f"{c}_share": self.counts[c] / total for c in CHOICES if total}
        self.counts.clear()
        refused = getattr(self.make_examples, "refused", None)  # texts the teacher's tokenizer could not take
        if refused is None:
            return stats | {"lmbda": self.probability}
        self.make_examples.refused = 0
        return stats | {"lmbda": self.probability, "refused": refused}

    def state(self):
        return {"probability": self.probability, "last_dev": self.last_dev,
                "buffer": self.buffer.state() if self.buffer is not None else None}

    def load_state(self, state):
        self.probability, self.last_dev = state["probability"], state["last_dev"]
        if self.buffer is not None:
            self.buffer.load_state(state["buffer"])
