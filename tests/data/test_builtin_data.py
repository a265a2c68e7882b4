"""Checks of the committed built-in datasets (src/lmdistill/data/builtin/).

Uses only the committed files: no WordNet, no npm package needed. Rebuild the data with
scripts/build_datasets.py (see its docstring) and re-run these tests.
"""

import hashlib
import json
from pathlib import Path

import pytest

BUILTIN = Path(__file__).resolve().parents[2] / "src" / "lmdistill" / "data" / "builtin"
DATASETS = ("define-word", "spam", "email-subject")
SPLITS = ("train", "dev", "test")
MAX_TOTAL_BYTES = 6 * 1024 * 1024


def load_manifest():
    return json.loads((BUILTIN / "manifest.json").read_text(encoding="utf-8"))


def read_jsonl(path):
    text = path.read_bytes().decode("utf-8")  # strict: fails on invalid UTF-8
    assert "\r" not in text, f"{path}: '\\r' found, expected '\\n' line endings"
    assert text.endswith("\n"), f"{path}: no final newline"
    lines = text.split("\n")[:-1]
    # no U+2028, U+0085, \x0c, ... inside records: str.splitlines() must agree with '\n'
    assert len(text.splitlines()) == len(lines), f"{path}: stray line separators"
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def manifest():
    return load_manifest()


@pytest.fixture(scope="module")
def data():
    return {(name, split): read_jsonl(BUILTIN / name / f"{split}.jsonl")
            for name in DATASETS for split in SPLITS}


def test_files_exist():
    assert (BUILTIN / "manifest.json").is_file()
    assert (BUILTIN / "NOTICE.md").is_file()
    for name in DATASETS:
        for split in SPLITS:
            path = BUILTIN / name / f"{split}.jsonl"
            assert path.is_file(), path
            assert path.stat().st_size > 0, path


def test_manifest_lists_all_datasets(manifest):
    assert set(manifest["datasets"]) == set(DATASETS)
    for name, entry in manifest["datasets"].items():
        assert entry["task"] in ("generation", "classification"), name
        assert entry["description"] and entry["license"] and entry["build_command"], name
        assert entry["source"]["package"] and entry["source"]["version"], name
        assert set(entry["splits"]) == set(SPLITS), name
        if entry["task"] == "classification":
            assert entry["labels"], name


@pytest.mark.parametrize("name", DATASETS)
@pytest.mark.parametrize("split", SPLITS)
def test_records_are_prompt_response_strings(data, name, split):
    records = data[name, split]
    assert records, f"{name}/{split} is empty"
    for i, r in enumerate(records):
        where = f"{name}/{split}.jsonl line {i + 1}"
        assert isinstance(r, dict) and set(r) == {"prompt", "response"}, where
        assert isinstance(r["prompt"], str) and r["prompt"].strip(), where
        assert isinstance(r["response"], str) and r["response"], where
        assert r["response"] == r["response"].strip(), where


@pytest.mark.parametrize("name", DATASETS)
def test_counts_match_manifest(manifest, data, name):
    for split in SPLITS:
        assert len(data[name, split]) == manifest["datasets"][name]["splits"][split]["records"], split


@pytest.mark.parametrize("name", DATASETS)
def test_sha256_matches_manifest(manifest, name):
    for split in SPLITS:
        entry = manifest["datasets"][name]["splits"][split]
        path = BUILTIN / entry["file"]
        assert path == BUILTIN / name / f"{split}.jsonl"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"], entry["file"]


@pytest.mark.parametrize("name", DATASETS)
def test_no_prompt_overlap_between_splits(data, name):
    prompts = {split: [r["prompt"] for r in data[name, split]] for split in SPLITS}
    for split in SPLITS:
        assert len(set(prompts[split])) == len(prompts[split]), f"duplicate prompts in {name}/{split}"
    assert not set(prompts["train"]) & set(prompts["dev"])
    assert not set(prompts["train"]) & set(prompts["test"])
    assert not set(prompts["dev"]) & set(prompts["test"])


def test_spam_labels(manifest, data):
    labels = set(manifest["datasets"]["spam"]["labels"])
    assert labels == {"spam", "ham"}
    for split in SPLITS:
        seen = {r["response"] for r in data["spam", split]}
        assert seen == {"spam", "ham"}, f"spam/{split} labels: {seen}"
        for r in data["spam", split]:
            assert r["prompt"].startswith("Is this email spam or ham? Answer with one word.\n\nSubject: ")


def test_prompt_formats(data):
    for split in SPLITS:
        for r in data["define-word", split]:
            assert r["prompt"].startswith("Define the word: ")
        for r in data["email-subject", split]:
            assert r["prompt"].startswith("Write a subject line for this email.\n\n")
            assert len(r["response"]) <= 120


def test_total_size_is_small():
    total = sum(p.stat().st_size for p in BUILTIN.rglob("*") if p.is_file())
    assert total < MAX_TOTAL_BYTES, f"builtin data is {total} bytes"
