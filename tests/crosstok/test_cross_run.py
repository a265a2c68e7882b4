"""A cross-tokenizer run end to end on tiny random models that carry the two real tokenizers (Gemma-3's and
SmolLM2's): it trains with uld, gold and feature, evaluates in bits per byte, and refuses what it cannot do."""
import json

import pytest
import torch

from lmdistill.cli import main
from lmdistill.config import build_config
from lmdistill.run import train
from conftest import tiny_config

from crosstok.test_pairs import tiny_lm


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory, gemma, smol):
    """A tiny 'teacher' with Gemma-3's tokenizer and a tiny pretrained-style 'student' with SmolLM2's, saved."""
    root = tmp_path_factory.mktemp("pair")
    dirs = {}
    for name, tokenizer, (hidden, layers, seed) in (("teacher", gemma, (32, 2, 0)), ("student", smol, (16, 2, 1))):
        model = tiny_lm(len(tokenizer), hidden, layers, seed)
        model.config.bos_token_id, model.config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
        model.config.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        dirs[name] = str(root / name)
    return dirs


def cross_config(tmp_path, word_data, model_dirs, objectives, **sections):
    config = tiny_config(tmp_path / "run", word_data, teacher={"model": model_dirs["teacher"]}, objectives=objectives,
                         **sections)
    config["student"] = {"model": model_dirs["student"]}
    config["train"]["steps"] = 3
    return config


@pytest.mark.e2e
def test_a_cross_tokenizer_run_trains_and_reports_bits_per_byte(tmp_path, word_data, model_dirs):
    objectives = [{"name": "ce"}, {"name": "uld", "weight": 0.5}, {"name": "gold", "weight": 0.5},
                  {"name": "feature", "selector": "projection", "metric": "mse"}]
    lines = []
    result = train(build_config(cross_config(tmp_path, word_data, model_dirs, objectives)), log=lines.append)
    student, teacher = result["metrics"]["student"], result["metrics"]["teacher"]
    for row in (student, teacher):
        assert 0 < row["bpb"] < 40 and row["ce"] > 0  # random models: about log2(vocab) bits per token
    assert "kl" not in student  # no shared vocabulary to compare token by token
    assert student["bpb_bytes"] > 0
    before = result["metrics"]["student before training"]
    assert before["bpb"] > 0 and before["bpb"] != student["bpb"]
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Bits per byte of the response text" in report and "| student before training |" in report
    assert any("alignment:" in line and "student response tokens have an aligned teacher position" in line
               for line in lines)
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_rows = [m for m in metrics if m["kind"] == "train"]
    assert train_rows and all(m["uld"] > 0 and m["gold"] > 0 for m in train_rows)
    assert all(0 < m["gold_shared_mass"] < 1 for m in train_rows)  # the teacher's mass on shared tokens, logged


@pytest.mark.parametrize("objective", ["logit_kd", "lens", "dkd"])
def test_same_vocabulary_objectives_are_refused_naming_the_cross_tokenizer_ones(tmp_path, word_data, model_dirs,
                                                                                objective, capsys):
    import yaml
    config = cross_config(tmp_path, word_data, model_dirs, [{"name": "ce"}, {"name": objective}])
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(SystemExit) as e:
        main(["train", str(path)])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1
    assert f"objective '{objective}' compares the two models token by token" in err
    assert "ce, feature, gold, uld" in err
    assert not (tmp_path / "run").exists()  # nothing written


def test_a_student_prompt_format_is_refused_when_it_shares_the_teachers_tokenizer(tmp_path, word_data):
    from lmdistill.build import build_parts
    from lmdistill.errors import UserError
    config = build_config(tiny_config(tmp_path / "run", word_data, student={
        "spec": {"hidden_size": 64, "num_layers": 2, "num_heads": 2}, "use_chat_template": False}))
    with pytest.raises(UserError, match="student.use_chat_template is set, but the student uses the teacher's"):
        build_parts(config)
    assert torch.is_grad_enabled()


@pytest.mark.e2e
def test_a_fresh_student_with_its_own_tokenizer_and_flexkd_features(tmp_path, word_data, model_dirs, smol):
    """student.spec with student.tokenizer: a fresh student with SmolLM2's tokenizer under the Gemma-tokenizer
    teacher; the Flex-KD scores come from the teacher's own loss on its own tokens."""
    config = cross_config(tmp_path, word_data, model_dirs, [{"name": "ce"}, {"name": "feature", "selector": "flexkd",
                                                                             "metric": "pearson"}])
    config["student"] = {"spec": {"hidden_size": 16, "num_layers": 2, "num_heads": 2},
                         "tokenizer": model_dirs["student"]}
    lines = []
    result = train(build_config(config), log=lines.append)
    assert result["metrics"]["student"]["bpb"] > 0
    assert result["metrics"]["student before training"]["bpb"] > 0  # a fresh student too, across tokenizers
    from transformers import AutoTokenizer  # the saved student carries the tokenizer it was built with
    saved = AutoTokenizer.from_pretrained(tmp_path / "run" / "student")
    assert saved.get_vocab() == smol.get_vocab()
    assert (tmp_path / "run" / "selection").exists()


