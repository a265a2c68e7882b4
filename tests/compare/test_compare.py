"""`lmdistill compare`: statistics on known inputs, the grid's pairing, resumption, the report."""
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from lmdistill.compare import grid, runner, stats
from lmdistill.compare.report import comparisons_table, machines_line, task_table
from lmdistill.compare.schema import load_compare
from lmdistill.data import BatchOrder
from lmdistill.errors import UserError
from lmdistill.models import load_student, load_teacher
from lmdistill.provenance import machine


@pytest.mark.parametrize("df, want", [(1, 12.7062), (2, 4.3027), (4, 2.7764), (10, 2.2281), (100000, 1.9600)])
def test_t_quantile_matches_tables(df, want):
    assert stats.t_quantile(0.975, df) == pytest.approx(want, abs=1e-4)
    assert stats.t_quantile(0.025, df) == pytest.approx(-want, abs=1e-4)
    assert stats.t_cdf(0.0, df) == pytest.approx(0.5)


def test_paired_difference_on_known_values():
    d = stats.paired([6.0, 6.5, 7.1], [6.2, 6.4, 7.4])
    diffs = [-0.2, 0.1, -0.3]
    assert d["diffs"] == pytest.approx(diffs)
    m = sum(diffs) / 3
    s = math.sqrt(sum((x - m) ** 2 for x in diffs) / 2)
    assert d["mean"] == pytest.approx(m) and d["std"] == pytest.approx(s)
    half = 4.302653 * s / math.sqrt(3)
    assert d["interval"] == pytest.approx((m - half, m + half), abs=1e-6)
    assert d["lower_in"] == 2 and d["n"] == 3
    assert stats.paired([1.0], [2.0])["interval"] is None
    with pytest.raises(ValueError):
        stats.paired([1.0, 2.0], [1.0])


def test_paired_p_value_against_closed_forms():
    # Student's t has closed-form CDFs at df 1 (Cauchy) and df 2: two-sided p = 1 - 2 atan|t| / pi, 1 - |t| / sqrt(2 + t^2)
    for values, reference in (([1.0, 2.5], [0.7, 1.6]), ([6.0, 6.5, 7.1], [6.2, 6.4, 7.4]), ([3.0, 2.0, 1.0], [1.0, 0.5, 0.2])):
        d = stats.paired(values, reference)
        t = abs(d["mean"]) / (d["std"] / math.sqrt(d["n"]))
        want = 1 - 2 * math.atan(t) / math.pi if d["n"] == 2 else 1 - t / math.sqrt(2 + t * t)
        assert d["p"] == pytest.approx(want, abs=1e-9)
    assert stats.paired([1.0], [2.0])["p"] is None
    assert stats.paired([1.0, 2.0], [0.5, 1.5])["p"] == 0.0  # the same gap in every seed
    assert stats.paired([1.0, 2.0], [1.0, 2.0])["p"] == 1.0


def test_holm_adjustment_by_hand():
    # sorted: 0.005 x 4 = 0.02; 0.01 x 3 = 0.03; 0.03 x 2 = 0.06; 0.04 x 1 = 0.04, raised to the running max 0.06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert stats.holm([]) == []


def test_pairing_matters_in_the_statistics():
    """A gap smaller than the seed noise is still resolved when it is consistent seed by seed."""
    base = [6.0, 6.6, 7.2]
    method = [b - 0.05 for b in base]
    unpaired_std = stats.std(base)
    d = stats.paired(method, base)
    assert unpaired_std > 0.5 and d["interval"][1] < 0 and d["lower_in"] == 3


