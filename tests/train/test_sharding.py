"""train.sharding's checks and helpers that run in one process (the 2-process runs are in test_distributed.py)."""
import pytest
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from lmdistill.config import build_config
from lmdistill.errors import UserError
from lmdistill.train.sharding import check_sharding, decoder_layers, grad_norm_and_clip


def _config(**train):
    return build_config({"train": {"sharding": "fsdp", **train}})


def test_decoder_layers_found_and_refused():
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                                      num_attention_heads=2, num_key_value_heads=1))
    assert decoder_layers(lm) == list(lm.model.layers)
    lm._no_split_modules = []
    with pytest.raises(UserError, match="cannot find the decoder layers of LlamaForCausalLM"):
        decoder_layers(lm)


@pytest.mark.parametrize("train, message", [
    ({}, "but this run has 1"),
])
def test_check_sharding_refuses(train, message):
    processes = 1 if not train else 2
    with pytest.raises(UserError, match=message):
        check_sharding(_config(**train), processes)


def test_check_sharding_allows():
    check_sharding(build_config({}), 1)  # none: nothing to check
    check_sharding(_config(), 2)
    check_sharding(_config(responses={"source": "student"}, save_every=10), 2)  # on-policy and checkpoints
    for objectives in ("distillens", [{"name": "ce"}, {"name": "uld"}], [{"name": "ce"}, {"name": "gold"}]):
        check_sharding(build_config({"train": {"sharding": "fsdp"}, "objectives": objectives}), 2)


def test_grad_norm_and_clip_matches_torch_without_shards():
    torch.manual_seed(0)
    a, b = nn.Linear(5, 7), nn.Linear(5, 7)
    b.load_state_dict(a.state_dict())
    x = torch.randn(3, 5)
    for m in (a, b):
        m(x).pow(2).sum().backward()
    norm = grad_norm_and_clip(list(a.parameters()), 0.5)
    expected = torch.nn.utils.clip_grad_norm_(list(b.parameters()), 0.5)
    assert norm == pytest.approx(expected.item(), rel=1e-6)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=0)
