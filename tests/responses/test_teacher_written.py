"""Sequence-level KD: the teacher's responses to the training prompts, generated once, kept under a name that binds
them to the teacher, tokenizer, prompts and settings, and used only when they match and are intact."""
import json

import pytest
import torch

from lmdistill.build import build_parts
from lmdistill.config import build_config
from lmdistill.responses import sampling, teacher_written
from lmdistill.responses.teacher_written import with_teacher_responses
from conftest import tiny_config

pytestmark = pytest.mark.e2e


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setattr(teacher_written, "cache_root", lambda: tmp_path / "cache")
    return tmp_path / "cache" / "teacher-responses"


def parts_for(tmp_path, word_data, **responses):
    config = build_config(tiny_config(tmp_path / "run", word_data,
                                      train={"responses": {"source": "teacher", "do_sample": False,
                                                           "max_new_tokens": 6, **responses}}))
    return build_parts(config, splits=("train",))


def fake_teacher(monkeypatch, tokenizer, calls, ending=True):
    """The teacher answers each prompt with 'answer <call>-<i>' (and its end-of-response token when `ending`)."""
    def write(model, prompts, pad_id, stop, cfg, seed, device):
        calls.append(len(prompts))
        return [tokenizer(f"answer {len(calls)}-{i}", add_special_tokens=False)["input_ids"] + (stop[:1] if ending else [])
                for i in range(len(prompts))]
    monkeypatch.setattr(sampling, "write", write)


def test_training_runs_on_the_teachers_responses_generated_once(tmp_path, word_data, cache, monkeypatch):
    parts = parts_for(tmp_path, word_data)
    calls, logs = [], []
    fake_teacher(monkeypatch, parts.tokenizer, calls)
    changed = with_teacher_responses(parts, log=logs.append)
    n = len(parts.splits["train"].examples)
    assert sum(calls) == n and len(list(cache.glob("*.json"))) == 1 and not list(cache.glob(".*"))
    responses = [e.response for e in changed.splits["train"].examples]
    assert all(r.startswith("answer ") for r in responses)
    assert [e.prompt for e in changed.splits["train"].examples] == [e.prompt for e in parts.splits["train"].examples]
    assert f"{n} of {n} examples on the teacher's responses" in " ".join(logs)
    again = with_teacher_responses(parts, log=lambda *_: None)
    assert sum(calls) == n  # read back, not generated again
    assert [e.input_ids for e in again.splits["train"].examples] == [e.input_ids for e in changed.splits["train"].examples]


def test_stale_or_damaged_responses_are_generated_again(tmp_path, word_data, cache, monkeypatch):
    parts = parts_for(tmp_path, word_data)
    calls = []
    fake_teacher(monkeypatch, parts.tokenizer, calls)
    with_teacher_responses(parts, log=lambda *_: None)
    path = next(cache.glob("*.json"))
    kept = json.loads(path.read_text())
    kept["responses"][0][0] = "tampered"
    path.write_text(json.dumps(kept))
    first = sum(calls)
    with_teacher_responses(parts, log=lambda *_: None)
    assert sum(calls) == 2 * first  # the damaged file was not used
    other = parts_for(tmp_path, word_data, max_new_tokens=7)  # another setting: another file
    with_teacher_responses(other, log=lambda *_: None)
    assert sum(calls) == 3 * first and len(list(cache.glob("*.json"))) == 2


def test_references_share_and_unfinished_responses_keep_the_reference(tmp_path, word_data, cache, monkeypatch):
    parts = parts_for(tmp_path, word_data, references=0.25)
    fake_teacher(monkeypatch, parts.tokenizer, [])
    examples = parts.splits["train"].examples
    mixed = with_teacher_responses(parts, log=lambda *_: None).splits["train"].examples
    kept = [new.response == old.response for new, old in zip(mixed, examples)]
    assert sum(kept) == round(0.25 * len(examples))
    fake_teacher(monkeypatch, parts.tokenizer, [], ending=False)
    cut = with_teacher_responses(parts_for(tmp_path, word_data, max_new_tokens=5), log=lambda *_: None)
    assert [e.response for e in cut.splits["train"].examples] == [e.response for e in examples]


def test_the_real_teachers_greedy_responses_are_what_it_generates(tmp_path, word_data, cache):
    parts = parts_for(tmp_path, word_data, max_new_tokens=12)
    prompts = parts.splits["train"].examples[:2]
    stop = sampling.stop_ids(parts.tokenizer, parts.config.data)
    written = teacher_written.generate_all(parts.teacher, parts.tokenizer, prompts, stop,
                                           parts.config.train.responses, 0, "cpu")
    for (text, ended), e in zip(written, prompts):
        ids = parts.teacher.generate(input_ids=torch.tensor([e.input_ids[:e.n_prompt]]),
                                     max_new_tokens=12, do_sample=False, eos_token_id=stop,
                                     pad_token_id=parts.tokenizer.pad_token_id)[0, e.n_prompt:].tolist()
        assert text == parts.tokenizer.decode(ids, skip_special_tokens=True).strip()
        assert ended == (ids[-1] in stop)
