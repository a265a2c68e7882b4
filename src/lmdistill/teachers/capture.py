"""Attention capture: the attention logits and value projections attention-transfer objectives need.

Hugging Face Llama-family attention (transformers 5.x) picks its kernel per call from
`self.config._attn_implementation` (sdpa by default, eager, flash, flex), but the mask it receives is built ONCE
per forward, for the model-level implementation: with sdpa it is a bool mask, or None when the batch has no
padding (the kernel is then told is_causal). Pointing one module's config at "eager" is therefore wrong: eager
adds the mask as a float bias, so a bool mask adds 0/1 and a None mask drops causality altogether.

So only the captured layers are switched, to CAPTURE (registered below): it runs the model's own implementation
unchanged (the forward, logits included, is bit-identical) and beside it computes the layer's attention logits
q.k * scaling in float32 from the same (rotated) queries and keys and the layer's own mask, keeping only the
response query rows. Extra cost per captured layer: one [B, heads, L, L] matmul and its float32 buffer
(transient; [N, heads, L] is kept). The switch is a per-module shallow copy of the config, undone on exit.
"""
import copy
import sys
from contextlib import contextmanager

import torch

from lmdistill.errors import UserError

CAPTURE = "lmdistill_capture"
_STATE = "_lmdistill_capture"  # attribute on a captured attention module, present only inside `capture`


def _capturing_attention(module, query, key, value, attention_mask, **kwargs):
    state = module.__dict__[_STATE]
    output = state["original"](module, query, key, value, attention_mask, **kwargs)
    state["store"][state["layer"]] = attention_logits(query, key, attention_mask, kwargs["scaling"], state["where"])
    return output


def _attention_functions():
    """transformers' attention registry, with CAPTURE registered (imported late: transformers is slow to import)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface
    if CAPTURE not in ALL_ATTENTION_FUNCTIONS:
        AttentionInterface.register(CAPTURE, _capturing_attention)
    return ALL_ATTENTION_FUNCTIONS


def attention_logits(query, key, mask, scaling, where):
    """[N, heads, L] attention logits at the response query rows `where` [B, L-1], from query [B, heads, L, d] and
    key [B, kv_heads, L, d] (kv heads repeated for grouped-query attention) and the mask the layer's attention
    function receives: None (causal), bool [B|1, 1, L, L] (True = attend) or an additive float mask. Computed in
    float32 (or the inputs' wider dtype) with autocast off; hidden keys get -inf."""
    dtype = torch.promote_types(query.dtype, torch.float32)
    with torch.autocast(query.device.type, enabled=False):
        q, k = query.to(dtype), key.to(dtype)
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        scores = torch.matmul(q, k.transpose(2, 3)) * scaling
        n_q, n_k = scores.shape[-2:]
        if mask is None:
            allowed = torch.ones(n_q, n_k, dtype=torch.bool, device=scores.device).tril(n_k - n_q)
        elif mask.dtype == torch.bool:
            allowed = mask[..., :n_k]
        else:
            mask = mask[..., :n_k]
            allowed = mask > torch.finfo(mask.dtype).min
            scores = scores + mask.to(dtype)
        scores = scores.masked_fill(~allowed, -torch.inf)
        return scores[:, :, :-1].transpose(1, 2)[where]


def attention_module(lm, layer):
    """The self-attention of hidden_states index `layer` (decoder layer layer-1); UserError for other layouts."""
    n = lm.config.num_hidden_layers
    if not 1 <= layer <= n:
        raise UserError(f"attention layer {layer} does not exist: attention layers are hidden_states indices 1..{n} "
                        f"(layer l is the self-attention inside decoder layer l-1; 0, the embeddings, has none)")
    try:
        module = lm.base_model.layers[layer - 1].self_attn
    except (AttributeError, IndexError, TypeError):
        raise UserError(f"cannot capture attention from {type(lm).__name__}: it has no base_model.layers[i].self_attn "
                        f"(supported: Llama-family models such as Llama, SmolLM, Qwen2, Mistral)") from None
    return module


def _check_capturable(module, lm):
    config, name = module.config, type(lm).__name__
    if config._attn_implementation not in ("eager", "sdpa"):
        raise UserError(f"attention capture needs eager or sdpa attention, {name} runs "
                        f"{config._attn_implementation}; load it with attn_implementation='sdpa'")
    if getattr(config, "attn_logit_softcapping", None) or getattr(module, "sinks", None) is not None:
        raise UserError(f"attention capture does not reproduce {name}'s attention (logit soft-capping or sinks)")


@contextmanager
def capture(lm, attention_layers=(), value_layers=(), where=None):
    """While inside, forwards of `lm` record ({layer: attention logits [N, heads, L] at `where`'s rows},
    {layer: v_proj output [B, L, width]}) into the yielded dicts. Everything is undone on exit."""
    attentions, values, undo = {}, {}, []

    def restore(module, config):
        module.config = config
        module.__dict__.pop(_STATE, None)

    try:
        for layer in sorted(set(attention_layers)):
            module = attention_module(lm, layer)
            _check_capturable(module, lm)
            own_config, functions = module.config, _attention_functions()
            family_eager = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
            if own_config._attn_implementation == "eager" and family_eager is None:
                raise UserError(f"cannot find the eager attention of {type(lm).__name__}; load it with sdpa")
            original = functions.get_interface(own_config._attn_implementation, family_eager)
            config = copy.copy(own_config)
            config._attn_implementation = CAPTURE
            module.config = config
            module.__dict__[_STATE] = {"original": original, "store": attentions, "layer": layer, "where": where}
            undo.append(lambda module=module, config=own_config: restore(module, config))
        for layer in sorted(set(value_layers)):
            v_proj = getattr(attention_module(lm, layer), "v_proj", None)
            if v_proj is None:
                raise UserError(f"cannot capture values from {type(lm).__name__}: its attention has no v_proj")
            handle = v_proj.register_forward_hook(lambda _m, _i, out, layer=layer: values.__setitem__(layer, out))
            undo.append(handle.remove)
        yield attentions, values
    finally:
        for step in reversed(undo):
            step()


