"""Which micro-batches the student writes: GKD's fixed lmbda, DistiLLM's adaptive probability and replay buffer."""
import random

import pytest

from lmdistill.config import AdaptiveConfig, ResponsesConfig
from lmdistill.data.encode import Example
from lmdistill.responses.writer import StudentWriter, fresh_share


def writer(**responses):
    return StudentWriter(ResponsesConfig(source="student", **responses), seed=0, steps=100, pad_id=0, stop=[2])


def dataset(n=4):
    return [Example([1, 5, 6, 7, 2], 3, "p", "r") for _ in range(n)]


def fake_write(monkeypatch, calls):
    def write(model, prompts, pad_id, stop, cfg, seed, device):
        calls.append(seed)
        return [[100 + len(calls), 2] for _ in prompts]
    monkeypatch.setattr("lmdistill.responses.sampling.write", write)


def test_lmbda_is_the_share_of_student_written_micro_batches(monkeypatch):
    calls = []
    fake_write(monkeypatch, calls)
    half = writer(lmbda=0.5)
    kinds = [half.choose(s, random.Random(s).random()) for s in range(2000)]
    assert 0.45 < kinds.count("written") / 2000 < 0.55 and set(kinds) == {"written", "dataset"}
    assert {writer(lmbda=0.0).choose(s, r) for s, r in [(0, 0.0), (1, 0.5)]} == {"dataset"}
    assert {writer(lmbda=1.0).choose(s, r) for s, r in [(0, 0.0), (1, 0.999)]} == {"written"}
    a = [half.examples(None, s, k, dataset()) for s in range(6) for k in range(2)]
    seeds, calls[:] = list(calls), []
    b = [writer(lmbda=0.5).examples(None, s, k, dataset()) for s in range(6) for k in range(2)]
    assert [x[0].input_ids == dataset()[0].input_ids for x in a] == [x[0].input_ids == dataset()[0].input_ids for x in b]
    written = [x for x in a if x[0].input_ids != dataset()[0].input_ids]
    assert written and all(e.input_ids[:3] == [1, 5, 6] and e.n_prompt == 3 and e.input_ids[-1] == 2
                           for batch in written for e in batch)  # the prompt kept, the student's response after it
    assert len(set(seeds)) == len(seeds) == len(written)  # each written micro-batch drew its own sampling seed
    assert calls == seeds  # and draws it again in another run


def test_adaptive_probability_rises_only_when_the_dev_ce_has_grown_by_the_tolerance():
    w = writer(adaptive=AdaptiveConfig(start=0.0, rise=0.1, tolerance=0.1))
    assert w.wants_start
    w.after_dev(2.0)
    assert not w.wants_start and w.probability == 0.0
    w.after_dev(1.5)  # improving: no rise
    w.after_dev(2.05)  # grown, but by less than the tolerance over 2.0
    assert w.probability == 0.0
    w.after_dev(2.1)
    assert w.probability == pytest.approx(0.1) and w.last_dev == 2.1
    for ce in (2.3, 2.5, 2.7, 2.9, 3.1, 3.3, 3.5, 3.7, 3.9, 4.1, 4.3):
        w.after_dev(ce)
    assert w.probability == 1.0  # capped
    assert {writer(lmbda=0.5).after_dev(9.0) for _ in range(1)} == {None}  # fixed lmbda ignores the dev CE


def test_adaptive_writes_until_the_buffer_is_full_then_replays(monkeypatch):
    calls = []
    fake_write(monkeypatch, calls)
    w = writer(adaptive=AdaptiveConfig(start=1.0, buffer_size=8, replay="increasing"))
    assert fresh_share("decreasing", 25, 100) == 0.75 and fresh_share("increasing", 25, 100) == 0.25
    assert w.choose(0, 0.99) == "written"  # buffer not full: every student-written batch is fresh
    w.examples(None, 0, 0, dataset())
    w.examples(None, 0, 1, dataset())
    assert w.buffer.full and len(calls) == 2
    assert w.choose(0, 0.5) == "replayed"  # fresh share 0 at step 0 of an increasing schedule
    replayed = w.examples(None, 0, 2, dataset())
    assert len(calls) == 2 and {tuple(e.input_ids) for e in replayed} <= {tuple(e.input_ids) for e in w.buffer.examples}
    restored = writer(adaptive=AdaptiveConfig(start=1.0, buffer_size=8, replay="increasing"))
    restored.load_state(w.state())
    assert restored.state() == w.state()
    assert [e.input_ids for e in restored.examples(None, 1, 0, dataset())] == \
        [e.input_ids for e in w.examples(None, 1, 0, dataset())]  # a resumed run replays the same examples
    stats = w.take_stats()
    assert stats["written_share"] + stats["replayed_share"] + stats.get("dataset_share", 0) == pytest.approx(1)


def test_responses_the_teachers_tokenizer_refused_are_counted_per_window(monkeypatch):
    fake_write(monkeypatch, [])

    class Refusing:
        refused = 0

        def __call__(self, examples, responses):
            self.refused += 1
            return examples
    w = StudentWriter(ResponsesConfig(source="student"), seed=0, steps=10, pad_id=0, stop=[2],
                      make_examples=Refusing())
    w.examples(None, 0, 0, dataset())
    w.examples(None, 0, 1, dataset())
    assert w.take_stats()["refused"] == 2 and w.take_stats()["refused"] == 0
    assert "refused" not in writer().take_stats()  # one tokenizer: nothing to refuse
