"""Float64 brute-force references for the divergences, written plainly over the full [..., V] tensors."""
import torch


def per_position(name, s, t, **params):
    """Divergence per position, float64, straight from the definitions. s, t: float64 logits / T."""
    q, p = s.softmax(-1), t.softmax(-1)

    def kl(a, b):  # entries where a or b is exactly 0 (teacher -inf logits) contribute 0
        return (a * torch.where((a > 0) & (b > 0), a.log() - b.log(), 0.0)).sum(-1)

    if name == "forward_kl":
        return kl(p, q)
    if name == "reverse_kl":
        return kl(q, p)
    if name == "generalized_jsd":
        beta = params["beta"]
        if beta == 0:
            return kl(p, q)
        if beta == 1:
            return kl(q, p)
        m = beta * p + (1 - beta) * q
        return beta * kl(p, m) + (1 - beta) * kl(q, m)
    if name == "symmetric_kl":
        lam = params["lam"]
        return (1 - lam) * kl(p, q) + lam * kl(q, p)
    if name == "skew_forward_kl":
        a = params["alpha"]
        return kl(p, a * p + (1 - a) * q if a > 0 else q)
    if name == "skew_reverse_kl":
        a = params["alpha"]
        return kl(q, a * q + (1 - a) * p if a > 0 else p)  # (0 * q would put 0/0 into the autograd graph)
    if name == "tvd":
        return 0.5 * (p - q).abs().sum(-1)
    if name == "akl":
        # head token v: the teacher mass of v and of all tokens ranked before it (more likely, or equally
        # likely with a smaller vocab id) is <= mu; the top-ranked token is always head
        mu, qd = params["mu"], q.detach()
        pu, pv = p.unsqueeze(-2), p.unsqueeze(-1)  # [..., 1, V] over u, [..., V, 1] over v
        ids = torch.arange(p.shape[-1])
        ranked_before = (pu > pv) | ((pu == pv) & (ids <= ids.unsqueeze(-1)))
        mass = (pu * ranked_before).sum(-1)
        head = (mass <= mu) | (ids == p.argmax(-1, keepdim=True))
        gap = (p - qd).abs()
        g_head, g_tail = (gap * head).sum(-1), (gap * ~head).sum(-1)
        return g_head / (g_head + g_tail) * kl(p, q) + g_tail / (g_head + g_tail) * kl(q, p)
    raise KeyError(name)


def reference(name, s, t, mask=None, temperature=1.0, **params):
    per = per_position(name, s.double() / temperature, t.double() / temperature, **params)
    if mask is None:
        mask = torch.ones(per.shape, dtype=torch.bool)
    return per[mask].mean()


