"""student.from_teacher: a student cut from the SmolLM2 teacher (layers + residual dimensions)."""
import json

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, MistralConfig, Qwen2Config

from lmdistill import data
from lmdistill.build import build_parts, wrap
from lmdistill.config import FromTeacher, TeacherConfig, build_config
from lmdistill.errors import UserError
from lmdistill.eval.teacher_forced import teacher_forced
from lmdistill.models import load_model, load_teacher
from lmdistill.models.prune import cut, kept_layers, prune_teacher
from lmdistill.run import train
from conftest import tiny_config
from tolerance import llama_terms, typical

pytestmark = pytest.mark.numerical


@pytest.fixture(scope="module")
def teacher():
    return load_teacher(TeacherConfig())[0]


@pytest.fixture(scope="module")
def examples(word_data, tokenizer, tmp_path_factory):
    cfg = build_config(tiny_config(tmp_path_factory.mktemp("run"), word_data)).data
    return data.load_split(cfg, "train", tokenizer).examples


def logits(model, examples, pad_id):
    batch = data.collate(examples, pad_id)
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def rotation_terms(config, layers):
    """Roundings folding and rotating add to a value's path: every weight that reads or writes the residual
    stream (q/k/v and gate/up read it, o_proj and down_proj write it: 4 per layer on a path; embeddings and
    lm_head) is a dot product over the hidden size (a folded norm weight is one more rounding of it)."""
    return (4 * layers + 2) * (config.hidden_size + 1)


def cut_tolerance(config, want, layers=None):
    """Logits of a model cut, folded or rotated from `config`'s against the original's: the same function computed
    two ways through every layer, so the probabilistic bound over the forward's roundings (llama_terms up to the
    logits) plus the rotation's, on the logits' magnitude."""
    layers = config.num_hidden_layers if layers is None else layers
    terms = llama_terms(config, want.shape[-2], layers=layers, vocab=config.vocab_size) + rotation_terms(config, layers)
    return typical(terms, want.abs().max().item())


def test_kept_layers_are_evenly_spaced_with_first_and_last():
    assert kept_layers(8, 30) == [0, 4, 8, 12, 17, 21, 25, 29]
    assert kept_layers(2, 30) == [0, 29]
    assert kept_layers(30, 30) == list(range(30))
    assert kept_layers([3, 7], 30) == [3, 7]


@pytest.mark.parametrize("importance", ["functional", "activation"])
@pytest.mark.e2e
def test_full_width_cut_of_all_layers_is_the_teacher(teacher, examples, tokenizer, importance):
    spec = FromTeacher(layers=30, hidden_size=576, importance=importance, calibration_examples=8)
    student = prune_teacher(spec, teacher, examples, tokenizer.pad_token_id, log=lambda *_: None)
    some = examples[:4]
    want = logits(teacher, some, tokenizer.pad_token_id)
    torch.testing.assert_close(logits(student, some, tokenizer.pad_token_id), want, rtol=0,
                               atol=cut_tolerance(teacher.config, want))
    rotated = not torch.allclose(student.model.embed_tokens.weight, teacher.model.embed_tokens.weight)
    assert rotated == (importance == "functional")
    # folding the final norm into the lm_head unties it; plain slicing keeps the teacher's tying
    tied = student.lm_head.weight is student.model.embed_tokens.weight
    assert tied == (importance == "activation")


@pytest.mark.e2e
def test_folding_norms_alone_keeps_the_logits(teacher, examples, tokenizer):
    student = cut(teacher, list(range(30)), torch.arange(576), rotation=torch.eye(576))
    assert all(torch.equal(layer.input_layernorm.weight, torch.ones(576)) for layer in student.model.layers)
    assert torch.equal(student.model.norm.weight, torch.ones(576))
    some = examples[:4]
    want = logits(teacher, some, tokenizer.pad_token_id)
    torch.testing.assert_close(logits(student, some, tokenizer.pad_token_id), want, rtol=0,
                               atol=cut_tolerance(teacher.config, want))


def _tiny(config_cls, **extra):
    config = config_cls(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False, **extra)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config).eval()
        with torch.no_grad():  # norms and biases that are not 1 and 0, so folding and rotating them is tested
            for name, p in model.named_parameters():
                if "norm" in name:
                    p.uniform_(0.5, 1.5)
                elif name.endswith("bias"):
                    p.normal_(0, 0.5)
    return model


@pytest.mark.parametrize("config_cls, extra", [
    (LlamaConfig, {"attention_bias": True, "mlp_bias": True}),
    (Qwen2Config, {}),                      # q/k/v biases, per-layer layer_types
    (MistralConfig, {"head_dim": 16}),      # head_dim != hidden_size / heads
], ids=["llama-biases", "qwen2", "mistral-head-dim"])
def test_rotation_is_exact_for_llama_family_models(config_cls, extra):
    model = _tiny(config_cls, **extra)
    q, _ = torch.linalg.qr(torch.randn(32, 32, generator=torch.Generator().manual_seed(1)))
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(2))
    run = lambda m: m(input_ids=ids).logits.detach()  # noqa: E731
    want = run(model)
    torch.testing.assert_close(run(cut(model, [0, 1, 2], torch.arange(32), rotation=q)), want, rtol=0,
                               atol=cut_tolerance(model.config, want))
    # dropping a layer and rotating commute: the rotation adds nothing to the layer cut
    want = run(cut(model, [0, 2], torch.arange(32)))
    torch.testing.assert_close(run(cut(model, [0, 2], torch.arange(32), rotation=q)), want, rtol=0,
                               atol=cut_tolerance(model.config, want, layers=2))
    # a narrower residual keeps every head at its size (Qwen2's config has no head_dim of its own)
    narrow = cut(model, [0, 2], torch.arange(0, 32, 2), rotation=q)
    head_dim = getattr(model.config, "head_dim", None) or 8
    assert narrow.model.layers[0].self_attn.q_proj.weight.shape == (4 * head_dim, 16)
    assert torch.isfinite(run(narrow)).all()


