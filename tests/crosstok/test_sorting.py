"""crosstok.sorting's radix-sort paths give exactly torch.sort's and torch.topk's values, and the same gradients."""
import pytest
import torch

from lmdistill.crosstok.sorting import SAMPLE_STRIDE, order_keys, sort_descending, top_descending, values_of


def hostile_rows(c, n, seed):
    """Random logits with repeats, both zeros, infinities and the extremes of float32."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(c, n, generator=gen) * 5
    x[:, ::7] = x[:, 3:4]  # repeats
    specials = torch.tensor([0.0, -0.0, float("inf"), float("-inf"), 3.4e38, -3.4e38, 1e-45, -1e-45])
    x[:, 1:1 + len(specials)] = specials
    return x


def test_keys_order_floats_as_their_values_and_decode_back():
    x = hostile_rows(1, 4000, 0)[0]
    keys = order_keys(x, torch.zeros_like(x, dtype=torch.long))
    ordered = x[keys.argsort()]
    assert torch.equal(ordered, x.sort(descending=True).values)
    assert torch.equal(values_of(keys).view(torch.int32), x.view(torch.int32))  # bit for bit
    row_two = order_keys(x, torch.ones_like(x, dtype=torch.long))
    assert bool((row_two > keys.max()).all())  # a later row's keys all follow an earlier row's


@pytest.mark.parametrize("shape", [(5, 3000), (1, 1), (3, 0), (0, 7)])
def test_sort_descending_is_torch_sort(shape):
    x = hostile_rows(*shape, 1) if shape[1] > 10 else torch.randn(shape)
    assert torch.equal(sort_descending(x), x.sort(-1, descending=True).values)
    wide = hostile_rows(4, 301, 2)
    assert torch.equal(sort_descending(wide[:, :-1]), wide[:, :-1].sort(-1, descending=True).values)  # a view


def test_sort_descending_passes_gradients_as_torch_sort():
    gen = torch.Generator().manual_seed(3)
    x = (torch.randperm(6 * 500, generator=gen).float() - 1000).view(6, 500)  # distinct: one order
    weight = torch.randn(6, 500, generator=gen)
    grads = []
    for sort in (sort_descending, lambda t: t.sort(-1, descending=True).values):
        leaf = x.clone().requires_grad_()
        (sort(leaf) * weight).sum().backward()
        grads.append(leaf.grad)
    assert torch.equal(*grads)


def counting_topk(monkeypatch):
    calls, topk = [], torch.Tensor.topk
    monkeypatch.setattr(torch.Tensor, "topk", lambda self, *a, **kw: calls.append(1) or topk(self, *a, **kw))
    return calls


@pytest.mark.parametrize("k", [1, 100, 2000, 4095])
def test_top_descending_is_torch_topk(k, monkeypatch):
    x = hostile_rows(6, 64 * SAMPLE_STRIDE * 4, 4 + k)
    want = x.topk(k, -1).values
    calls = counting_topk(monkeypatch)
    assert torch.equal(top_descending(x, k), want) and not calls  # by the radix sort


def test_top_descending_where_the_sample_holds_the_largest(monkeypatch):
    """The largest entries sit at the sampled positions, so the sample's threshold keeps fewer than k: the answer
    is topk's, by topk."""
    n = 64 * SAMPLE_STRIDE * 2
    x = torch.arange(n, dtype=torch.float32).repeat(3, 1) * -1.0
    x[:, ::SAMPLE_STRIDE] = 1e6 + torch.arange(n // SAMPLE_STRIDE, dtype=torch.float32)
    k = 200
    want = x.topk(k, -1).values
    calls = counting_topk(monkeypatch)
    assert torch.equal(top_descending(x, k), want) and calls == [1]


def test_top_descending_with_gradients_and_other_dtypes():
    x = hostile_rows(2, 64 * SAMPLE_STRIDE, 5)
    leaf = x.clone().requires_grad_()
    top_descending(leaf, 10).sum().backward()
    assert leaf.grad.sum().item() == 20.0
    assert torch.equal(top_descending(x.double(), 50), x.double().topk(50, -1).values)
