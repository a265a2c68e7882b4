"""What a model returns to the objectives, and what they may ask of it.

Every model call of a run (the student's, the teacher's, a cached teacher's) answers a `Request` with
`ModelOutputs` at the positions that predict response tokens, so every objective sees the same thing whatever
kind of teacher produced it. Also here: the response-position mask every caller uses, and the model's own LM
head / final norm (for the logit lens).
"""
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from lmdistill.data import IGNORE
from lmdistill.chunked import Head
from lmdistill.errors import UserError
from lmdistill.train.sharding import call_gathered, gathered, is_sharded


@dataclass(frozen=True)
class Request:
    """What one model must return besides the logits: hidden_states indices (0 = embeddings) and the layers (hidden_states
    index l >= 1: the self-attention inside decoder layer l-1) whose attention logits / value projections to capture."""
    hidden: tuple[int, ...] = ()
    attention: tuple[int, ...] = ()
    values: tuple[int, ...] = ()

    def __or__(self, other):
        merge = lambda a, b: tuple(sorted(set(a) | set(b)))  # noqa: E731
        return Request(merge(self.hidden, other.hidden), merge(self.attention, other.attention),
                       merge(self.values, other.values))


@dataclass
class ModelOutputs:
    logits: torch.Tensor | None          # [N, V] at the N positions that predict a response token; None when the
    #   vocabulary is too large to hold them all (a cross-tokenizer teacher): then `final` holds what the LM head reads
    targets: torch.Tensor                # [N] the response tokens they predict
    hidden: dict[int, torch.Tensor] = field(default_factory=dict)  # hidden_states index -> [N, d]
    lm: nn.Module | None = None          # the model, for objectives that apply its own head (logit lens)
    # Captured only when a Request asks for them, keyed by hidden_states index l >= 1
    # (decoder layer l-1's self-attention):
    attentions: dict[int, torch.Tensor] = field(default_factory=dict)  # [N, heads, L] attention logits (scaled q.k,
    #   float32 or wider) of the N response query rows over all L keys, -inf where the layer's mask hides the key
    values: dict[int, torch.Tensor] = field(default_factory=dict)  # [B, L, kv_heads * head_dim] v_proj output
    where: torch.Tensor | None = None           # [B, L-1] bool: the response positions (response_positions(labels))
    attention_mask: torch.Tensor | None = None  # [B, L] the batch's padding mask (1 = token)
    final: torch.Tensor | None = None    # [N, d] the last hidden state (after the final norm), when logits is None
    alignment: object = None             # a teacher with another tokenizer: crosstok.rows.BatchAlignment of its rows
    #   with the student's; None when both share one tokenizer (row i of each is the same position)


def response_positions(labels):
    """[B, L-1] bool: position t predicts labels[t + 1], a response token."""
    return labels[:, 1:] != IGNORE


def lm_head_logits(model, hidden):
    """The model's own LM head on hidden states, with its output soft-capping if it has one (Gemma 2)."""
    return softcapped(model, model.get_output_embeddings()(hidden))


def softcapped(model, logits):
    """The model's output soft-capping applied to its logits, when its config has one."""
    cap = getattr(model.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


# Where Hugging Face models keep the norm applied after the last decoder layer (Llama/Qwen/Mistral/Gemma: norm;
# GPT-2: ln_f; GPT-NeoX and OPT: final_layer_norm; Phi: final_layernorm).
FINAL_NORM_NAMES = ("norm", "ln_f", "final_layer_norm", "final_layernorm", "decoder.final_layer_norm")


def final_norm(model):
    """The model's final norm module; UserError when it has none we know of."""
    for name in FINAL_NORM_NAMES:
        try:
            return model.base_model.get_submodule(name)
        except AttributeError:
            continue
    raise UserError(f"cannot find the final norm of {type(model).__name__} (looked for base_model."
                    f"{', base_model.'.join(FINAL_NORM_NAMES)}); set final_norm: false for its logit lens")


def lens_input(model, hidden, layer, use_final_norm):
    """What the LM head reads for the logit lens at hidden_states[layer]: the final norm applied (when
    use_final_norm), except at the last layer, which Hugging Face models return already normalised."""
    if use_final_norm and layer < model.config.num_hidden_layers:
        return call_gathered(final_norm(model), hidden)
    return hidden


def output_head(model, vocab_size):
    """A `Head`: the model's own LM head (soft-capping included), keeping the first vocab_size columns. Its weights
    are read as tensors, gathered first when sharded, so the gradients reach the shards (train/sharding.py)."""
    head = model.get_output_embeddings()
    if not isinstance(head, nn.Linear):
        if is_sharded(head):
            raise UserError(f"train.sharding: fsdp needs a linear LM head, {type(model).__name__} has a "
                            f"{type(head).__name__}; set train.sharding: none")
        return Head(lambda hidden: lm_head_logits(model, hidden)[:, :vocab_size],
                    tuple(p for p in head.parameters() if p.requires_grad))
    weight, bias = gathered(head.weight), None if head.bias is None else gathered(head.bias)

    def logits(hidden):
        return softcapped(model, F.linear(hidden, weight[:vocab_size], None if bias is None else bias[:vocab_size]))
    return Head(logits, tuple(p for p in (weight, bias) if p is not None and p.requires_grad))
