"""Attention capture (teachers/capture.py) on a tiny Llama: the captured attention logits and values are the model's
own (against its eager attention), carry the student's gradient, leave the forward bit-identical and nothing behind."""
import pytest
import torch

from lmdistill.errors import UserError
from lmdistill.teachers import Request, ResponseLM, response_positions
from objectives.test_attention import batch_with_padding_and_prompts
from tolerance import llama_terms, typical

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_llama(attn_implementation="sdpa", seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    config._attn_implementation = attn_implementation
    return LlamaForCausalLM(config).eval()


@pytest.mark.numerical
@pytest.mark.parametrize("implementation,padded", [("sdpa", True), ("sdpa", False), ("eager", True)])
def test_captured_attention_and_values_are_the_models_own(implementation, padded):
    model = tiny_llama(implementation)
    reference = tiny_llama("eager")
    reference.load_state_dict(model.state_dict())
    ids = torch.randint(0, 64, (3, 7), generator=torch.Generator().manual_seed(3))
    attention_mask, labels = batch_with_padding_and_prompts()
    if not padded:  # no padding: sdpa gets no mask at all and runs is_causal
        attention_mask = torch.ones_like(attention_mask)
        labels[:, 1:] = ids[:, 1:]
    lm = ResponseLM(model)
    plain = lm(ids, attention_mask, labels)
    got = lm(ids, attention_mask, labels, Request(attention=(1, 2), values=(1, 2)))
    assert torch.equal(got.logits, plain.logits)  # the capture leaves the forward bit-identical
    with torch.no_grad():
        ref = reference(ids, attention_mask=attention_mask, output_attentions=True, output_hidden_states=True)
    where = response_positions(labels)
    for layer in (1, 2):
        # sdpa (or the capture's own float32 q.k) against eager: other summation orders through the layers up to
        # this one (tolerance.py), on probabilities (<= 1) and on the values' size
        terms = llama_terms(model.config, ids.shape[1], layers=layer)
        want = ref.attentions[layer - 1][:, :, :-1].transpose(1, 2)[where]  # [N, heads, L]
        torch.testing.assert_close(torch.softmax(got.attentions[layer], -1), want, rtol=0, atol=typical(terms))
        block = reference.model.layers[layer - 1]
        want_v = block.self_attn.v_proj(block.input_layernorm(ref.hidden_states[layer - 1]))
        torch.testing.assert_close(got.values[layer], want_v, rtol=0, atol=typical(terms, want_v.abs().max().item()))
    assert got.attentions[1].shape == (int(where.sum()), 4, 7) and got.values[1].shape == (3, 7, 16)
    # nothing stays behind: configs, hooks, capture state
    for block in model.model.layers:
        assert block.self_attn.config is model.config and not block.self_attn.v_proj._forward_hooks
        assert "_lmdistill_capture" not in block.self_attn.__dict__
    assert model.config._attn_implementation == implementation


def test_captured_attention_carries_the_students_gradient():
    model = tiny_llama().train()
    ids = torch.randint(0, 64, (3, 7), generator=torch.Generator().manual_seed(4))
    attention_mask, labels = batch_with_padding_and_prompts()
    out = ResponseLM(model)(ids, attention_mask, labels, Request(attention=(2,), values=(1,)))
    (torch.log_softmax(out.attentions[2], -1).nan_to_num(neginf=0.0).sum() + out.values[1].sum()).backward()
    attn = model.model.layers[1].self_attn
    assert attn.q_proj.weight.grad.abs().sum() > 0 and attn.k_proj.weight.grad.abs().sum() > 0
    assert model.model.layers[0].self_attn.v_proj.weight.grad.abs().sum() > 0


def test_a_layer_without_attention_is_refused():
    model = tiny_llama()
    ids = torch.zeros(1, 4, dtype=torch.long)
    for layer in (0, 3):
        with pytest.raises(UserError, match="hidden_states indices 1..2"):
            ResponseLM(model)(ids, torch.ones_like(ids), ids, Request(attention=(layer,)))
    assert model.model.layers[0].self_attn.config is model.config
