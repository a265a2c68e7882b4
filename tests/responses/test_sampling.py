"""The student writing responses during training: seeded, isolated from training's random state, what a bare
`generate` gives, and cut where the prompt format ends a response."""
import copy

import pytest
import torch

from lmdistill.config import DataConfig, ResponsesConfig
from lmdistill.responses.sampling import left_padded, seed_of, stop_ids, write


@pytest.fixture(scope="module")
def tiny_lm(tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    return LlamaForCausalLM(config)


PROMPTS = [[1, 20, 30, 40], [1, 50], [1, 60, 70]]


def test_sampled_responses_follow_the_seed_and_leave_training_state_alone(tokenizer, tiny_lm):
    cfg = ResponsesConfig(source="student", max_new_tokens=6)
    tiny_lm.train()
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = write(tiny_lm, PROMPTS, tokenizer.pad_token_id, [2], cfg, seed=7)
    assert torch.equal(torch.rand(3), expected_next)  # the global generator did not move
    assert tiny_lm.training  # training mode restored
    assert write(tiny_lm, PROMPTS, tokenizer.pad_token_id, [2], cfg, seed=7) == first
    assert write(tiny_lm, PROMPTS, tokenizer.pad_token_id, [2], cfg, seed=8) != first  # 3 x 6 draws over 49152
    assert all(1 <= len(r) <= 6 for r in first)


def test_greedy_responses_are_what_generate_gives_cut_after_the_first_stop_token(tokenizer, tiny_lm):
    cfg = ResponsesConfig(source="student", max_new_tokens=8, do_sample=False)
    tiny_lm.eval()
    ids, mask = left_padded(PROMPTS, tokenizer.pad_token_id)
    bare = tiny_lm.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False,
                            pad_token_id=tokenizer.pad_token_id, eos_token_id=None)[:, ids.shape[1]:].tolist()
    assert write(tiny_lm, PROMPTS, tokenizer.pad_token_id, [], cfg, seed=0) == bare
    stop = bare[0][3]  # make the fourth token of the first response a stop token
    cut = write(tiny_lm, PROMPTS, tokenizer.pad_token_id, [stop], cfg, seed=0)
    first_stop = [next((i for i, t in enumerate(row) if t == stop), None) for row in bare]
    assert cut == [row if i is None else row[:i + 1] for row, i in zip(bare, first_stop)]
    assert cut[0][-1] == stop and len(cut[0]) <= 4


def test_stop_tokens_are_the_eos_and_the_formats_end_of_response(tokenizer):
    assert stop_ids(tokenizer, DataConfig()) == [tokenizer.eos_token_id]  # SmolLM2: <|im_end|> is both
    other = copy.deepcopy(tokenizer)
    other.eos_token = "<|endoftext|>"  # a chat model whose EOS is not its end-of-turn marker
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert stop_ids(other, DataConfig()) == sorted({other.eos_token_id, im_end}) and other.eos_token_id != im_end
    assert stop_ids(other, DataConfig(use_chat_template=False, system_prompt=None)) == [other.eos_token_id]


def test_seeds_differ_by_every_part():
    seeds = {seed_of(0, 1, 2), seed_of(0, 2, 1), seed_of(1, 1, 2), seed_of(0, 1, 2, 1)}
    assert len(seeds) == 4 and seed_of(0, 1, 2) == seed_of(0, 1, 2) and all(0 <= s < 2**63 for s in seeds)


def test_a_tokenizer_that_cannot_end_a_response_is_refused(tokenizer):
    from types import SimpleNamespace

    from lmdistill.config import build_config
    from lmdistill.errors import UserError
    from lmdistill.responses import check_responses
    config = build_config({"data": {"use_chat_template": False, "system_prompt": None},
                           "train": {"responses": {"source": "student"}}})
    no_eos = copy.deepcopy(tokenizer)
    no_eos.eos_token = None
    parts = SimpleNamespace(config=config, tokenizer=no_eos, teacher_tokenizer=None, cross_tokenizer=False,
                            splits={"dev": None})
    with pytest.raises(UserError, match="the student's tokenizer has no EOS token and its prompt format writes none"):
        check_responses(parts)
    seq_kd = build_config({"data": {"use_chat_template": False, "system_prompt": None},
                           "train": {"responses": {"source": "teacher"}}})
    with pytest.raises(UserError, match="the teacher's tokenizer has no EOS token"):
        check_responses(SimpleNamespace(**{**vars(parts), "config": seq_kd}))
    check_responses(SimpleNamespace(config=config, tokenizer=tokenizer, teacher_tokenizer=None, cross_tokenizer=False,
                                    splits={}))
