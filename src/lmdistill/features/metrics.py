"""Distances between student and teacher features at the same N positions: s [N, k], t [N, k] (CKA: any widths).

Each returns a scalar: the loss per position (batch statistics are taken over the N positions), so an
objective multiplies by N to give the token sum the training loop expects. Computed in float32.
"""
import torch


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


def cross_correlation(s, t, off_diagonal=0.005):
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


METRICS = {"mse": mse, "cosine": cosine, "pearson": pearson, "cross_correlation": cross_correlation,
           "cka": linear_cka}
