"""Exact descending sorts and top-k of many long float32 rows, faster on CPU than torch's row-wise sort and topk.

Each float32 value maps to an integer key in the same order (its bit pattern, negative values' order flipped),
offset by its row times 2^32, so one 1-D sort of int64 keys sorts every row at once: torch sorts a 1-D int64 tensor
with a parallel radix sort where it is built with FBGEMM (the x86 wheels), elsewhere with a comparison sort of the
same keys. For the k largest of each row, a threshold from a strided sample of the row first keeps a little more
than k candidates (three standard deviations of the sample's count more); if any row keeps fewer than k, all rows
take torch.topk instead. Other devices and dtypes use torch.sort and torch.topk. The values are
the same as theirs. Gradients flow as through torch's: sort_descending
sorts with them, top_descending takes torch.topk when they are wanted.
"""
import math

import torch

SAMPLE_STRIDE = 16  # every 16th entry of a row estimates where its k-th largest lies


def _fast(x):
    return x.device.type == "cpu" and x.dtype == torch.float32 and x.ndim == 2


def order_keys(values, rows):
    """int64 keys that sort ascending as (row ascending, value descending), for float32 `values` and long `rows`
    (broadcast against them). The low 32 bits hold the value's bits, mapped to an int32 that decreases with it."""
    bits = values.view(torch.int32)
    return (rows << 32) + ~(bits ^ ((bits >> 31) & 0x7FFFFFFF))


def sort_descending(x):
    """x [c, n] sorted descending along each row (the values of x.sort(-1, descending=True))."""
    if not _fast(x) or x.numel() == 0:
        return x.sort(-1, descending=True).values
    c, n = x.shape
    flat = x.reshape(-1)
    order = order_keys(flat.detach().view(c, n), torch.arange(c)[:, None]).view(-1).sort().indices
    return flat.gather(0, order).view(c, n)


def values_of(keys):
    """The float32 values whose `order_keys` these are."""
    flipped = ~keys.to(torch.int32)  # the low 32 bits
    return (flipped ^ ((flipped >> 31) & 0x7FFFFFFF)).view(torch.float32)


def top_descending(x, k):
    """The k largest entries of each row of x [c, n], descending (the values of x.topk(k, -1))."""
    c, n = x.shape
    if not _fast(x) or k >= n or n < 64 * SAMPLE_STRIDE or c == 0 or (x.requires_grad and torch.is_grad_enabled()):
        return x.topk(k, -1).values
    with torch.no_grad():
        sample = x[:, ::SAMPLE_STRIDE]
        m = sample.shape[1]
        expected = k / n * m  # sampled entries at or above the k-th largest: about binomial, sd about its root
        rank = math.ceil(expected + 3 * math.sqrt(expected)) + 1
        if rank >= m:  # k is most of the row: sort all of it
            return sort_descending(x)[:, :k]
        threshold = sample.kthvalue(m - rank + 1, -1, keepdim=True).values
        kept = (x >= threshold).view(-1).nonzero().squeeze(1)
        rows = kept.div(n, rounding_mode="floor")
        counts = torch.bincount(rows, minlength=c)
        if bool((counts < k).any()):
            return x.topk(k, -1).values
        keys = order_keys(x.reshape(-1)[kept], rows).sort().values
        starts = counts.cumsum(0) - counts
        return values_of(keys[(starts[:, None] + torch.arange(k)).view(-1)]).view(c, k)
