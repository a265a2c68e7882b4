"""Test tolerances derived from floating-point arithmetic, so that they hold on any CPU and under any BLAS kernel.

u is the unit roundoff (float32 2**-24, float64 2**-53); EPS = 2u is the machine epsilon.

Worst case, one reduction (`worst`). A sum of n terms computed in any order -- sequentially, pairwise, in SIMD
lanes, blocked by a BLAS kernel, split over threads or processes -- rounds n - 1 times, each time with relative
error <= u of the partial sum it produces. With every partial sum bounded by M (M <= the sum of |terms|), its
error is <= (n - 1) u M, so two orders of the same sum differ by at most 2 (n - 1) u M < n EPS M. A dot product
rounds each product once more: (n + 1) EPS M; a log-sum-exp / softmax over n entries is a sum of n exps after
a subtraction and an exp, each rounded once: (n + 2) EPS M.

Typical, a deep computation (`typical`). Chaining worst cases through a network (every layer's reductions,
times its Jacobian) gives bounds orders of magnitude above any real error, and no test could fail. Rounding
errors of separate operations behave as independent and mean-zero, so over N roundings of quantities of size
<= M the error grows like sqrt(N) u M, and exceeds lambda sqrt(N) u M with probability <= 2 exp(-lambda^2 / 2)
(Higham & Mary, "A new approach to probabilistic rounding error analysis", SIAM J. Sci. Comput. 41(5), 2019).
`typical` returns LAMBDA sqrt(N) EPS M: for the difference of two computations (standard deviation
sqrt(2N) u M) that is LAMBDA * sqrt(2) = 5.7 standard deviations.

N counts the roundings on the path from the inputs to the compared value (`llama_terms`: the reduction lengths
of every layer a value passes through). Neither bound depends on the CPU: both hold for any kernel that sums
the same terms in another order, which is what a BLAS kernel, a vector width, a batch shape, padding or a second
process changes.
"""
import math

EPS32 = 2.0 ** -23
EPS64 = 2.0 ** -52
LAMBDA = 4.0


def worst(n_terms, magnitude, eps=EPS32):
    """Any-order bound on the difference of two computations of a sum of `n_terms` terms whose partial sums are
    at most `magnitude` in size."""
    return n_terms * eps * magnitude


def typical(n_terms, magnitude=1.0, eps=EPS32):
    """Probabilistic bound on the difference of two computations that round `n_terms` times along the way,
    on quantities of size <= `magnitude` (relative when magnitude is 1)."""
    return LAMBDA * math.sqrt(n_terms) * eps * magnitude


def llama_terms(config, seq_len, layers=None, vocab=None):
    """Roundings on the path from the embeddings to hidden_states[layers] (default: all) of a Llama-family model
    (RMSNorm, attention, gated MLP), plus the final norm, LM head and a log-softmax over `vocab` when given.
    Per layer: RMSNorm (hidden), q/k/v projection (hidden), q.k (head_dim), softmax and attention x V (seq_len
    each), o_proj (hidden), residual add, RMSNorm (hidden), gate/up (hidden), down (intermediate), residual add."""
    hidden = config.hidden_size
    head_dim = getattr(config, "head_dim", None) or hidden // config.num_attention_heads
    per_layer = 5 * hidden + head_dim + 2 * seq_len + config.intermediate_size + 2
    n = per_layer * (config.num_hidden_layers if layers is None else layers)
    if vocab is not None:
        n += 2 * hidden + vocab + 2
    return n


def training_terms(teacher_config, student_config, seq_len, vocab, steps):
    """Roundings behind a logged loss or an optimizer step after `steps` steps of distillation: the teacher's
    forward, and the student's forward and backward (twice its forward path) at every step so far."""
    return llama_terms(teacher_config, seq_len, vocab=vocab) + 2 * steps * llama_terms(student_config, seq_len,
                                                                                       vocab=vocab)


def adam_update_norm_tol(numel, lr, steps, relative):
    """Bound on ||w_a - w_b|| for one tensor trained by AdamW from the same start along two computation orders
    whose gradients differ by `relative` (e.g. typical(training_terms(...))). Each AdamW step moves every weight
    by lr * m/sqrt(v) with |m/sqrt(v)| <= ~1, and that ratio of gradient moments changes by the gradients'
    relative difference, so the update differs by <= relative * lr per weight and step: in norm,
    relative * lr * steps * sqrt(numel). (Per weight no useful bound exists: AdamW divides by the gradient's own
    size, so a weight whose gradient is near zero can move in either direction; the norm averages those few.)"""
    return relative * lr * steps * math.sqrt(numel)


def student_shape(hidden_size, num_layers, num_heads):
    """The shape llama_terms needs of a fresh student from a spec (conftest.tiny_config's: 64 wide, 2 layers)."""
    from types import SimpleNamespace
    return SimpleNamespace(hidden_size=hidden_size, num_hidden_layers=num_layers, num_attention_heads=num_heads,
                           intermediate_size=64 * math.ceil(hidden_size * 8 / 3 / 64))  # models.loading's default


TINY_STUDENT = student_shape(64, 2, 2)


def divergence_terms(vocab, positions=1):
    """Roundings behind a divergence between two softmaxes over `vocab` entries, summed or averaged over
    `positions`: a log-softmax on each side (vocab + 2 each; its absolute error (vocab + 2) EPS in a log-probability
    is a relative error in the probability), the sum over vocab of probability-weighted log-ratios (vocab) and the
    sum over positions. The magnitude is that of the terms, per position
    sum_v (p_v + q_v)(1 + |log p_v| + |log q_v|) (`divergence_magnitudes`), >= the divergence itself;
    for a gradient entry, the same with p_v + q_v for the sum (each entry is made of p_v, q_v times log-ratios and
    the row's divergence), over the number of positions and the temperature."""
    return 3 * vocab + positions + 4


def divergence_magnitudes(s, t, mask=None, temperature=1.0, mean=True):
    """The sizes divergence_terms asks for, from float64 probabilities of the masked positions:
    M = max over positions of m = sum_v (p_v + q_v)(1 + |log p_v| + |log q_v|) and 1 (>= the sum of |terms| of
    every divergence in lmdistill.divergences: KL terms, log-mixtures between log p and log q, TVD's |p - q|; and the weight of a
    log-probability's absolute error), and for each gradient entry (p_v + q_v)(1 + |log p_v| + |log q_v| + m) / T,
    over the number of positions for a mean (the sizes of the terms the entry is made of: q_v times log-ratios and
    the row's divergence, p_v), 0 at masked-out positions. A -inf teacher logit has p_v = 0: its |log p_v| is 0."""
    import torch
    s, t = s.double() / temperature, t.double() / temperature
    keep = torch.ones(s.shape[:-1], dtype=torch.bool) if mask is None else mask
    lp, lq = t[keep].log_softmax(-1), s[keep].log_softmax(-1)
    p, q = lp.exp(), lq.exp()
    size = 1 + lq.abs() + torch.where(p > 0, lp.abs(), 0.0)
    m = ((p + q) * size).sum(-1)
    sizes = torch.zeros_like(s)
    sizes[keep] = (p + q) * (size + m[:, None]) / (temperature * (p.shape[0] if mean else 1))
    return max(1.0, m.max().item()), sizes
