"""Sampling for `generate` by the inverse of each row's CDF. Hugging Face's sampling draws with torch.multinomial,
which on CPU fills an exponential variate per vocabulary entry (about 11 ms per step for 8 rows of SmolLM2's 49152
tokens: a tenth of an on-policy training step). A cumulative sum and one uniform draw per row give a sample from the
same distribution in about 0.25 ms. It runs as the last logits processor under greedy decoding: it applies the
temperature and top-p (Hugging Face's own warpers, so the filtering is theirs), draws, and leaves only the drawn
token's score finite, which greedy decoding then picks."""
import torch
from transformers import LogitsProcessor, LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper


def inverse_cdf_sample(probs):
    """One token per row of probs [rows, vocab] (rows need not sum to 1); never a token of probability 0."""
    cdf = probs.float().cumsum(-1)
    total = cdf[:, -1:]
    u = torch.rand(total.shape, device=probs.device) * total
    u = torch.minimum(u, torch.nextafter(total, torch.zeros_like(total)))  # u * total may round up to total
    return torch.searchsorted(cdf, u, right=True)  # the first token whose cumulative probability exceeds u


class InverseCdfSampler(LogitsProcessor):
    def __init__(self, temperature=1.0, top_p=1.0):
        self.warpers = [TemperatureLogitsWarper(temperature)] if temperature != 1.0 else []
        if top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(top_p))

    def __call__(self, input_ids, scores):
        for warp in self.warpers:
            scores = warp(input_ids, scores)
        token = inverse_cdf_sample(torch.softmax(scores.float(), -1))
        return torch.full_like(scores, -torch.inf).scatter_(1, token, 0.0)


def sampling_processors(temperature, top_p):
    return LogitsProcessorList([InverseCdfSampler(temperature, top_p)])
