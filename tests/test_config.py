import re

import pytest

from lmdistill.config import apply_overrides, build_config, load_config, save_config
from lmdistill.errors import UserError


def test_defaults_are_valid():
    config = build_config({})
    assert [o.name for o in config.objectives] == ["ce", "logit_kd"]
    assert config.teacher.trust_remote_code is False


def test_unknown_top_level_key_suggests_nearest():
    with pytest.raises(UserError, match=r"unknown key 'trian'.*did you mean 'train'"):
        build_config({"trian": {}})


def test_unknown_nested_key_suggests_nearest():
    with pytest.raises(UserError, match=r"unknown key 'train.learning_rat'") as e:
        build_config({"train": {"learning_rat": 0.1}})
    with pytest.raises(UserError, match=r"did you mean 'batch_size'"):
        build_config({"train": {"batch_sise": 4}})
    assert "\n" not in str(e.value)


def test_unknown_key_inside_student_spec():
    with pytest.raises(UserError, match=r"student.spec.hiden_size.*did you mean 'hidden_size'"):
        build_config({"student": {"spec": {"hiden_size": 64}}})


def test_unknown_objective_and_objective_param():
    with pytest.raises(UserError, match=r"unknown objective 'logit_dk'.*did you mean 'logit_kd'"):
        build_config({"objectives": [{"name": "logit_dk"}]})
    with pytest.raises(UserError, match=r"objectives\[0\].temprature.*did you mean 'temperature'"):
        build_config({"objectives": [{"name": "logit_kd", "temprature": 2.0}]})


def test_unknown_divergence_is_one_line():
    with pytest.raises(UserError, match=r"objectives\[0\].divergence") as e:
        build_config({"objectives": [{"name": "logit_kd", "divergence": "forward_kll"}]})
    assert "\n" not in str(e.value)


def test_wrong_type_and_range():
    with pytest.raises(UserError, match=r"train.steps"):
        build_config({"train": {"steps": "many"}})
    with pytest.raises(UserError, match=r"train.lr"):
        build_config({"train": {"lr": -1}})


def test_student_heads_must_divide_hidden():
    with pytest.raises(UserError, match=r"not divisible by num_heads 9"):
        build_config({"student": {"spec": {"hidden_size": 256, "num_heads": 9}}})


def test_student_needs_exactly_one_source():
    with pytest.raises(UserError, match=r"exactly one of student.model"):
        build_config({"student": {"model": "x", "spec": {}}})


def test_overrides_parse_yaml_values_and_reach_lists():
    data = apply_overrides({}, ["train.steps=7", "train.lr=1e-4", "objectives.1.divergence=reverse_kl",
                                "eval.generate=false"])
    config = build_config(data)
    assert config.train.steps == 7 and config.train.lr == 1e-4 and config.eval.generate is False
    assert config.objectives[1].divergence == "reverse_kl"


def test_override_errors():
    with pytest.raises(UserError, match="section.key=value"):
        apply_overrides({}, ["train.steps"])
    with pytest.raises(UserError, match="unknown key 'train.stepz'"):
        build_config(apply_overrides({}, ["train.stepz=3"]))


