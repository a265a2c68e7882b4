"""The chunk driver every vocabulary-sized loss runs on: a sum over chunks of rows of a per-row function, where each
chunk's backward runs right after its forward, so a chunk's [chunk, V] float32 intermediates never outlive it and
nothing is recomputed in backward (see `lmdistill.divergences` for the divergences built on it).
"""
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Head:
    """Maps hidden states [c, d] to logits [c, V] inside each chunk (a logit lens, or a model's own LM head), so
    the full [N, V] logits never exist. `params` are the tensors it reads that may need gradients (a student's
    LM head weights); a teacher's head runs without gradients."""
    fn: Callable[[torch.Tensor], torch.Tensor]
    params: tuple = ()


class _Chunked(torch.autograd.Function):
    """Sum over chunks of rows of the weighted per-row divergence, each chunk's backward run right after its forward.

    Only the gradients are kept for backward (the size of s and of the head's parameters), never a chunk's [c, V]
    intermediates, and nothing is recomputed: backward only scales them by the incoming gradient. `logits(sc, tc)`
    gives a chunk's scaled student logits (differentiable) and teacher logits; `rows` are tensors cut into the same
    chunks that need no gradient (teacher inputs, position weights).
    """

    @staticmethod
    def forward(ctx, logits, fn, closed_form, chunk_size, s, rows, *params):
        wants_s = ctx.needs_input_grad[4]
        trainable = [p for p, wants in zip(params, ctx.needs_input_grad[6:]) if wants]
        grad_s = torch.zeros_like(s) if wants_s else None
        grad_p = [torch.zeros_like(p, dtype=torch.promote_types(p.dtype, torch.float32)) for p in trainable]
        total = 0.0
        for start in range(0, s.shape[0], chunk_size):
            sc = s[start:start + chunk_size].detach().requires_grad_(wants_s)
            tc, *wc = (r[start:start + chunk_size] for r in rows)
            with torch.enable_grad():
                z, tz = logits(sc, tc)
                if closed_form is None:
                    values = _weighted(fn(z, tz), wc)
                    del tz  # [c, V] buffers are what bounds memory: free each as soon as it is used
                    grads = torch.autograd.grad(values.sum(), [sc] * wants_s + trainable, allow_unused=True)
            if closed_form is not None:
                values, gz = closed_form(z.detach(), tz)
                del tz
                values, gz = _weighted(values, wc), _weighted(gz, wc)
                grads = torch.autograd.grad(z, [sc] * wants_s + trainable, gz, allow_unused=True)
            if wants_s:
                grad_s[start:start + chunk_size] = grads[0]
            for acc, g in zip(grad_p, grads[wants_s:]):
                if g is not None:
                    acc += g
            total = total + values.sum().detach()
        ctx.save_for_backward(grad_s, *grad_p)
        ctx.param_wants = ctx.needs_input_grad[6:]
        ctx.param_dtypes = [p.dtype for p in trainable]
        return total

    @staticmethod
    def backward(ctx, grad_out):
        grad_s, *grad_p = ctx.saved_tensors
        grad_p = iter(g.mul(grad_out).to(dtype) for g, dtype in zip(grad_p, ctx.param_dtypes))
        return (None, None, None, None, None if grad_s is None else grad_s * grad_out, None,
                *(next(grad_p) if wants else None for wants in ctx.param_wants))


def _weighted(x, weights):
    """x [c] or [c, V] times the chunk's position weights [c], when there are any."""
    if not weights:
        return x
    w = weights[0].to(x.dtype)
    return x * (w if x.ndim == 1 else w[:, None])


def chunked_sum(logits, fn, chunk_size, s, rows, params=(), closed_form=None):
    """sum over chunks of `chunk_size` rows of fn(*logits(sc, tc)) (times the position weights in rows[1:], if any).
    `s` [n, ...] are the rows gradients reach, `rows` the tensors cut into the same chunks that need none (teacher
    inputs, weights), `params` the tensors `logits` reads that may need gradients (a student head's weights).
    `closed_form(z, tz) -> (values, d values.sum() / dz)`, when given, replaces autograd through fn."""
    if torch.is_grad_enabled() and (s.requires_grad or any(p.requires_grad for p in params)):
        return _Chunked.apply(logits, fn, closed_form, chunk_size, s, tuple(rows), *params)
    return sum(_weighted(fn(*logits(sc, tc)), wc).sum()
               for sc, tc, *wc in zip(s.split(chunk_size), *(r.split(chunk_size) for r in rows)))