def test_task_table_shows_means_and_paired_intervals():
    rows = [{"method": m, "seed": s, "ce": ce, "kl": ce / 2, "train_seconds": 10, "peak_rss_gib": 1.5}
            for m, values in {"kd": [6.0, 6.5, 7.0], "x": [5.9, 6.3, 7.0]}.items() for s, ce in enumerate(values)]
    text = task_table(rows, ["kd", "x", "missing"], "kd")
    lines = text.splitlines()
    assert len(lines) == 4  # header, rule, kd, x; a method with no finished cell is left out
    assert "| kd | 3 | 6.500 ± 0.500 |" in lines[2] and "(baseline)" in lines[2]
    d = stats.paired([5.9, 6.3, 7.0], [6.0, 6.5, 7.0])
    lo, hi = d["interval"]
    assert f"−{abs(d['mean']):.3f} [−{abs(lo):.3f}, +{hi:.3f}] (2/3 lower)" in lines[3]
    # extra pairs: x - kd as above; kd - x is its mirror image; a pair with no common seed is left out
    pairs = comparisons_table(rows, [("x", "kd"), ("kd", "x"), ("x", "missing")]).splitlines()
    assert len(pairs) == 4 and pairs[2].startswith("| x − kd | " + f"−{abs(d['mean']):.3f}")
    assert pairs[3].startswith(f"| kd − x | +{abs(d['mean']):.3f} [−{hi:.3f}, +{abs(lo):.3f}] (0/3 lower)")  # a tie counts as not lower
    # on the primary metric (ce): the p-value, Holm's adjustment over the 2 comparisons (x − kd and its mirror share
    # one p-value: both become min(1, 2p)), and the verdict
    assert "Holm p (2 comparisons)" in pairs[0]
    holm_p = min(1.0, 2 * d["p"])
    assert pairs[2].endswith(f"| {d['p']:.3f} | {holm_p:.3f} | not resolved |") and holm_p > 0.05


def test_a_pretrained_students_level_before_training_reaches_the_row_the_log_and_the_table(tmp_path):
    (tmp_path / "eval.json").write_text(json.dumps({"metrics": {"student": {"ce": 5.5, "kl": 4.0},
                                                                "student before training": {"ce": 14.25}}}))
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"kind": "train", "step": 1, "loss": 9.0}) + "\n")
    cell = SimpleNamespace(run_dir=tmp_path, task="t", method="sft", seed=0,
                           config=SimpleNamespace(train=SimpleNamespace(steps=1)))
    row, curves = runner.cell_row(cell)
    assert row["ce_before"] == 14.25 and "bpb_before" not in row and curves["train"] == [(1, 9.0)]
    assert runner.scores_text(row) == "CE 5.500 (before training 14.250), KL 4.000"
    lines = task_table([row], ["sft"], "sft").splitlines()
    assert "| CE | CE before |" in lines[0] and "| 5.500 | 14.250 |" in lines[2]


def test_holm_verdicts_in_the_comparisons_table():
    # a gap resolved alone (p 0.0014 in 3 seeds) stays resolved among 3 comparisons; one at p ~0.03 does not
    base = [6.0, 6.6, 7.2]
    values = {"base": base, "clear": [b - 0.10 + e for b, e in zip(base, (0.0, 0.004, -0.004))],
              "weak": [b - 0.05 + e for b, e in zip(base, (0.0, 0.02, -0.02))], "same": [b + e for b, e in zip(base, (0.01, -0.01, 0.0))]}
    rows = [{"method": m, "seed": s, "ce": v} for m, vs in values.items() for s, v in enumerate(vs)]
    lines = comparisons_table(rows, [("clear", "base"), ("weak", "base"), ("same", "base")]).splitlines()[2:]
    p = {m: stats.paired(values[m], base)["p"] for m in ("clear", "weak", "same")}
    assert p["clear"] * 3 < 0.05 and p["weak"] < 0.05 < p["weak"] * 2
    assert lines[0].endswith("| first lower |") and lines[1].endswith("| not resolved |")
    assert lines[2].endswith("| not resolved |")


def test_a_metric_missing_from_some_cells_is_paired_over_the_seeds_that_have_it():
    # gen_bpb is left out of a cell whose generations were all empty (a collapsed on-policy student)
    rows = [{"method": m, "seed": s, "ce": 6.0 + s + (m == "x") * 0.1} for m in ("kd", "x", "empty") for s in range(3)]
    for r in rows:
        if r["method"] != "empty" and not (r["method"] == "x" and r["seed"] == 2):
            r["gen_bpb"] = 0.5 + r["seed"] / 10 + (r["method"] == "x") * 0.2
    table = task_table(rows, ["kd", "x", "empty"], "kd").splitlines()
    assert "+0.200 [" in table[3] and "(2/2 lower)" not in table[3]  # x − kd on gen_bpb: seeds 0 and 1 only
    assert table[4].count("| - |") >= 2  # empty: no gen_bpb, so no mean and no difference
    pairs = comparisons_table(rows, [("x", "kd"), ("empty", "kd")], primary="gen_bpb").splitlines()
    assert "(0/2 lower)" in pairs[2] and "Holm p (1 comparisons)" in pairs[0]
    assert pairs[3].endswith("| - | - | (not measured) |")

