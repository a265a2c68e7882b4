"""The selector registry: lookup, the declarations that drive the feature objective's config checks and compare
grids, metric `params` validated from the metric's signature, former flat keys refused with where they moved."""
import inspect
import re
from types import SimpleNamespace

import pytest
import torch
import yaml

from lmdistill.config import build_config, load_config, save_config
from lmdistill.errors import UserError
from lmdistill.features import metrics, selectors
from lmdistill.features.registry import SELECTORS, Selector, get_selector
from lmdistill.objectives.feature import FeatureKD, FeatureParams


def feature(**entry):
    return build_config({"objectives": [{"name": "feature", **entry}]}).objectives[0]


def test_lookup_and_a_one_line_error_for_an_unknown_name():
    assert list(SELECTORS) == ["flexkd", "functional", "pca", "random", "projection", "none"]
    assert all(get_selector(name).name == name for name in SELECTORS)
    with pytest.raises(ValueError, match=r"unknown selector 'flexdk' \(did you mean 'flexkd'\?\); valid: flexkd, "):
        get_selector("flexdk")
    with pytest.raises(UserError) as error:
        feature(selector="pcaa")
    assert str(error.value) == ("config: objectives[0].selector: unknown selector 'pcaa' (did you mean 'pca'?); "
                                "valid: flexkd, functional, pca, random, projection, none")


# what each selector did before the registry: (calibration pass, selection artifact, learned, full widths, options)
DECLARED = {"flexkd": (True, True, False, False, {"score", "pairing", "calibration_examples", "selection_file"}),
            "functional": (True, True, False, False, {"calibration_examples", "selection_file"}),
            "pca": (True, True, False, False, {"calibration_examples", "selection_file"}),
            "random": (False, True, False, False, {"seed", "selection_file"}),
            "projection": (False, False, True, False, {"seed"}),
            "none": (False, False, False, True, set())}


@pytest.mark.parametrize("name", DECLARED)
def test_declarations(name):
    cls = get_selector(name)
    assert (cls.calibrates, cls.selects, cls.learned, cls.full_width, set(cls.options)) == DECLARED[name]
    assert set(cls.options) <= set(FeatureParams.model_fields) and set(cls.recorded) <= set(cls.options)
    # the pass reads calibration_examples exactly when it runs; only a selection has a file to reuse
    assert ("calibration_examples" in cls.options) == cls.calibrates
    assert ("selection_file" in cls.options) == cls.selects


NON_DEFAULT = {"score": "sq_grad", "pairing": "rank", "calibration_examples": 8, "seed": 3,
               "selection_file": "s.safetensors"}


@pytest.mark.parametrize("name", DECLARED)
def test_a_selectors_declared_options_drive_refuse_unused(name):
    metric = "cka" if get_selector(name).full_width else "pearson"
    for key, value in NON_DEFAULT.items():
        if key in get_selector(name).options:
            assert getattr(feature(selector=name, metric=metric, **{key: value}), key) == value
        else:
            with pytest.raises(UserError, match=re.escape(f"{key}={value!r} is only used with selector ")):
                feature(selector=name, metric=metric, **{key: value})
        # left at its default, any option is accepted (a resolved config loads again)
        default = FeatureParams.model_fields[key].default
        resolved = 0 if key == "seed" and key in get_selector(name).options else default  # unset: the run's seed
        assert getattr(feature(selector=name, metric=metric, **{key: default}), key) == resolved


def test_metric_cka_goes_with_the_full_width_selector_only():
    for name in SELECTORS:
        if get_selector(name).full_width:
            assert feature(selector=name, metric="cka").selector == name
        else:
            with pytest.raises(UserError, match="metric cka compares full widths: use it with selector none"):
                feature(selector=name, metric="cka")


class First(Selector):
    """A selector defined outside the registry's module: the first k teacher coordinates."""
    name = "first"
    options = ("selection_file",)
    selects = True

    def select(self, k, d_teacher, grads=None, acts=None):
        return selectors.Selection(indices=torch.arange(k))


def test_a_new_selector_is_one_class(monkeypatch):
    monkeypatch.setitem(SELECTORS, "first", First)
    assert feature(selector="first", selection_file="f.safetensors").selection_file == "f.safetensors"
    with pytest.raises(UserError, match=re.escape("seed=3 is only used with selector random or projection")):
        feature(selector="first", seed=3)
    shapes = SimpleNamespace(teacher_config=SimpleNamespace(hidden_size=16, num_hidden_layers=2),
                             student_config=SimpleNamespace(hidden_size=4, num_hidden_layers=1))
    objective = FeatureKD(feature(selector="first"), shapes)
    objective.index = 0
    found, record = objective.selection_pass().compute(None, [], 0)  # computed without the teacher
    assert list(found) == [2] and found[2].indices.tolist() == [0, 1, 2, 3] and record["tokens"] == 0
    assert objective.trainable_modules() == []


