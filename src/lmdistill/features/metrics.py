"""Distances between student and teacher features at the same N positions: s [N, k], t [N, k] (CKA: any widths).

Each returns a scalar: the loss per position (batch statistics are taken over the N positions), so an
objective multiplies by N to give the token sum the training loop expects. Computed in float32.
A metric's keyword-only parameters are its config `params` (`metric_params`); their annotations are checked.
"""
import inspect

import torch
import torch.nn.functional as F
from pydantic import NonNegativeFloat, PositiveFloat, PositiveInt, TypeAdapter, ValidationError
from torch.utils.checkpoint import checkpoint


def standardise(x, eps=1e-6):
    """Zero mean, unit variance per dimension over the positions."""
    x = x.float()
    return (x - x.mean(0)) / (x.std(0, unbiased=False) + eps)


def mse(s, t):
    """Mean squared error of standardised features (scale-free, so widths and norms need not match)."""
    return (standardise(s) - standardise(t)).pow(2).mean(-1).mean()


def cosine(s, t, eps=1e-8):
    """1 - cosine similarity per position."""
    return (1 - torch.nn.functional.cosine_similarity(s.float(), t.float(), dim=-1, eps=eps)).mean()


def pearson(s, t):
    """1 - Pearson correlation per dimension (over positions), averaged over dimensions."""
    return 1 - (standardise(s) * standardise(t)).mean(0).mean()


def cross_correlation(s, t, *, off_diagonal: NonNegativeFloat = 0.005):
    """Batch cross-correlation matrix pushed to the identity (Barlow-Twins form):
    sum_j (1 - C_jj)^2 + off_diagonal * sum_{i != j} C_ij^2, with C = zs^T zt / N."""
    c = standardise(s).T @ standardise(t) / s.shape[0]
    diagonal = torch.diagonal(c)
    return (1 - diagonal).pow(2).sum() + off_diagonal * (c.pow(2).sum() - diagonal.pow(2).sum())


def linear_cka(s, t):
    """1 - linear CKA (Kornblith et al. 2019) between centred s [N, ds] and t [N, dt]; widths may differ."""
    x, y = s.float() - s.float().mean(0), t.float() - t.float().mean(0)
    cross = (y.T @ x).pow(2).sum()
    return 1 - cross / ((x.T @ x).pow(2).sum().sqrt() * (y.T @ y).pow(2).sum().sqrt())


def _infonce_rows(zs, zt, start, stop, temperature, negatives):
    """-log softmax of the positive among the candidates, for anchors start..stop-1: [stop - start]."""
    rows = torch.arange(start, stop, device=zs.device)
    anchors = rows - start  # each anchor's row in sims
    sims = zs[start:stop] @ zt.T / temperature  # [c, N]: anchor i's positive is column i
    positive = sims[anchors, rows]
    if negatives is not None and negatives < zt.shape[0] - 1:
        # `negatives` other positions per anchor, drawn without replacement (the RNG state is replayed on recompute)
        draw = torch.rand(sims.shape, device=sims.device)
        draw[anchors, rows] = -1.0
        sims = sims.gather(-1, torch.cat([rows[:, None], draw.topk(negatives, dim=-1).indices], dim=-1))
    return sims.logsumexp(-1) - positive


def infonce(s, t, *, temperature: PositiveFloat = 0.1, negatives: PositiveInt | None = None,
            chunk_size: PositiveInt = 256):
    """Contrastive alignment (InfoNCE): each student feature must pick its own position's teacher feature among the
    teacher features of the other positions (all N - 1, or `negatives` drawn at random), by cosine similarity / T.
    Anchors go in chunks recomputed in backward, so memory is O(chunk_size x N), not O(N^2)."""
    zs, zt = F.normalize(s.float(), dim=-1), F.normalize(t.float(), dim=-1)
    n = zs.shape[0]
    total = zs.new_zeros(())
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        if torch.is_grad_enabled() and zs.requires_grad:
            values = checkpoint(_infonce_rows, zs, zt, start, stop, temperature, negatives, use_reentrant=False)
        else:
            values = _infonce_rows(zs, zt, start, stop, temperature, negatives)
        total = total + values.sum()
    return total / n


METRICS = {"mse": mse, "cosine": cosine, "pearson": pearson, "cross_correlation": cross_correlation,
           "cka": linear_cka, "contrastive": infonce}


def metric_params(name, given):
    """The parameters of metric `name`: `given` checked against its keyword-only parameters, every default filled in
    (so a resolved config shows each value used). ValueError naming the valid ones for an unknown key."""
    own = {n: p for n, p in inspect.signature(METRICS[name]).parameters.items() if p.kind == p.KEYWORD_ONLY}
    for key in given:
        if key not in own:
            raise ValueError(f"metric {name} has no parameter '{key}'; its parameters: {list(own) or 'none'}")
    resolved = {}
    for key, parameter in own.items():
        try:
            resolved[key] = TypeAdapter(parameter.annotation).validate_python(given.get(key, parameter.default))
        except ValidationError as e:
            raise ValueError(f"params.{key}: {e.errors()[0]['msg']} (got {given[key]!r})") from None
    return resolved