def test_cells_from_several_machines_are_flagged():
    rows = [{"machine": "A"}, {"machine": "B"}, {"machine": "A"}, {}]
    line = machines_line(rows)
    assert line.startswith("cells ran on 3 machines: A (2 cells); ")
    assert "B (1 cell)" in line and "not recorded (1 cell)" in line and "only within one machine" in line
    assert machines_line(rows[:1]) == "cells ran on: A (1 cell)"


def _compare_file(tmp_path, word_data, **extra):
    data = {"run_dir": str(tmp_path / "out"),
            "base": {"student": {"spec": {"hidden_size": 64, "num_layers": 2, "num_heads": 2}},
                     "data": {"builtin": None, **word_data, "max_length": 64},
                     "train": {"steps": 3, "batch_size": 4, "warmup_steps": 0, "eval_every": 0, "log_every": 1},
                     "eval": {"max_examples": 4, "batch_size": 4, "max_new_tokens": 4}},
            "methods": {"sft": "sft", "kd": "kd"}, "seeds": [0, 1], "baseline": "kd",
            "quick": {"methods": ["kd"], "seeds": [0]}, **extra}
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize("change, message", [
    ({"methds": {}}, "did you mean 'methods'"), ({"baseline": "kdd"}, "did you mean 'kd'"),
    ({"base": {"seed": 3}}, "base.seed is set per cell"), ({"comparisons": [["kd", "sf"]]}, "did you mean 'sft'"), ({"quick": {"methods": ["nope"]}}, "quick: unknown method"),
    ({"methods": {"kd": "sftt"}}, "unknown objectives preset 'sftt'"),
    ({"not_applicable": {"kd": "no reason"}}, "not_applicable: 'kd' is also a method of this grid"),
    ({"methods": {"kd": {"objectives": "kd", "train": {"steps": 9}}}}, "method 'kd': a mapping holds objectives and "
     "optionally train.weighting and train.responses .* with \\['steps'\\]"),
    ({"methods": {"kd": {"objectives": "kd", "train": {"weighting": {"method": "gradnrm"}}}}}, "gradnorm")])
def test_compare_file_mistakes_are_one_line_errors(tmp_path, word_data, change, message):
    path = _compare_file(tmp_path, word_data, **change)
    with pytest.raises(UserError, match=message):
        config = load_compare(path)
        grid.cells(config)


@pytest.mark.e2e
def test_cells_are_paired_by_seed(tmp_path, word_data):
    compare = load_compare(_compare_file(tmp_path, word_data))
    cells = grid.cells(compare)
    assert [(c.method, c.seed) for c in cells] == [("sft", 0), ("kd", 0), ("sft", 1), ("kd", 1)]
    sft0, kd0, sft1 = (c.config.model_dump(mode="json") for c in cells[:3])
    for key in sft0:
        if key not in ("objectives", "run_dir"):
            assert sft0[key] == kd0[key], key
    assert sft1["seed"] == 1 and sft0["seed"] == 0 and sft0["run_dir"] != kd0["run_dir"]
    # the same seed -> the same student initialisation and the same batches; another seed -> different ones
    teacher, tokenizer = load_teacher(cells[0].config.teacher)
    weights = [load_student(c.config.student, teacher, tokenizer, c.config.seed)[0].state_dict() for c in cells[:3]]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])
    orders = [BatchOrder(96, 4, 1, c.config.seed) for c in cells[:3]]
    assert [orders[0].step(s) for s in range(30)] == [orders[1].step(s) for s in range(30)]
    assert [orders[0].step(s) for s in range(30)] != [orders[2].step(s) for s in range(30)]


