"""Hostile inputs: whatever a user feeds in, the answer is a one-line error and exit code 2 (or a documented
handling), and nothing is half-written. Property tests (hypothesis) for the data reader and the config schema;
one end-to-end `lmdistill train` per failure case listed in the README's table."""
import json
import string

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmdistill import cli
from lmdistill.config import build_config
from lmdistill.data import read_records
from lmdistill.errors import UserError
from conftest import tiny_config, write_jsonl

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                        max_size=3), max_leaves=6)
lines = st.one_of(
    st.binary(max_size=200),                                                       # anything, often not UTF-8
    json_values.map(lambda v: json.dumps(v).encode()),                             # valid JSON, wrong shape
    st.fixed_dictionaries({"prompt": json_values, "response": json_values}).map(lambda r: json.dumps(r).encode()),
    st.fixed_dictionaries({"prompt": st.text(), "response": st.text()}).map(lambda r: json.dumps(r).encode()),
)


def _one_line_error(error):
    message = str(error)
    assert message and "\n" not in message, message
    return message


@FAST
@given(st.lists(lines, min_size=0, max_size=6))
def test_any_jsonl_file_gives_records_or_a_one_line_error(tmp_path, contents):
    path = tmp_path / "data.jsonl"
    path.write_bytes(b"\n".join(line.replace(b"\n", b" ") for line in contents))
    try:
        records = read_records(path)
    except UserError as e:
        assert str(path) in _one_line_error(e)
        return
    assert records and all(isinstance(r["prompt"], str) and r["response"].strip() for r in records)


KNOWN = ["seed", "run_dir", "teacher.model", "teacher.dtype", "student.spec.hidden_size", "student.spec.num_heads",
         "student.from_teacher.layers", "data.max_length", "data.builtin", "data.task", "objectives",
         "objectives.0.name", "objectives.0.weight", "objectives.1.divergence", "objectives.1.temperature",
         "objectives.1.params", "train.steps", "train.lr", "train.betas", "train.max_grad_norm", "train.max_bad_steps",
         "eval.max_examples", "eval.top_p", "teacher_cache", "teacher_cache.dir", "teacher_cache.top_k"]
paths = st.sampled_from(KNOWN) | st.lists(st.text(string.ascii_lowercase + "_", min_size=1, max_size=8),
                                          min_size=1, max_size=3).map(".".join)


def _set(config, dotted, value):
    node = config
    keys = dotted.split(".")
    for key in keys[:-1]:
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                return
            node = node[int(key)]
        elif isinstance(node, dict):
            node = node.setdefault(key, {})
        else:
            return
    if isinstance(node, dict):
        node[keys[-1]] = value
    elif isinstance(node, list) and keys[-1].isdigit() and int(keys[-1]) < len(node):
        node[int(keys[-1])] = value


@FAST
@given(st.lists(st.tuples(paths, json_values), min_size=1, max_size=3))
def test_any_config_gives_a_config_or_a_one_line_error(tmp_path, word_data, changes):
    config = tiny_config(tmp_path, word_data, objectives=[{"name": "ce", "weight": 0.5},
                                                          {"name": "logit_kd", "weight": 0.5}])
    for dotted, value in changes:
        _set(config, dotted, value)
    try:
        build_config(json.loads(json.dumps(config)))
    except UserError as e:
        assert _one_line_error(e).startswith(("config", "unknown objective", "objective"))


# -----------------------------------------------------------------------------
# end to end: `lmdistill train` on each failure case: exit 2, one line on stderr, no output in the run directory

def _data_case(tmp_path, word_data, lines_):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(lines_)
    return {"data": {"train": str(bad)}}


def _cache_in_a_users_dir(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine/notes.txt").write_text("x")
    return {"teacher_cache": {"dir": str(tmp_path / "mine")}}


CASES = {
    "malformed JSON line": (lambda tmp, wd: _data_case(tmp, wd, b'{"prompt": "a", "response": "b"}\n{"prompt": "a",\n'),
                            "line 2: invalid JSON"),
    "non-UTF-8 line": (lambda tmp, wd: _data_case(tmp, wd, b'{"prompt": "caf\xe9", "response": "b"}\n'),
                       "line 1: not valid UTF-8; re-encode the file as UTF-8"),
    "wrong type": (lambda tmp, wd: _data_case(tmp, wd, b'{"prompt": 3, "response": "b"}\n'),
                   "line 1: 'prompt' must be a string, got int"),
    "empty response": (lambda tmp, wd: _data_case(tmp, wd, b'{"prompt": "a", "response": "  "}\n'),
                       "line 1: empty 'response'"),
    "prompts longer than the context": (
        lambda tmp, wd: {"data": {"train": write_jsonl(tmp / "long.jsonl", [{"prompt": "word " * 500,
                                                                             "response": "x"}] * 4)}},
        "no example fits in data.max_length 64; raise it"),
    "unknown config key": (lambda tmp, wd: {"trian": {"steps": 3}}, "unknown key 'trian' (did you mean 'train'?)"),
    "wrong type in config": (lambda tmp, wd: {"train": {"steps": "many"}}, "config: train.steps"),
    "out-of-range value": (lambda tmp, wd: {"train": {"lr": -1}}, "config: train.lr: Input should be greater than 0"),
    "student wider than the teacher": (
        lambda tmp, wd: {"student": {"spec": {"hidden_size": 1024, "num_layers": 1, "num_heads": 2}},
                         "objectives": "flexkd"}, "selector flexkd keeps d_S=1024"),
    "layer index out of range": (
        lambda tmp, wd: {"objectives": [{"name": "ce"}, {"name": "feature", "layers": [[99, 1]], "selector": "none",
                                                                          "metric": "cka"}]},
        "teacher layer 99 does not exist"),
    "teacher cache dir is not a cache": (lambda tmp, wd: _cache_in_a_users_dir(tmp), "is not a teacher cache"),
    "a built-in set and files both named": (lambda tmp, wd: {"data": {"builtin": "spam"}},
                                            "both data.builtin=spam and data.train="),
    "every objective off at some step": (lambda tmp, wd: {"objectives": [{"name": "ce", "schedule": {
        "start_step": 0, "decay": "linear", "end_step": 3}}]}, "at step 4 every objective (ce) is switched off"),
    "a key the config would not read": (lambda tmp, wd: {"train": {"weighting": {"ema": 0.5}}},
                                        "ema=0.5 is only used with method: loss_ratio"),
}


# refused only once the teacher is loaded (they need its width / its layer count): e2e; the others stop before
LOADS_THE_TEACHER = {"student wider than the teacher", "layer index out of range"}


@pytest.mark.parametrize("case", [pytest.param(case, marks=pytest.mark.e2e) if case in LOADS_THE_TEACHER else case
                                  for case in CASES], ids=str)
def test_train_refuses_with_one_line_and_writes_nothing(tmp_path, word_data, capsys, case):
    make, expected = CASES[case]
    run_dir = tmp_path / "run"
    config = tiny_config(run_dir, word_data)
    for section, values in make(tmp_path, word_data).items():
        config[section] = {**config[section], **values} if isinstance(values, dict) and isinstance(
            config.get(section), dict) else values
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", str(path)])
    assert exit_.value.code == 2
    errors = [l for l in capsys.readouterr().err.splitlines() if l.startswith("lmdistill:")]
    assert len(errors) == 1 and errors[0].startswith("lmdistill: error: ") and expected in errors[0], errors
    assert not run_dir.exists() or not any(run_dir.iterdir())
    if case == "teacher cache dir is not a cache":
        assert (tmp_path / "mine/notes.txt").read_text() == "x"
