"""benchmarks/joined.py: grids that share a base pair cell by cell; grids that do not are refused."""
import json
import random
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import joined  # noqa: E402

BASE = {"base_file": "../configs/demo.yaml", "base": {"train": {"steps": 100}}, "seeds": [0, 1, 2],
        "teacher": None, "cache": None}


def _grid(folder, methods, task_names, rng, **changes):
    folder.mkdir(parents=True)
    spec = {**BASE, "tasks": {t: {} for t in task_names}, "methods": {m: m for m in methods}, **changes}
    (folder / "compare.yaml").write_text(yaml.safe_dump(spec))
    rows = [{"task": t, "method": m, "seed": s, "ce": 7.0 + rng.random(), "kl": 4.0 + rng.random(), "steps": 100,
             "train_seconds": 100.0, "commit": "abcdef0123456789", "clean": True}
            for t in task_names for m in methods for s in range(3)]
    (folder / "rows.json").write_text(json.dumps(rows))
    return rows


def test_the_methods_of_two_grids_are_compared_seed_by_seed(tmp_path):
    rng = random.Random(0)
    first = _grid(tmp_path / "a", ["kd-fkl", "gkd1-fkl"], ["fresh", "cut"], rng)
    second = _grid(tmp_path / "b", ["gkd1-gjsd"], ["fresh"], rng)
    joined.main(["a", "b", "--results", str(tmp_path), "--baseline", "kd-fkl",
                 "--compare", "gkd1-gjsd:gkd1-fkl", "--out", str(tmp_path / "out")])
    text = (tmp_path / "out" / "report.md").read_text()
    assert len(json.loads((tmp_path / "out" / "rows.json").read_text())) == len(first) + len(second)
    gjsd = {r["seed"]: r["ce"] for r in second}
    fkl = {r["seed"]: r["ce"] for r in first if r["method"] == "gkd1-fkl" and r["task"] == "fresh"}
    mean = sum(gjsd[s] - fkl[s] for s in range(3)) / 3
    fresh = text.split("## fresh")[1]
    line = next(x for x in fresh.splitlines() if x.startswith("| gkd1-gjsd − gkd1-fkl |"))
    assert line.split(" | ")[1].startswith(("+" if mean >= 0 else "−") + f"{abs(mean):.3f} [")
    cut = text.split("## cut")[1].split("## fresh")[0]
    assert "| kd-fkl |" in cut and "gkd1-gjsd" not in cut  # the second grid did not run that task


@pytest.mark.parametrize("changes, words", [({"seeds": [0, 1]}, "differ in `seeds`"),
                                            ({"base": {"train": {"steps": 200}}}, "differ in `base`"),
                                            ({"tasks": {"fresh": {"data": {"max_length": 64}}}}, "set task fresh"),
                                            ({"methods": {"kd-fkl": "kd"}}, "method kd-fkl is in both")])
def test_grids_whose_cells_do_not_pair_are_refused_in_one_line(tmp_path, capsys, changes, words):
    rng = random.Random(1)
    _grid(tmp_path / "a", ["kd-fkl"], ["fresh"], rng)
    methods = list(changes.pop("methods", {"gkd1-gjsd": 0}))
    _grid(tmp_path / "b", methods, ["fresh"], rng, **changes)
    with pytest.raises(SystemExit) as stop:
        joined.main(["a", "b", "--results", str(tmp_path), "--baseline", "kd-fkl", "--out", str(tmp_path / "out")])
    assert stop.value.code == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and words in error
    assert not (tmp_path / "out").exists()


def test_an_unknown_method_is_refused_before_anything_is_written(tmp_path, capsys):
    _grid(tmp_path / "a", ["kd-fkl"], ["fresh"], random.Random(2))
    with pytest.raises(SystemExit) as stop:
        joined.main(["a", "--results", str(tmp_path), "--baseline", "kd-fkl", "--compare", "gkd1:kd-fkl",
                     "--out", str(tmp_path / "out")])
    assert stop.value.code == 2
    assert "no cells of method(s) gkd1" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