@pytest.mark.e2e
def test_methods_may_differ_in_weighting_and_attention_methods_run_the_teacher_online(tmp_path, word_data,
                                                                                      monkeypatch):
    methods = {"kd": "kd", "kd-gradnorm": {"objectives": "kd", "train": {"weighting": {"method": "gradnorm"}}},
               "attention": [{"name": "ce"}, {"name": "attention"}]}
    cells = grid.cells(load_compare(_compare_file(tmp_path, word_data, methods=methods, seeds=[0])))
    kd, gradnorm, attention = (c.config for c in cells)
    assert kd.train.weighting.method == "fixed" and gradnorm.train.weighting.method == "gradnorm"
    assert gradnorm.objectives == kd.objectives
    assert kd.train.model_dump(exclude={"weighting"}) == gradnorm.train.model_dump(exclude={"weighting"})
    assert kd.teacher_cache is not None and gradnorm.teacher_cache == kd.teacher_cache
    assert attention.teacher_cache is None  # the cache holds no attention: this method's cells run the teacher
    on_policy = {"objectives": "kd", "train": {"responses": {"source": "student", "lmbda": 0.5}}}
    gkd, = (c.config for c in grid.cells(load_compare(_compare_file(tmp_path, word_data, seeds=[0],
                                                                     methods={"gkd": on_policy}, baseline="gkd",
                                                                     quick=None))))
    assert gkd.train.responses.lmbda == 0.5 and gkd.teacher_cache is None  # its text is new: the teacher runs online
    # the cache and the reference rows are made from the methods' configs: no student is built (or cut) for them
    from lmdistill import build
    monkeypatch.setattr(build, "load_student", lambda *a, **k: pytest.fail("compare built a student"))
    feature = [{"name": "ce"}, {"name": "feature", "selector": "projection", "metric": "mse", "layers": [[10, 1]]}]
    rows = runner.run_compare(_compare_file(tmp_path, word_data, seeds=[0],
                                            methods={"attention": methods["attention"], "kd": "kd", "feature": feature}),
                              log=lambda *_: None)
    assert sorted(r["method"] for r in rows) == ["attention", "feature", "kd"] and all(r["ce"] > 0 for r in rows)
    manifest = json.loads((tmp_path / "out" / "cache" / "task" / "manifest.json").read_text())
    assert 10 in manifest["layers"]  # built for kd and feature (with its teacher layer), though attention came first
    assert "online for attention (the cache holds no attention)" in (tmp_path / "out" / "report.md").read_text()


def test_quick_grid_uses_its_own_run_dir(tmp_path, word_data):
    compare = load_compare(_compare_file(tmp_path, word_data), quick=True)
    assert list(compare.methods) == ["kd"] and compare.seeds == [0] and compare.run_dir.endswith("out-quick")
    with pytest.raises(UserError, match="no quick: section"):
        load_compare(_compare_file(tmp_path, word_data, quick=None), quick=True)


def test_cells_leave_the_teachers_generations_and_baselines_to_the_reference_unless_asked(tmp_path, word_data):
    cells = grid.cells(load_compare(_compare_file(tmp_path, word_data)))
    assert cells and not any(c.config.eval.baselines for c in cells)  # computed once per task (reference/TASK.json)
    asked = grid.cells(load_compare(_compare_file(tmp_path, word_data), overrides=["eval.baselines=true"]))
    assert all(c.config.eval.baselines for c in asked)
    assert runner.reference_key(cells[0].config) == runner.reference_key(asked[0].config)


def test_set_overrides_every_cells_base_and_run_dir_moves_the_grid(tmp_path, word_data):
    path = _compare_file(tmp_path, word_data, tasks={"a": {}, "b": {"train": {"steps": 7}}})
    compare = load_compare(path, overrides=["train.steps=2", "eval.max_examples=3"], run_dir=tmp_path / "elsewhere")
    cells = grid.cells(compare)
    assert {c.task for c in cells} == {"a", "b"}  # over a task's own value too
    assert all(c.config.train.steps == 2 and c.config.eval.max_examples == 3 for c in cells)
    assert all(c.config.train.batch_size == 4 for c in cells)  # the rest of the base as written
    assert all(str(c.run_dir).startswith(str(tmp_path / "elsewhere" / "cells")) for c in cells)
    with pytest.raises(UserError, match="--set seed=...: seed is set per cell by compare"):
        load_compare(_compare_file(tmp_path, word_data), overrides=["seed=3"])


