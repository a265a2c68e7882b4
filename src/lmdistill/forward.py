"""A causal LM run only where it matters: logits at the positions that predict response tokens.

Skipping the LM head on prompt and padding positions saves most of its cost and memory (the
vocabulary projection is the largest matmul of a small model). Teacher and student both go through
`ResponseLM`, so every objective sees outputs of the same shape.
"""
from dataclasses import dataclass, field

import torch
from torch import nn

from lmdistill.data import IGNORE
from lmdistill.divergences import Head
from lmdistill.errors import UserError


@dataclass
class ModelOutputs:
    logits: torch.Tensor                 # [N, V] at the N positions that predict a response token
    targets: torch.Tensor                # [N] the response tokens they predict
    hidden: dict[int, torch.Tensor] = field(default_factory=dict)  # hidden_states index -> [N, d]
    lm: nn.Module | None = None          # the model, for objectives that apply its own head (logit lens)


def response_positions(labels):
    """[B, L-1] bool: position t predicts labels[t + 1], a response token."""
    return labels[:, 1:] != IGNORE


def lm_head_logits(model, hidden):
    """The model's own LM head on hidden states, with its output soft-capping if it has one (Gemma 2)."""
    logits = model.get_output_embeddings()(hidden)
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


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
        return final_norm(model)(hidden)
    return hidden


def output_head(model, vocab_size):
    """A `Head`: the model's own LM head (soft-capping included), keeping the first vocab_size columns."""
    head = model.get_output_embeddings()
    return Head(lambda hidden: lm_head_logits(model, hidden)[:, :vocab_size],
                tuple(p for p in head.parameters() if p.requires_grad))


class ResponseLM(nn.Module):
    def __init__(self, lm, vocab_size=None):
        super().__init__()
        self.lm = lm
        self.vocab_size = vocab_size  # keep only the columns shared with the other model

    def forward(self, input_ids, attention_mask, labels, layers=()):
        out = self.lm.base_model(input_ids=input_ids, attention_mask=attention_mask,
                                 output_hidden_states=bool(layers), use_cache=False)
        where = response_positions(labels)
        logits = lm_head_logits(self.lm, out.last_hidden_state[:, :-1][where])
        if self.vocab_size is not None:
            logits = logits[:, :self.vocab_size]
        hidden = {layer: out.hidden_states[layer][:, :-1][where] for layer in layers}
        return ModelOutputs(logits, labels[:, 1:][where], hidden, self.lm)


class OnlineTeacher:
    """Teacher outputs computed on the fly, without gradients. (A cached teacher offers the same call.)"""

    def __init__(self, model, vocab_size):
        self.model = ResponseLM(model, vocab_size)
        self.lm = model

    @torch.no_grad()
    def __call__(self, batch, layers=()):
        return self.model(batch["input_ids"], batch["attention_mask"], batch["labels"], tuple(layers))