def test_metric_params_are_checked_against_the_metrics_signature():
    infonce = inspect.signature(metrics.infonce).parameters
    assert feature(metric="contrastive").params == {key: infonce[key].default
                                                    for key in ("temperature", "negatives", "chunk_size")}
    assert feature(metric="contrastive").params == {"temperature": 0.1, "negatives": None, "chunk_size": 256}
    assert feature(metric="cross_correlation").params == {"off_diagonal": 0.005}
    assert feature(metric="contrastive", params={"negatives": 8}).params["negatives"] == 8
    for name in ("pearson", "mse", "cosine"):
        assert feature(metric=name).params == {}
    assert feature(selector="none", metric="cka").params == {}
    with pytest.raises(UserError) as error:
        feature(metric="contrastive", params={"temp": 0.2})
    assert str(error.value) == ("config: objectives[0]: metric contrastive has no parameter 'temp'; its parameters: "
                                "['temperature', 'negatives', 'chunk_size']")
    with pytest.raises(UserError, match=re.escape("metric pearson has no parameter 'off_diagonal'; its parameters: none")):
        feature(params={"off_diagonal": 0.1})
    for bad in ({"temperature": 0}, {"negatives": 0}, {"chunk_size": -1}, {"negatives": 2.5}):
        key, value = next(iter(bad.items()))
        with pytest.raises(UserError, match=re.escape(f"params.{key}: ") + f".*\\(got {value}\\)$"):
            feature(metric="contrastive", params=bad)
    with pytest.raises(UserError, match=r"params.off_diagonal: Input should be greater than or equal to 0"):
        feature(metric="cross_correlation", params={"off_diagonal": -0.1})


def test_a_resolved_config_shows_every_metric_parameter_and_loads_again(tmp_path):
    config = build_config({"objectives": [{"name": "ce"}, {"name": "feature", "metric": "contrastive",
                                                           "params": {"negatives": 8}}]})
    save_config(config, tmp_path / "c.yaml")
    written = yaml.safe_load((tmp_path / "c.yaml").read_text())["objectives"][1]
    assert written["params"] == {"temperature": 0.1, "negatives": 8, "chunk_size": 256}
    assert load_config(tmp_path / "c.yaml") == config


@pytest.mark.parametrize("key, value, written, metric", [
    ("off_diagonal", 0.01, "params: {off_diagonal: 0.01}", "cross_correlation"),
    ("contrastive_temperature", 0.2, "params: {temperature: 0.2}", "contrastive"),
    ("negatives", 16, "params: {negatives: 16}", "contrastive"),
    ("negatives", None, "params: {negatives: null}", "contrastive")])
def test_former_flat_keys_say_where_they_moved(key, value, written, metric):
    with pytest.raises(UserError) as error:
        build_config({"objectives": [{"name": "ce"}, {"name": "feature", "metric": metric, key: value}]})
    assert str(error.value) == f"config: objectives[1].{key} moved: write {written}"
    # what it says to write is accepted and used
    moved = feature(metric=metric, **yaml.safe_load(written))
    assert moved.params[next(iter(yaml.safe_load(written)["params"]))] == value


def test_a_former_key_given_with_set_is_refused_the_same_way():
    with pytest.raises(UserError, match=re.escape("objectives[1].off_diagonal moved: write params: {off_diagonal: 0.1}")):
        load_config(None, ["objectives.1={name: feature}", "objectives.1.off_diagonal=0.1"])


def test_a_compare_grid_gives_selectors_that_select_one_artifact_per_method(tmp_path, word_data):
    """Selections depend on the teacher and calibration data: computed once per (task, method); random's also on the
    seed (the run's, unless set): once per seed, another subset in each."""
    from lmdistill.compare import grid
    from lmdistill.compare.schema import load_compare
    methods = {name: [{"name": "ce"}, {"name": "feature", "selector": name,
                                       "metric": "cka" if get_selector(name).full_width else "mse"}]
               for name in SELECTORS}
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump({"run_dir": str(tmp_path / "out"), "teacher": "online", "methods": methods,
                                    "seeds": [0, 1], "base": {"data": {"builtin": None, **word_data}}}))
    cells = grid.cells(load_compare(path))
    assert len(cells) == 2 * len(SELECTORS)
    for cell in cells:
        per_seed = f"-seed{cell.seed}" if cell.method == "random" else ""
        shared = str(tmp_path / "out/selections/task" / f"{cell.method}-1{per_seed}.safetensors")
        assert cell.config.objectives[1].selection_file == (shared if DECLARED[cell.method][1] else None)
        if cell.method in ("random", "projection"):
            assert cell.config.objectives[1].seed == cell.seed


def test_a_selector_seed_is_the_runs_unless_set():
    assert feature(selector="random").seed == 0
    assert build_config({"seed": 4, "objectives": [{"name": "feature", "selector": "random"}]}).objectives[0].seed == 4
    assert build_config({"seed": 4, "objectives": [{"name": "feature", "selector": "projection", "seed": 1}]}
                        ).objectives[0].seed == 1  # what the user wrote
    assert feature(selector="flexkd").seed is None  # a selector that reads no seed gets none
