"""`lmdistill select` writes a selection artifact; `train` reuses a matching one and refuses a stale one."""
import pytest
import torch
import yaml

from lmdistill.cli import main
from lmdistill.config import build_config
from lmdistill.errors import UserError
from lmdistill.features import artifact
from lmdistill.provenance import model_fingerprint
from lmdistill.run import train
from lmdistill.selection import select
from conftest import tiny_config
from tolerance import EPS64, worst


def feature_config(run_dir, word_data, **feature):
    objectives = [{"name": "ce"}, {"name": "feature", "selector": "flexkd", "layers": "uniform:1",
                                   "calibration_examples": 16, **feature}]
    return tiny_config(run_dir, word_data, objectives=objectives, train={"steps": 2})


@pytest.mark.numerical
@pytest.mark.e2e
def test_select_writes_artifact_and_plot(tmp_path, word_data):
    lines = []
    written = select(build_config(feature_config(tmp_path / "run", word_data)), log=lines.append)
    path = tmp_path / "run/selection/feature-1.safetensors"
    assert list(written) == [str(path)] and path.is_file() and path.with_suffix(".png").is_file()
    assert path.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    selections, meta = artifact.load(path)
    (layer,) = selections
    assert layer == meta["layers"][0] and meta["k"] == 64 and meta["selector"] == "flexkd"
    sel = selections[layer]
    assert sel.indices.shape == (64,) and sel.scores.shape == (576,) and sel.spectrum.shape == (576,)
    assert set(sel.indices.tolist()) == set(torch.topk(sel.scores, 64).indices.tolist())
    # eigvalsh's ascending eigenvalues flipped and clamped at 0 (monotone), stored as they are: non-increasing exactly
    assert (sel.spectrum.diff() <= 0).all()
    assert meta["calibration_examples"] == 16 and meta["tokens"] > 0 and meta["seconds"] > 0
    assert meta["peak_rss_gib"] > 0 and set(meta["effective_dimension"][str(layer)]) == {"90%", "95%", "99%"}
    assert any("effective functional dimension" in line for line in lines)


@pytest.mark.e2e
def test_train_reuses_a_matching_artifact(tmp_path, word_data):
    config = build_config(feature_config(tmp_path / "run", word_data))
    select(config, log=lambda *_: None)
    path = tmp_path / "run/selection/feature-1.safetensors"
    saved, _ = artifact.load(path)
    # tamper with the indices (metadata unchanged): a reused artifact is what training uses
    (layer,) = saved
    saved[layer].indices = torch.arange(64)
    _, meta = artifact.load(path)
    artifact.save(path, saved, meta)
    lines = []
    train(config, log=lines.append)
    assert any("reusing the flexkd selection" in str(line) for line in lines)
    assert not any("selection from 16 examples" in str(line) for line in lines)


@pytest.mark.numerical
@pytest.mark.e2e
def test_train_writes_the_artifact_when_missing(tmp_path, word_data):
    train(build_config(feature_config(tmp_path / "run", word_data, selector="functional")), log=lambda *_: None)
    selections, meta = artifact.load(tmp_path / "run/selection/feature-1.safetensors")
    basis = next(iter(selections.values())).basis.double()
    # a float64 eigenbasis (orthonormal to D EPS64) rounded to float32, as in test_selectors: EPS32 per entry of
    # B^T B (unit columns), then a float64 dot product over the teacher's width D
    d = basis.shape[0]
    orthonormal = worst(1, 1.0) + worst(2 * d, 1.0, EPS64)
    torch.testing.assert_close(basis.T @ basis, torch.eye(64, dtype=torch.float64), atol=orthonormal, rtol=0)
    assert meta["selector"] == "functional"


@pytest.mark.e2e
def test_stale_artifact_is_refused(tmp_path, word_data):
    shared = str(tmp_path / "shared.safetensors")
    select(build_config(feature_config(tmp_path / "a", word_data, selection_file=shared)), log=lambda *_: None)
    other_layer = build_config(feature_config(tmp_path / "b", word_data, selection_file=shared, layers="last"))
    with pytest.raises(UserError, match=r"stale: layers \[15\] != this run's \[30\]"):
        train(other_layer, log=lambda *_: None)
    selections, meta = artifact.load(shared)
    artifact.save(shared, selections, {**meta, "teacher": "some/other-model", "teacher_fingerprint": "0" * 16})
    same = build_config(feature_config(tmp_path / "c", word_data, selection_file=shared))
    with pytest.raises(UserError, match="stale: teacher some/other-model"):
        train(same, log=lambda *_: None)
    more_data = build_config(feature_config(tmp_path / "d", word_data, selection_file=shared, calibration_examples=20))
    with pytest.raises(UserError, match="calibration data"):
        train(more_data, log=lambda *_: None)
    for refused in "bcd":  # each was refused before it wrote anything
        assert not (tmp_path / refused).exists()


def test_model_fingerprint_sees_a_changed_weight():
    from transformers import LlamaConfig, LlamaForCausalLM
    config = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2)
    torch.manual_seed(0)
    a = LlamaForCausalLM(config)
    torch.manual_seed(0)
    b = LlamaForCausalLM(config)
    assert model_fingerprint(a) == model_fingerprint(b)
    with torch.no_grad():
        b.model.layers[1].mlp.down_proj.weight[0, 0] += 1e-3
    assert model_fingerprint(a) != model_fingerprint(b)


@pytest.mark.e2e
def test_select_cli_errors(tmp_path, word_data, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tmp_path / "run", word_data, objectives="sft")))
    with pytest.raises(SystemExit) as exit_info:
        main(["select", str(path)])
    assert exit_info.value.code == 2
    assert "no feature objective with a selector" in capsys.readouterr().err
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="unreadable"):
        artifact.load(bad)


@pytest.mark.e2e
def test_a_selection_file_outside_the_run_never_replaces_a_users_file(tmp_path, word_data):
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "sel.png").write_bytes(b"my figure")
    select(build_config(feature_config(tmp_path / "run", word_data, selection_file=str(mine / "sel.safetensors"))),
           log=lambda *_: None)
    assert (mine / "sel.safetensors").is_file() and (mine / "sel.png").read_bytes() == b"my figure"
    (mine / "other.safetensors").write_bytes(b"not an artifact")
    with pytest.raises(UserError, match="exists and is not a readable selection artifact"):
        select(build_config(feature_config(tmp_path / "run2", word_data,
                                           selection_file=str(mine / "other.safetensors"))), log=lambda *_: None)
    assert (mine / "other.safetensors").read_bytes() == b"not an artifact"