def test_a_tokenizer_without_offsets_is_refused_before_anything_is_written(tmp_path, word_data, model_dirs, smol,
                                                                             monkeypatch):
    import copy

    from lmdistill.build import build_parts
    from lmdistill.crosstok import pair
    from lmdistill.errors import UserError
    slow = copy.copy(smol)
    slow.__class__ = type("SlowTokenizer", (type(smol),), {"is_fast": property(lambda self: False)})
    monkeypatch.setattr(pair, "student_tokenizer", lambda config, teacher_tokenizer: slow)
    config = build_config(cross_config(tmp_path, word_data, model_dirs, [{"name": "ce"}, {"name": "uld"}]))
    with pytest.raises(UserError, match="student.*fast tokenizer"):
        build_parts(config)
    assert not (tmp_path / "run").exists()


@pytest.mark.e2e
@pytest.mark.numerical
def test_a_cross_tokenizer_run_from_the_teacher_cache_trains_as_the_online_one(tmp_path, word_data, model_dirs):
    """The cache holds the teacher's own encoding (final hidden state + the feature layer); the losses it gives are
    the online teacher's to float32 rounding, and it is bound to the student's tokenizer."""
    import json

    from lmdistill.teachers.cache import StaleCache, open_cache
    objectives = [{"name": "ce"}, {"name": "uld"}, {"name": "feature", "selector": "projection", "metric": "mse",
                                                    "layers": [[1, 2]]}]
    runs = {}
    for kind in ("online", "cache"):
        config = cross_config(tmp_path / kind, word_data, model_dirs, objectives)
        if kind == "cache":
            config["teacher_cache"] = {"dir": str(tmp_path / "teacher-cache"), "hidden_dtype": "float32"}
        runs[kind] = train(build_config(config), log=lambda *_: None)
        runs[kind]["log"] = [json.loads(line) for line in (tmp_path / kind / "run" / "metrics.jsonl").open()]
    first = [r["log"][0] for r in (runs["online"], runs["cache"])]
    # the cache was built in other batches (other padding): the teacher's outputs differ by float32 rounding along
    # its forward and the log-softmax over its vocabulary
    from transformers import AutoConfig

    from tolerance import llama_terms, typical
    rtol = typical(llama_terms(AutoConfig.from_pretrained(model_dirs["teacher"]), 64, vocab=262144))
    for key in ("uld", "feature", "ce"):
        assert abs(first[0][key] - first[1][key]) <= rtol * abs(first[0][key]), key
    facts = json.loads((tmp_path / "cache" / "run" / "eval.json").read_text())["facts"]
    assert facts["teacher in training"].startswith("cache, own tokenizer")
    manifest = json.loads((tmp_path / "teacher-cache" / "manifest.json").read_text())
    assert manifest["student_tokenizer_fingerprint"] is not None and 1 in manifest["layers"]
    wanted = {**{k: manifest[k] for k in ("format", "teacher_fingerprint")},
              "student_tokenizer_fingerprint": "another tokenizer"}
    with pytest.raises(StaleCache, match="student_tokenizer_fingerprint"):
        open_cache(tmp_path / "teacher-cache", wanted, [])


@pytest.mark.e2e
def test_compare_runs_a_cross_tokenizer_grid_from_one_teacher_cache(tmp_path, word_data, model_dirs):
    """A grid over a pair of tokenizers: the teacher's cache built once over its own encoding, each cell reporting
    bits per byte before and after training, the teacher's in the reference rows."""
    import yaml

    from lmdistill.compare.runner import run_compare
    data = {"run_dir": str(tmp_path / "out"),
            "base": {"teacher": {"model": model_dirs["teacher"]}, "student": {"model": model_dirs["student"]},
                     "data": {"builtin": None, **word_data, "max_length": 64},
                     "train": {"steps": 2, "batch_size": 4, "warmup_steps": 0, "eval_every": 0, "log_every": 1},
                     "eval": {"max_examples": 4, "batch_size": 4, "max_new_tokens": 4}},
            "methods": {"sft": "sft", "uld": [{"name": "ce"}, {"name": "uld"}]}, "seeds": [0], "baseline": "sft"}
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    lines = []
    rows = run_compare(path, log=lines.append)
    assert {r["method"] for r in rows} == {"sft", "uld"}
    for row in rows:
        assert row["bpb"] > 0 and row["bpb_before"] > 0 and "kl" not in row
    assert sum("teacher cache ready" in line for line in lines) == 1
    (task_reference,) = (tmp_path / "out" / "reference").glob("*.json")  # the grid's one task
    reference = json.loads(task_reference.read_text())
    assert reference["rows"]["teacher"]["bpb"] > 0
    report = (tmp_path / "out" / "report.md").read_text()
    assert "bits/byte − sft" in report and "bits/byte before" in report
