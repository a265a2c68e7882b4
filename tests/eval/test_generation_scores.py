"""What the report says of generated text: repetition, whether a generation ended, and the teacher's likelihood of
it (against a float64 forward pass of the whole sequence)."""
import math

import pytest
import torch

from lmdistill.config import DataConfig
from lmdistill.data.encode import encode
from lmdistill.eval.generation import generate
from lmdistill.eval.repetition import distinct, loops, repetition
from lmdistill.eval.teacher_scored import bits_per_byte, scored_examples, summary, teacher_scored


def test_distinct_counts_word_ngrams_over_all_texts():
    assert distinct(["a b a", "b c"], 1) == pytest.approx(3 / 5)
    assert distinct(["a b a b", "a b"], 2) == pytest.approx(2 / 4)  # (a b) x3, (b a) x1
    assert distinct(["word", ""], 2) == 0.0  # no 2-grams at all


def test_loops_needs_the_length_limit_and_a_repeating_second_half():
    collapse = "a person who is a person that is a person who is a person that is a person who is"
    assert loops(collapse, ended=False)
    assert not loops(collapse, ended=True)  # it stopped by itself: repetitive, but not a loop to the limit
    assert not loops("a small domesticated carnivorous mammal with soft fur and retractile claws", ended=False)
    assert not loops("the the the the the", ended=False)  # too short to have two halves of 3-grams
    assert loops("the the the the the the", ended=False)
    assert not loops("x y z x y z x y q", ended=False)  # the second half brings a new 3-gram
    scores = repetition([collapse, "a plant"], [False, True])
    assert scores["loops"] == 50.0 and scores["distinct1"] == pytest.approx(distinct([collapse, "a plant"], 1))


class FixedGenerator:
    """A model whose generate returns fixed continuations after the prompt."""
    def __init__(self, continuations):
        self.continuations = torch.tensor(continuations)

    def eval(self):
        return self

    def generate(self, input_ids, **kwargs):
        return torch.cat([input_ids, self.continuations[:len(input_ids)]], 1)


def test_generate_reports_which_continuations_ended(tokenizer):
    eos, pad, word = tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.encode("cat")[0]
    model = FixedGenerator([[word, eos, pad], [word, word, word]])
    texts, ended = generate(model, tokenizer, [[1, 2], [3]], 3, 2)
    assert ended == [True, False]
    assert texts == ["cat", "catcatcat"]


@pytest.fixture(scope="module")
def tiny_lm(tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    return LlamaForCausalLM(config).eval()


@pytest.mark.parametrize("chat", [True, False])
def test_scored_text_is_the_response_as_training_encodes_it_without_its_end(tokenizer, chat):
    cfg = DataConfig(use_chat_template=chat, **({} if chat else {"system_prompt": None}))
    records = [{"prompt": "Define the word: cat", "response": "a small feline, often kept  as a pet 🐈"},
               {"prompt": "Define the word: dog", "response": ""}]
    encoded, _ = encode(records, tokenizer, cfg)
    prompt_ids = [e.input_ids[:e.n_prompt] for e in encoded]
    scored = scored_examples(tokenizer, prompt_ids, [r["prompt"] for r in records],
                             [r["response"] for r in records], cfg)
    for mine, full in zip(scored, encoded):
        assert mine.n_prompt == full.n_prompt and full.input_ids[:len(mine.input_ids)] == mine.input_ids
        suffix = tokenizer.decode(full.input_ids[len(mine.input_ids):])
        assert suffix.strip() == ("<|im_end|>" if chat else tokenizer.eos_token)  # only the end is not scored


@pytest.mark.numerical
def test_teacher_scored_matches_a_float64_forward_pass(tokenizer, tiny_lm):
    cfg = DataConfig(use_chat_template=True)
    prompts = ["Define the word: cat", "Define the word: a much longer word to pad the batch"]
    texts = ["a small feline kept as a pet", "an ĳ ligature, then emoji 🐈 and e\u0301"]
    encoded, _ = encode([{"prompt": p, "response": ""} for p in prompts], tokenizer, cfg)
    examples = scored_examples(tokenizer, [e.input_ids[:e.n_prompt] for e in encoded], prompts, texts, cfg)
    scores = teacher_scored(tiny_lm, tokenizer, examples, batch_size=2)
    wide = tiny_lm.double()
    try:
        for (nats, n_tokens, n_bytes), example, text in zip(scores, examples, texts):
            ids = torch.tensor([example.input_ids])
            with torch.no_grad():
                log_p = wide(ids).logits[0, :-1].log_softmax(-1)
            targets = ids[0, 1:]
            want = -log_p[torch.arange(len(targets)), targets][example.n_prompt - 1:].sum().item()
            assert n_tokens == len(example.input_ids) - example.n_prompt and n_bytes == len(text.encode("utf-8"))
            # float32: each log-probability (|log p| ~ log 49152 ~ 11, a logsumexp over 49152 terms) is good to
            # ~1e-5; 2e-4 per token leaves ten times that
            assert nats == pytest.approx(want, rel=0, abs=2e-4 * n_tokens)
    finally:
        tiny_lm.float()
    total = summary(scores)
    nats = sum(s[0] for s in scores)
    assert total["gen_bpb"] == pytest.approx(nats / math.log(2) / sum(s[2] for s in scores))
    assert total["gen_nll"] == pytest.approx(nats / sum(s[1] for s in scores))
    assert bits_per_byte(scores[0]) == pytest.approx(scores[0][0] / math.log(2) / scores[0][2])


def test_empty_generations_leave_the_teacher_scores_out(tokenizer, tiny_lm):
    cfg = DataConfig(use_chat_template=True)
    encoded, _ = encode([{"prompt": "Define the word: cat", "response": ""}], tokenizer, cfg)
    examples = scored_examples(tokenizer, [encoded[0].input_ids[:encoded[0].n_prompt]], ["Define the word: cat"],
                               [""], cfg)
    scores = teacher_scored(tiny_lm, tokenizer, examples, batch_size=1)
    assert scores == [(0.0, 0, 0)] and summary(scores) == {} and bits_per_byte(scores[0]) is None


def test_generation_shows_a_progress_bar(tokenizer, capsys):
    eos, pad, word = tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.encode("cat")[0]
    generate(FixedGenerator([[word, eos, pad]] * 2), tokenizer, [[1, 2], [3], [4]], 3, 2)
    err = capsys.readouterr().err
    assert "generating" in err and "2/2" in err  # 3 prompts in batches of 2
