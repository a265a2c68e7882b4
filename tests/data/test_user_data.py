"""A user's own data is what a run trains and evaluates on, and the run says which data it used."""
import json

import pytest

from lmdistill import data
from lmdistill.build import build_parts
from lmdistill.config import build_config
from lmdistill.data.builtin import builtin_names, builtin_split
from lmdistill.errors import UserError
from lmdistill.run import train

from conftest import tiny_config, write_jsonl

# Records unlike any built-in set: made-up words, answered with their reversal.
FAKE = ["blorptic", "quanzel", "vorpline", "zindrox", "mubble", "trask", "glimmerok", "fenwobble", "skrunt", "yoxil",
        "pradney", "coomb"]


def _records(words):
    return [{"prompt": f"Reverse the made-up word {w}", "response": f"{w[::-1]} (reversed {w})"} for w in words]


@pytest.fixture
def user_files(tmp_path):
    splits = {"train": _records(FAKE) * 3, "dev": _records(FAKE[:4]), "test": _records(FAKE[4:10])}
    return {name: write_jsonl(tmp_path / f"my-{name}.jsonl", records) for name, records in splits.items()}, splits


def test_user_records_differ_from_every_builtin_set(user_files):
    _, splits = user_files
    ours = {r["prompt"] for records in splits.values() for r in records}
    for name in builtin_names():
        for split in ("train", "dev", "test"):
            theirs = {r["prompt"] for r in data.read_records(builtin_split(name, split))}
            assert not ours & theirs


def test_data_sources_in_the_config():
    assert build_config({}).data.builtin == "define-word"  # nothing given: the built-in default
    given = build_config({"data": {"train": "a.jsonl", "test": "b.jsonl"}}).data
    assert given.builtin is None and given.train == "a.jsonl"
    with pytest.raises(UserError, match=r"both data.builtin=spam and data.train=a.jsonl"):
        build_config({"data": {"builtin": "spam", "train": "a.jsonl"}})
    with pytest.raises(UserError, match=r"data.dev is given without data.train"):
        build_config({"data": {"dev": "d.jsonl"}})
    with pytest.raises(UserError, match=r"data.builtin is null and data.train is not set"):
        build_config({"data": {"builtin": None}})
    with pytest.raises(UserError, match=r"eval.split is test but data.test is not set"):
        build_config({"data": {"train": "a.jsonl"}})


@pytest.mark.e2e
def test_a_run_trains_and_evaluates_on_the_users_files(tmp_path, user_files):
    files, splits = user_files
    config = build_config(tiny_config(tmp_path / "run", files, data={"builtin": None, **files},
                                      train={"steps": 2},
                                      eval={"generate": True, "max_new_tokens": 4, "baselines": False,
                                            "max_examples": 10, "teacher": False}))
    parts = build_parts(config, log=lambda *_: None)
    assert {name: split.records for name, split in parts.splits.items()} == splits
    lines = []
    result = train(config, log=lines.append)
    assert result["examples"] == len(splits["test"])
    assert {s["prompt"] for s in result["samples"]} <= {r["prompt"] for r in splits["test"]}
    assert {s["reference"] for s in result["samples"]} <= {r["response"] for r in splits["test"]}
    said = f"files: train {files['train']} (36 examples), dev {files['dev']} (4 examples), test {files['test']} (6 examples)"
    assert f"data: {said}" in lines
    report = (tmp_path / "run" / "report.md").read_text(encoding="utf-8")
    assert f"- data: {said}" in report
    models = ("teacher smollm2-135m-instruct (built-in: SmolLM2-135M-Instruct.Q4_1.gguf dequantised) (float32); "
              "student fresh llama 2 layers x 64 wide (float32)")
    assert f"models: {models}" in lines and f"- models: {models}" in report
    assert json.loads((tmp_path / "run" / "eval.json").read_text(encoding="utf-8"))["facts"]["data"] == said


@pytest.mark.e2e
def test_a_run_on_the_builtin_set_says_so(tmp_path, word_data):
    config = build_config(tiny_config(tmp_path / "run", word_data, data={"builtin": "define-word", "train": None,
                                      "dev": None, "test": None, "max_train_examples": 8}, train={"steps": 1}))
    lines = []
    train(config, log=lines.append)
    line = next(l for l in lines if l.startswith("data: "))
    assert line.startswith("data: built-in 'define-word': train 8, dev ") and line.endswith(" examples")