def test_resolved_config_round_trips(tmp_path):
    config = build_config({"train": {"steps": 11}, "objectives": [{"name": "logit_kd", "divergence": "tvd"}]})
    save_config(config, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == config
    assert not list(tmp_path.glob(".*tmp"))


def test_config_file_errors(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  steps: [1,\n")
    with pytest.raises(UserError, match=r"bad.yaml line \d+: invalid YAML"):
        load_config(bad)


def test_divergence_params_are_checked():
    config = build_config({"objectives": [{"name": "logit_kd", "divergence": "generalized_jsd", "params": {"beta": 0.3}}]})
    assert config.objectives[0].params == {"beta": 0.3}
    with pytest.raises(UserError, match=r"generalized_jsd has no parameter 'alpha'; its parameters: \['beta'\]"):
        build_config({"objectives": [{"name": "logit_kd", "divergence": "generalized_jsd", "params": {"alpha": 0.3}}]})


def test_objective_presets_expand():
    config = build_config({"objectives": "flexkd+kd"})
    assert [o.name for o in config.objectives] == ["ce", "logit_kd", "feature"]
    assert config.objectives[2].selector == "flexkd" and config.objectives[2].metric == "pearson"
    assert build_config({"objectives": "projection"}).objectives[1].selector == "projection"
    assert build_config({"objectives": "cka"}).objectives[1].metric == "cka"
    with pytest.raises(UserError, match="unknown objectives preset 'flexdk'.*did you mean 'flexkd'"):
        build_config({"objectives": "flexdk"})


@pytest.mark.parametrize("entry, message", [({"weight": 1.0}, "objectives\\[0\\] needs a 'name'"),
                                            ({"name": []}, "objectives\\[0\\].name must be an objective's name, got \\[\\]")])
def test_objective_entries_without_a_usable_name(entry, message):
    with pytest.raises(UserError, match=message):
        build_config({"objectives": [entry]})


@pytest.mark.parametrize("section, message", [
    ({"eval": {"temperature": 0.7}}, "eval: temperature=0.7 is only used with do_sample: true"),
    ({"eval": {"seeds": [0, 1]}}, "eval: seeds=[0, 1] is only used with do_sample: true"),
    ({"train": {"weighting": {"alpha": 1.0}}}, "train.weighting: alpha=1.0 is only used with method: gradnorm"),
    ({"train": {"weighting": {"method": "gradnorm", "ema": 0.5}}}, "ema=0.5 is only used with method: loss_ratio"),
    ({"student": {"spec": {}, "trust_remote_code": True}}, "trust_remote_code=True is only used to load student.model"),
    ({"data": {"use_chat_template": False, "system_prompt": "Be brief."}}, "system_prompt='Be brief.' is only used"),
    ({"teacher_cache": {"dir": "c", "top_k": 64}}, "top_k=64 is only used with logits: topk"),
    ({"objectives": [{"name": "feature", "selector": "pca", "score": "sq_grad"}]}, "score='sq_grad' is only used"),
    ({"objectives": [{"name": "feature", "selector": "none", "metric": "cka", "calibration_examples": 8}]},
     "calibration_examples=8 is only used with selector flexkd, functional or pca"),
    ({"objectives": [{"name": "feature", "selector": "projection", "metric": "mse", "selection_file": "s.safetensors"}]},
     "selection_file='s.safetensors' is only used with selector flexkd, functional, pca or random"),
    ({"objectives": [{"name": "attention", "relations": ["attention"], "relation_heads": 2}]},
     "relation_heads=2 is only used with 'value' in relations"),
])
def test_a_key_the_config_would_not_read_is_refused(section, message):
    with pytest.raises(UserError, match=re.escape(message)):
        build_config(section)


def test_keys_left_at_their_defaults_are_accepted_and_a_resolved_config_loads_again(tmp_path):
    config = build_config({"eval": {"generate": False, "max_new_tokens": 8, "temperature": 0.5},  # switched off
                           "objectives": "projection",
                           "train": {"weighting": {"method": "loss_ratio"}}})
    save_config(config, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == config


def test_student_spec_arch_builds_that_architecture():
    from transformers import LlamaConfig
    from lmdistill.models.loading import student_from_spec
    from types import SimpleNamespace
    spec = build_config({"student": {"spec": {"arch": "llama", "hidden_size": 32, "num_layers": 1, "num_heads": 2}}})
    tokenizer = SimpleNamespace(bos_token_id=1, eos_token_id=2, pad_token_id=2)
    model = student_from_spec(spec.student.spec, SimpleNamespace(vocab_size=40), tokenizer)
    assert type(model.config) is LlamaConfig and model.config.hidden_size == 32


def test_the_example_configs_are_valid():
    """examples/: lmdistill configs pass the schema; accelerate-*.yaml are accelerate launch configs."""
    from pathlib import Path

    from accelerate.commands.config.config_args import load_config_from_file

    from lmdistill.config import load_config
    files = sorted((Path(__file__).parents[1] / "examples").glob("*.yaml"))
    assert len(files) >= 3
    for path in files:
        if path.name.startswith("accelerate-"):
            launch = load_config_from_file(str(path))
            assert launch.distributed_type == "MULTI_GPU" and launch.mixed_precision == "bf16"
        else:
            assert load_config(path).train.sharding == "fsdp"