@pytest.mark.e2e
def test_compare_runs_resumes_and_reports(tmp_path, word_data, monkeypatch):
    path = _compare_file(tmp_path, word_data, not_applicable={"lens": "needs one vocabulary"})
    rows = runner.run_compare(path, log=lambda *_: None)
    out = tmp_path / "out"
    assert sorted((r["method"], r["seed"]) for r in rows) == [("kd", 0), ("kd", 1), ("sft", 0), ("sft", 1)]
    assert all(r["peak_rss_gib"] > 0 and r["train_seconds"] >= 0 and r["ce"] > 0 for r in rows)
    report = (out / "report.md").read_text()
    assert "| sft | 2 |" in report and "(baseline)" in report and "| teacher |" in report and "| constant |" in report
    assert "Not applicable in this grid:\n\n- lens: needs one vocabulary" in report
    here = machine(torch.device("cpu"))
    assert all(r["machine"] == here for r in rows) and f"cells ran on: {here} (4 cells)" in report
    assert (out / "compare-task.png").stat().st_size > 1000
    assert json.loads((out / "cache" / "task" / "manifest.json").read_text())["logits"] == "head"
    assert json.loads((out / "rows.json").read_text()) == rows

    # finished cells are not rerun; a cell whose result is gone (or whose config changed) is
    ran = []
    real = runner.run_cell
    monkeypatch.setattr(runner, "run_cell", lambda cell, log=print: (ran.append((cell.method, cell.seed)), real(cell))[1])
    (out / "cells" / "task" / "sft" / "seed1" / "eval.json").unlink()
    again = runner.run_compare(path, log=lambda *_: None)
    assert ran == [("sft", 1)]
    assert sorted((r["method"], r["seed"], r["ce"]) for r in again) == sorted((r["method"], r["seed"], r["ce"]) for r in rows)


@pytest.mark.e2e
def test_a_failed_cell_is_reported_and_retried(tmp_path, word_data, monkeypatch):
    path = _compare_file(tmp_path, word_data, methods={"sft": "sft"}, baseline="sft", seeds=[0],
                         quick=None)
    monkeypatch.setattr(runner, "run_cell", lambda cell, log=print: (1, 0.0))
    with pytest.raises(UserError, match="1 of 1 cells failed.*sft / seed 0"):
        runner.run_compare(path, log=lambda *_: None)
    assert (tmp_path / "out" / "report.md").is_file()


def test_cli_mistake_exits_2_with_one_line(tmp_path, word_data, capsys):
    from lmdistill.cli import main
    path = _compare_file(tmp_path, word_data, seeds=[0, 0])
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", str(path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "seeds must be distinct" in err
    assert not (tmp_path / "out").exists()  # nothing written


def test_a_cell_saved_under_another_schema_default_is_not_done(tmp_path, word_data):
    """A config saved before a default changed re-reads equal through the schema, but it was another run."""
    compare = load_compare(_compare_file(tmp_path, word_data))
    cell = grid.cells(compare)[0]
    cell.run_dir.mkdir(parents=True)
    (cell.run_dir / "eval.json").write_text("{}")
    saved = cell.config.model_dump(mode="json")
    (cell.run_dir / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    assert runner.is_done(cell)
    del saved["teacher_cache"]["logits"]  # as written before the key existed
    (cell.run_dir / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    assert not runner.is_done(cell)


ROOT = Path(__file__).parents[2]
SHIPPED_FILES = sorted([*(ROOT / "benchmarks").glob("*.yaml"), *(ROOT / "configs").glob("*.yaml")])


@pytest.mark.parametrize("path", SHIPPED_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_config_and_compare_file_is_valid(path):
    from lmdistill.compare.grid import cells
    from lmdistill.config import build_config, read_yaml
    data = read_yaml(path)
    if "methods" in data:
        compare = load_compare(path)
        compare.teacher = "online"  # every cell's config is built; whether the cache serves it needs the models
        assert cells(compare), f"{path.name} has no cells"
    else:
        build_config(data)
