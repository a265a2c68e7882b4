"""benchmarks/results.py (`make results`): every entry names a script or compare file that exists, and every quick
grid builds its cells with the tiny budget it adds, into benchmarks/results-quick/ only."""
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import results  # noqa: E402


def _option_values(command, option):
    return [command[i + 1] for i, arg in enumerate(command) if arg == option]


@pytest.mark.parametrize("entry", results.ENTRIES, ids=lambda e: e.name)
def test_every_entry_runs_a_file_that_exists_and_its_quick_version_writes_apart(entry):
    for command in filter(None, (entry.full, entry.quick)):
        files = [arg for arg in command if arg.startswith("benchmarks/") and arg.endswith((".py", ".yaml"))]
        assert files and all((ROOT / f).is_file() for f in files), command
    if entry.quick is None:
        return
    outputs = _option_values(entry.quick, "--out") + _option_values(entry.quick, "--run-dir") + [
        v.split("=", 1)[1] for v in _option_values(entry.quick, "--set") if v.startswith("run_dir=")]
    assert outputs and all(o.startswith(results.QUICK + "/") for o in outputs), entry.quick


@pytest.mark.parametrize("entry", [e for e in results.ENTRIES if e.quick and "compare" in e.quick],
                         ids=lambda e: e.name)
def test_every_quick_grid_builds_its_cells_at_the_tiny_budget(entry):
    from lmdistill.compare.grid import cells
    from lmdistill.compare.schema import load_compare
    command = entry.quick
    compare = load_compare(ROOT / command[command.index("compare") + 1], quick="--quick" in command,
                           overrides=_option_values(command, "--set"), run_dir=_option_values(command, "--run-dir")[0])
    compare.teacher = "online"  # (whether the cache serves a cell needs the models)
    built = cells(compare)
    assert built and all(c.config.train.steps <= 5 and c.config.eval.max_examples == 4 for c in built)
    if "--set" in command and "train.steps=2" in command:  # a later --set wins over TINY's
        assert all(c.config.train.steps == 2 and c.config.data.max_train_examples == 16 for c in built)
    assert len(built) <= 6  # a few cells: the quick run checks that each grid runs, nothing more


def test_list_and_a_mistyped_name(capsys):
    assert results.main(["--list"]) == 0
    assert "total:" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        results.main(["--only", "methodz"])
    assert e.value.code == 2


def test_jobs_run_side_by_side_with_a_log_each_and_only_in_the_quick_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(results, "ROOT", tmp_path)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    say = "import os, sys; print('threads', os.environ['OMP_NUM_THREADS']); sys.exit({})"
    entries = [results.Entry(f"job {i}", None, 0.0, [sys.executable, "-c", say.format(int(i == 2))]) for i in range(3)]
    lines = []
    assert results.run(entries, quick=True, jobs=2, log=lines.append) == ["job 2"]
    for i in range(3):
        text = (tmp_path / results.QUICK / "logs" / f"job_{i}.log").read_text()
        assert text.startswith("threads ") and int(text.split()[1]) >= 1
    assert any("job 2: FAILED" in line for line in lines) and "2 of 3 ran; failed: job 2" in lines[-1]
    run = json.loads((tmp_path / results.QUICK / "run.json").read_text())  # what ran, how long, at which commit
    assert run["jobs"] == 2 and sorted((e["name"], e["exit"]) for e in run["entries"]) == [
        ("job 0", 0), ("job 1", 0), ("job 2", 1)]
    assert run["total_seconds"] >= max(e["seconds"] for e in run["entries"]) and "git" in run["provenance"]
    with pytest.raises(SystemExit) as e:
        results.main(["--jobs", "2"])
    assert e.value.code == 2 and "--jobs" in capsys.readouterr().err


def _commented_train_commands(path):
    """The `lmdistill train ...` commands written in a YAML file's comments (a trailing backslash continues one)."""
    lines = [line.lstrip("#").strip() for line in path.read_text().splitlines() if line.startswith("#")]
    commands, current = [], None
    for line in lines:
        if current is not None:
            current += " " + line.rstrip("\\").strip()
        elif line.startswith("lmdistill train "):
            current = line.rstrip("\\").strip()
        if current is not None and not line.endswith("\\"):
            commands.append(current.split()[1:])
            current = None
    return commands


@pytest.mark.parametrize("entry", [e for e in results.ENTRIES if e.name.startswith("teacher ")], ids=lambda e: e.name)
def test_a_teacher_command_written_in_a_grid_file_is_the_one_results_runs(entry):
    runs = entry.full[entry.full.index("-m") + 2:]
    runs = [arg for arg in runs if arg != "--overwrite"]
    run_dir = next(v for v in _option_values(runs, "--set") if v.startswith("run_dir="))
    written = [c for f in sorted((ROOT / "benchmarks").glob("*.yaml")) for c in _commented_train_commands(f)
               if f"--set {run_dir}" in " ".join(c)]
    for command in written:
        assert sorted(_option_values(command, "--set")) == sorted(_option_values(runs, "--set")), command
        assert command[:2] == runs[:2], command
    if len(_option_values(runs, "--set")) > 1:  # a teacher beyond crosstok-teacher.yaml's own: its grid file says how
        assert written, f"no benchmarks/*.yaml comment gives the command that makes {run_dir}"
