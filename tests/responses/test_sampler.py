"""The inverse-CDF sampler that generate uses when sampling: the right distribution, Hugging Face's top-p set."""
import math

import torch
from transformers import TopPLogitsWarper

from lmdistill.responses.sampler import InverseCdfSampler, inverse_cdf_sample


def _frequencies(draws, vocab):
    return torch.bincount(draws.flatten(), minlength=vocab).double() / draws.numel()


def _within_binomial_noise(freq, p, n):
    """Each frequency within 5 standard deviations of its probability (n draws)."""
    sigma = (p * (1 - p) / n).sqrt()
    return bool(((freq - p).abs() <= 5 * sigma + 1e-12).all())


def test_inverse_cdf_sample_draws_from_the_rows_distribution_and_never_a_zero():
    torch.manual_seed(0)
    p = torch.tensor([0.0, 0.5, 0.0, 0.2, 0.3, 0.0])
    n = 200_000
    draws = inverse_cdf_sample(p.expand(n, -1) * 3.0)  # unnormalised rows
    freq = _frequencies(draws, len(p))
    assert freq[p == 0].sum() == 0
    assert _within_binomial_noise(freq, p.double(), n)


def test_sampler_applies_temperature_and_hugging_faces_top_p():
    torch.manual_seed(1)
    logits = torch.randn(1, 50) * 2
    n = 100_000
    sampler = InverseCdfSampler(temperature=0.7, top_p=0.8)
    scores = sampler(None, logits.expand(n, -1).clone())
    assert torch.isfinite(scores).sum(1).eq(1).all()  # one finite score per row: the drawn token
    draws = scores.argmax(1)
    kept = torch.isfinite(TopPLogitsWarper(0.8)(None, logits / 0.7))[0]
    p = torch.softmax((logits / 0.7).masked_fill(~kept, -math.inf), -1)[0].double()
    freq = _frequencies(draws, 50)
    assert freq[~kept].sum() == 0 and kept.sum() < 50
    assert _within_binomial_noise(freq, p, n)
