"""Bad input: one clear line on stderr, exit code 2, no traceback, nothing written."""
import subprocess
import sys

import pytest
import yaml

from lmdistill.cli import main
from conftest import tiny_config


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    err = capsys.readouterr().err.strip()
    return e.value.code, err


def write_config(tmp_path, config):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def assert_one_line_error(code, err, pattern):
    import re
    assert code == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert re.search(pattern, err), err


def test_missing_config_file(tmp_path, capsys):
    assert_one_line_error(*run_cli(["train", str(tmp_path / "none.yaml")], capsys), "config file not found")


@pytest.mark.parametrize("change, pattern", [
    ({"objectives": [{"name": "logit_dk"}]}, "unknown objective 'logit_dk'.*did you mean 'logit_kd'"),
    ({"train": {"stesp": 3}}, "unknown key 'train.stesp'.*did you mean 'steps'"),
    ({"student": {"spec": {"hidden_size": 100, "num_heads": 3}}}, "not divisible by num_heads 3"),
])
def test_config_mistakes(tmp_path, capsys, word_data, change, pattern):
    config = tiny_config(tmp_path / "run", word_data)
    for section, values in change.items():
        config[section] = values if isinstance(values, list) else {**config.get(section, {}), **values}
    assert_one_line_error(*run_cli(["train", write_config(tmp_path, config)], capsys), pattern)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("content, pattern", [
    ('{"prompt": "a", "response": "b"}\n{"prompt": "a" "response": "b"}\n', r"train.jsonl line 2: invalid JSON"),
    ("", r"train.jsonl: no records"),
    ('{"prompt": "a"}\n', r"line 1: missing 'response'"),
])
def test_data_mistakes(tmp_path, capsys, word_data, content, pattern):
    bad = tmp_path / "train.jsonl"
    bad.write_text(content)
    config = tiny_config(tmp_path / "run", {**word_data, "train": str(bad)})
    assert_one_line_error(*run_cli(["train", write_config(tmp_path, config)], capsys), pattern)
    assert not (tmp_path / "run").exists()


def test_set_override_mistake(tmp_path, capsys, word_data):
    path = write_config(tmp_path, tiny_config(tmp_path / "run", word_data))
    assert_one_line_error(*run_cli(["train", path, "--set", "train.lrr=3"], capsys), "did you mean 'lr'")


def test_eval_of_a_non_run(tmp_path, capsys):
    assert_one_line_error(*run_cli(["eval", str(tmp_path)], capsys), "not a run directory")


def test_resume_without_a_run(tmp_path, capsys, word_data):
    path = write_config(tmp_path, tiny_config(tmp_path / "run", word_data))
    assert_one_line_error(*run_cli(["train", path, "--resume"], capsys), "holds no run to resume")


@pytest.mark.e2e
def test_train_then_eval_through_the_cli(tmp_path, capsys, word_data):
    path = write_config(tmp_path, tiny_config(tmp_path / "run", word_data, train={"steps": 2}))
    main(["train", path, "--set", "eval.max_examples=2"])
    main(["eval", str(tmp_path / "run"), "--split", "dev", "--set", "eval.max_examples=3"])
    out = capsys.readouterr().out
    assert "| student |" in out and (tmp_path / "run/eval-dev.json").is_file()
    assert f"- data: files: train {word_data['train']} (96 examples), dev {word_data['dev']} (8 examples)" in out
    written = sorted(p.name for p in (tmp_path / "run").iterdir())
    (tmp_path / "run/config.yaml").write_text((tmp_path / "run/config.yaml").read_text().replace(
        f"dev: {word_data['dev']}", "dev: null"))
    assert_one_line_error(*run_cli(["eval", str(tmp_path / "run"), "--split", "dev"], capsys),
                          "the run's config gives no data.dev; pass --set data.dev=FILE.jsonl or another --split")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == written


def test_info_prints_model_and_layer_map(capsys):
    main(["info", "smollm2-135m-instruct", "--student-layers", "6"])
    out = capsys.readouterr().out
    assert "hidden_size" in out and "576" in out and "49152" in out
    assert "teacher: 5, 10, 15, 20, 25" in out and "student: 1, 2, 3, 4, 5" in out


@pytest.mark.e2e
def test_installed_entry_point_help_and_exit_code(tmp_path):
    exe = [sys.executable, "-m", "lmdistill"]
    for sub in ([], ["train"], ["select"], ["eval"], ["info"], ["prepare"]):
        out = subprocess.run(exe + sub + ["--help"], capture_output=True, text=True)
        assert out.returncode == 0 and "usage: lmdistill" in out.stdout
    train_help = subprocess.run(exe + ["train", "--help"], capture_output=True, text=True).stdout
    for option in ("--set", "--resume", "--overwrite", "--stop-at", "--run-dir"):
        assert option in train_help
    bad = subprocess.run(exe + ["train", str(tmp_path / "missing.yaml")], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip() == f"lmdistill: error: config file not found: {tmp_path / 'missing.yaml'}"


def test_prepare_refuses_a_name_that_is_not_built_in(capsys):
    assert_one_line_error(*run_cli(["prepare", "gemma3-270"], capsys), "'gemma3-270' is not a built-in model")