def test_other_architectures_are_refused(examples, tokenizer):
    gpt2 = AutoModelForCausalLM.from_config(GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=2))
    with pytest.raises(UserError, match="supports Llama-style models.*GPT2LMHeadModel"):
        prune_teacher(FromTeacher(layers=2, hidden_size=16), gpt2, examples, tokenizer.pad_token_id)


@pytest.mark.e2e
def test_config_mistakes(tmp_path, word_data, teacher, examples, tokenizer):
    with pytest.raises(UserError, match="exactly one of student.model.*student.from_teacher"):
        build_config(tiny_config(tmp_path, word_data, student={"from_teacher": {}}))  # tiny_config has a spec
    pad = tokenizer.pad_token_id
    with pytest.raises(UserError, match="hidden_size 640 is larger than the teacher's hidden size 576"):
        prune_teacher(FromTeacher(hidden_size=640), teacher, examples, pad)
    with pytest.raises(UserError, match="layer 30 does not exist; the teacher's decoder layers are 0 to 29"):
        prune_teacher(FromTeacher(layers=[0, 30]), teacher, examples, pad)
    with pytest.raises(UserError, match="40 layers asked for but the teacher has 30"):
        prune_teacher(FromTeacher(layers=40), teacher, examples, pad)
    with pytest.raises(UserError, match="distinct 0-based layer indices in increasing order"):
        build_config(tiny_config(tmp_path, word_data, student={"from_teacher": {"layers": [5, 2]}, "spec": None}))


@pytest.mark.parametrize("importance", ["activation", "flexkd", "functional"])
@pytest.mark.e2e
def test_each_importance_cuts_a_working_student(tmp_path, word_data, importance):
    # the default width is 252, not 256: transformers 5's LlamaConfig only saves a hidden size the 9 heads divide
    student = {"from_teacher": {"layers": 8, "importance": importance,
                                "calibration_examples": 16}, "spec": None}
    config = build_config(tiny_config(tmp_path / "run", word_data, student=student))
    parts = build_parts(config, splits=("train", "dev"), log=lambda *_: None)
    layer = parts.student.model.layers[0]
    assert parts.student.config.num_hidden_layers == 8
    assert parts.student.model.embed_tokens.weight.shape == (49152, 252)
    assert layer.self_attn.q_proj.weight.shape == (576, 252) and layer.self_attn.k_proj.weight.shape == (192, 252)
    assert layer.mlp.down_proj.weight.shape == (252, 1536)
    assert (parts.student.lm_head.weight is parts.student.model.embed_tokens.weight) == (importance != "functional")
    student_lm, _ = wrap(parts)
    ce = teacher_forced(student_lm, None, parts.splits["dev"].examples, 8, parts.tokenizer.pad_token_id)["ce"]
    assert 0 < ce < 20, ce


@pytest.mark.e2e
def test_a_cut_student_trains_and_saves(tmp_path, word_data):
    student = {"from_teacher": {"hidden_size": 252, "layers": 8, "importance": "functional",
                                "calibration_examples": 16}, "spec": None}
    config = build_config(tiny_config(tmp_path / "run", word_data, student=student))
    result = train(config, log=lambda *_: None)
    lines = [json.loads(line) for line in open(tmp_path / "run/metrics.jsonl") if '"train"' in line]
    assert lines[-1]["loss"] < lines[0]["loss"] and result["metrics"]["student"]["ce"] > 0
    # a pretrained student's own level is measured before training, on the same held-out examples; in CE alone,
    # which compares it with the trained student when the two share a tokenizer
    before = result["metrics"]["student before training"]
    assert set(before) == {"ce"} and before["ce"] > 0 and before["ce"] != result["metrics"]["student"]["ce"]
    assert "| student before training |" in (tmp_path / "run/report.md").read_text()
    saved = load_model(str(tmp_path / "run/student"))
    assert (saved.config.hidden_size, saved.config.num_hidden_layers, saved.config.tie_word_embeddings) == (252, 8, False)


@pytest.mark.e2e
def test_a_width_transformers_cannot_save_is_refused_before_any_output(tmp_path, word_data):
    student = {"from_teacher": {"hidden_size": 256, "calibration_examples": 16}, "spec": None}
    config = build_config(tiny_config(tmp_path / "run", word_data, student=student))
    with pytest.raises(UserError, match="hidden_size 256: transformers cannot save.*give a multiple of 9, e.g. 252 or 261"):
        train(config, log=lambda *_: None)
    assert not (tmp_path / "run").exists()


@pytest.mark.e2e
def test_objectives_are_checked_against_the_cut_student_before_the_calibration_pass(tmp_path, word_data, monkeypatch):
    from lmdistill.models import prune

    def no_pass(*_args):
        raise AssertionError("the calibration pass ran before the objectives were checked")
    monkeypatch.setattr(prune, "importance", no_pass)
    student = {"from_teacher": {"layers": 4, "hidden_size": 252}, "spec": None}
    objectives = [{"name": "ce"}, {"name": "feature", "selector": "none", "metric": "cka", "layers": [[30, 5]]}]
    config = build_config(tiny_config(tmp_path / "run", word_data, student=student, objectives=objectives))
    with pytest.raises(UserError, match="student layer 5 does not exist; hidden_states indices run from 0 "
                                        r"\(embeddings\) to 4"):
        train(config, log=lambda *_: None)
    assert not (tmp_path / "run").exists()
