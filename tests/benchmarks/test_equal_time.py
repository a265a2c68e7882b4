"""benchmarks/equal_time.py: the equal-wall-time KD cells paired with the 100-step on-policy grid's, seed by seed."""
import json
import random
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import equal_time  # noqa: E402


def _rows(methods, tasks, steps, rng):
    return [{"task": t, "method": m, "seed": s, "ce": 7.0 + rng.random(), "kl": 4.0 + rng.random(), "steps": steps,
             "train_seconds": 100.0 + rng.random(), "commit": "abcdef0123456789", "clean": True}
            for t in tasks for m in methods for s in range(3)]


def _write(folder, rows):
    folder.mkdir(parents=True)
    (folder / "rows.json").write_text(json.dumps(rows))


def test_the_long_kd_cells_are_paired_with_each_on_policy_method_of_their_task(tmp_path):
    rng = random.Random(0)
    steps_rows = _rows(["kd-fkl", "gkd1-fkl", "seqkd"], ["fresh", "other"], 100, rng)
    time_rows = _rows(["kd-fkl"], ["fresh"], 530, rng)
    _write(tmp_path / "onpolicy", steps_rows)
    _write(tmp_path / "onpolicy-walltime", time_rows)
    equal_time.main(["--results", str(tmp_path), "--out", str(tmp_path / "out")])
    rows = json.loads((tmp_path / "out" / "rows.json").read_text())
    assert {r["task"] for r in rows} == {"fresh"}  # a task the equal-time grid did not run is left out
    assert sum(r["method"] == equal_time.LONG for r in rows) == 3
    text = (tmp_path / "out" / "report.md").read_text()
    assert "530 steps; the other methods 100." in text
    long = {r["seed"]: r["ce"] for r in time_rows}
    gkd = {r["seed"]: r["ce"] for r in steps_rows if r["method"] == "gkd1-fkl" and r["task"] == "fresh"}
    mean = sum(long[s] - gkd[s] for s in range(3)) / 3
    line = next(x for x in text.splitlines() if x.startswith(f"| {equal_time.LONG} − gkd1-fkl |"))
    assert line.split(" | ")[1].startswith(("+" if mean >= 0 else "−") + f"{abs(mean):.3f} [")
    assert f"| {equal_time.LONG} − gkd0.5-fkl |" not in text  # absent methods are not compared


def test_a_missing_grid_is_a_one_line_error_and_nothing_is_written(tmp_path, capsys):
    _write(tmp_path / "onpolicy", _rows(["kd-fkl"], ["fresh"], 100, random.Random(1)))
    with pytest.raises(SystemExit) as stop:
        equal_time.main(["--results", str(tmp_path), "--out", str(tmp_path / "out")])
    assert stop.value.code == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "onpolicy-walltime/rows.json is missing" in error
    assert "lmdistill compare benchmarks/onpolicy-walltime.yaml" in error
    assert not (tmp_path / "out").exists()
