"""benchmarks/claims.py: each seed claim's paired differences read from committed grids, Holm over a grid's task."""
import json
import math
import random
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import claims  # noqa: E402

METHODS = ["sft", "projection", "flexkd", "pca", "random", "best"]


def _grid(folder, rng, not_applicable=None):
    rows = [{"task": "t", "method": m, "seed": s, "ce": 3.0 + rng.random(), "commit": "abcdef0123456789",
             "clean": True} for m in METHODS for s in range(3)]
    folder.mkdir(parents=True)
    (folder / "rows.json").write_text(json.dumps(rows))
    compare = {"tasks": {"t": {}}, "methods": {m: m for m in METHODS}, "not_applicable": not_applicable}
    (folder / "compare.yaml").write_text(yaml.safe_dump(compare, sort_keys=False))
    return rows


def test_a_grid_answers_every_question_it_has_the_methods_for_with_holm_over_the_task(tmp_path):
    rows = _grid(tmp_path / "g", random.Random(0))
    answers = claims.grid_answers(tmp_path / "g")["answers"]
    pairs = [(d["method"], d["reference"]) for d in answers]
    # flexkd - projection, flexkd - pca/random (no functional here), no lens methods, best - each other method
    assert pairs == [("flexkd", "projection"), ("flexkd", "pca"), ("flexkd", "random")] + [
        ("best", m) for m in METHODS if m != "best"]
    ce = {(r["method"], r["seed"]): r["ce"] for r in rows}
    diffs = [ce[("flexkd", s)] - ce[("projection", s)] for s in range(3)]
    first = answers[0]
    assert first["mean"] == pytest.approx(sum(diffs) / 3, abs=1e-12)
    sd = math.sqrt(sum((d - first["mean"]) ** 2 for d in diffs) / 2)
    half = 4.302652729911275 * sd / math.sqrt(3)  # t quantile 0.975, 2 degrees of freedom
    assert first["interval"] == pytest.approx((first["mean"] - half, first["mean"] + half), abs=1e-9)
    assert all(d["family"] == len(answers) for d in answers)
    smallest = min(answers, key=lambda d: d["p"])
    assert smallest["holm"] == pytest.approx(min(1.0, len(answers) * smallest["p"]), abs=1e-12)
    assert all(d["holm"] >= d["p"] for d in answers)


def test_the_report_lists_grids_not_run_and_methods_not_applicable(tmp_path, monkeypatch):
    _grid(tmp_path / "results" / "methods", random.Random(1), {"distillens": "no shared vocabulary"})
    monkeypatch.setattr(sys, "argv", ["claims.py", "--results", str(tmp_path / "results"),
                                      "--out", str(tmp_path / "out")])
    claims.main()
    text = (tmp_path / "out" / "claims.md").read_text()
    assert "(grid `pretrained-cut` not run yet)" in text and "(grid `pretrained-cross` not run yet)" in text
    assert "distillens: not applicable" in text
    assert "| random 6x256 student | t | flexkd − projection | ce |" in text
    assert json.loads((tmp_path / "out" / "provenance.json").read_text())["git"]["commit"]


def test_rouge_l_is_compared_beside_the_primary_metric_and_its_separation_counted(tmp_path, monkeypatch):
    rows = _grid(tmp_path / "results" / "pretrained-cut", random.Random(2))
    rouge = {"flexkd": [10.0, 12.0, 11.0], "best": [50.0, 51.0, 52.0]}  # others 11 on every seed
    for r in rows:
        r["rougeL"] = rouge.get(r["method"], [11.0] * 3)[r["seed"]]
    (tmp_path / "results" / "pretrained-cut" / "rows.json").write_text(json.dumps(rows))
    monkeypatch.setattr(sys, "argv", ["claims.py", "--results", str(tmp_path / "results"),
                                      "--out", str(tmp_path / "out")])
    claims.main()
    text = (tmp_path / "out" / "claims.md").read_text()
    line = next(x for x in text.splitlines() if x.startswith("| pretrained cut student | t | flexkd − pca |"))
    assert line.endswith("| +0.000 [−2.484, +2.484] (1/3 lower) |")  # diffs -1, +1, 0: sd 1, t 4.303 / sqrt 3
    # best beats each of the 5 others by about 40; flexkd's three differences straddle 0
    assert "| pretrained cut student | t | 8 | ce: " in text and text.rstrip().endswith("| 5 of 8 |")
