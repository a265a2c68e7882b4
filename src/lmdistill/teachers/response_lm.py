"""A causal LM run only where it matters: logits at the positions that predict response tokens.

Skipping the LM head on prompt and padding positions saves most of its cost and memory (the vocabulary projection
is the largest matmul of a small model). The student and the online teacher both go through `ResponseLM`, so every
objective sees outputs of the same shape; on request it also returns hidden states and captures attention logits
and value projections (capture.py).
"""
from torch import nn

from lmdistill.teachers.capture import capture
from lmdistill.teachers.outputs import ModelOutputs, Request, lm_head_logits, response_positions
from lmdistill.train.sharding import gathered_root, root_of


class ResponseLM(nn.Module):
    def __init__(self, lm, vocab_size=None, logits=True):
        super().__init__()
        self.lm = lm
        self.vocab_size = vocab_size  # keep only the columns shared with the other model
        self.logits = logits          # False: return the final hidden state instead (a vocabulary too large to hold)

    def forward(self, input_ids, attention_mask, labels, request=Request()):
        """Outputs at the response positions of `labels`, with what `request` asks for."""
        where = response_positions(labels)
        root = root_of(self.lm)  # another wrapper of a sharded model gathers the root's parameters (the final norm)
        with gathered_root(None if root is self else root), \
                capture(self.lm, request.attention, request.values, where) as (attentions, values):
            out = self.lm.base_model(input_ids=input_ids, attention_mask=attention_mask,
                                     output_hidden_states=bool(request.hidden), use_cache=False)
        final = out.last_hidden_state[:, :-1][where]
        logits = lm_head_logits(self.lm, final) if self.logits else None
        if logits is not None and self.vocab_size is not None:
            logits = logits[:, :self.vocab_size]
        hidden = {layer: out.hidden_states[layer][:, :-1][where] for layer in request.hidden}
        return ModelOutputs(logits, labels[:, 1:][where], hidden, self.lm, attentions=attentions, values=values,
                            where=where, attention_mask=attention_mask, final=None if self.logits else final)
