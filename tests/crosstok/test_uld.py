"""ULD and the hybrid loss against float64 brute force: loops over groups, explicit chain-rule products, explicit
sorting and zero padding."""
import math

import pytest
import torch

from lmdistill import divergences
from lmdistill.chunked import Head
from lmdistill.crosstok.uld import GroupRows, HybridRows, group_loss, uld_rows
from tolerance import EPS64, worst


def random_groups(n_groups, gen, max_len=3, skip_tail=0):
    """Group sizes on one side; rows laid out group after group, plus `skip_tail` rows in no group."""
    sizes = torch.randint(1, max_len + 1, (n_groups,), generator=gen).tolist()
    groups, row = [], 0
    for size in sizes:
        groups.append(list(range(row, row + size)))
        row += size
    return groups, row + skip_tail


def rows_of(groups, n_rows):
    group = torch.full((n_rows,), -1, dtype=torch.long)
    for g, rows in enumerate(groups):
        group[rows] = g
    return GroupRows(torch.tensor([rows[-1] for rows in groups], dtype=torch.long), group)


def case(seed, vs=7, vt=11, n_groups=5, scale=3.0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    s_groups, ns = random_groups(n_groups, gen, skip_tail=1)
    t_groups, nt = random_groups(n_groups, gen, skip_tail=2)
    s = (torch.randn(ns, vs, generator=gen) * scale).to(dtype)
    t = (torch.randn(nt, vt, generator=gen) * scale).to(dtype)
    return dict(s=s, t=t, s_targets=torch.randint(0, vs, (ns,), generator=gen),
                t_targets=torch.randint(0, vt, (nt,), generator=gen), s_groups=s_groups, t_groups=t_groups)


def merged(logits, targets, rows, temperature):
    """A group's distribution: softmax at its last row times the probabilities of its earlier rows' targets."""
    probs = (logits.double() / temperature).softmax(-1)
    factor = 1.0
    for r in rows[:-1]:
        factor = factor * probs[r, targets[r]]
    return probs[rows[-1]] * factor


def sorted_l1_reference(q, p):
    width = max(len(q), len(p))
    qs = torch.cat([q.sort(descending=True).values, q.new_zeros(width - len(q))])
    ps = torch.cat([p.sort(descending=True).values, p.new_zeros(width - len(p))])
    return (qs - ps).abs().sum()


def uld_reference(c, temperature=1.0):
    total = 0.0
    for sg, tg in zip(c["s_groups"], c["t_groups"]):
        total = total + sorted_l1_reference(merged(c["s"], c["s_targets"], sg, temperature),
                                            merged(c["t"], c["t_targets"], tg, temperature))
    return total


def hybrid_reference(c, s_ids, t_ids, beta):
    total = 0.0
    for sg, tg in zip(c["s_groups"], c["t_groups"]):
        q, p = merged(c["s"], c["s_targets"], sg, 1.0), merged(c["t"], c["t_targets"], tg, 1.0)
        qn, pn = q[s_ids] / q[s_ids].sum(), p[t_ids] / p[t_ids].sum()
        m = beta * pn + (1 - beta) * qn
        jsd = beta * (pn * (pn / m).log()).sum() + (1 - beta) * (qn * (qn / m).log()).sum()
        s_rest = [i for i in range(len(q)) if i not in s_ids]
        t_rest = [i for i in range(len(p)) if i not in t_ids]
        total = total + jsd + sorted_l1_reference(q[s_rest], p[t_rest])
    return total


def run(rows_fn, c, chunk_size=2, temperature=1.0, head=None, teacher_inputs=None):
    return group_loss(rows_fn, c["s"], c["s_targets"], rows_of(c["s_groups"], len(c["s"])),
                      c["t"] if teacher_inputs is None else teacher_inputs, c["t_targets"],
                      rows_of(c["t_groups"], len(c["t"])), teacher_head=head, temperature=temperature,
                      chunk_size=chunk_size)


@pytest.mark.numerical
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("vs,vt", [(7, 11), (11, 7), (9, 9)])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_uld_matches_brute_force_and_its_gradient(seed, vs, vt, temperature):
    c = case(seed, vs, vt)
    c["s"].requires_grad_(True)
    got = run(uld_rows, c, temperature=temperature)
    (got_grad,) = torch.autograd.grad(got, c["s"])
    want = uld_reference(c, temperature)
    (want_grad,) = torch.autograd.grad(want, c["s"])
    n_groups, width = len(c["s_groups"]), max(vs, vt)
    assert abs(got.item() - want.item()) <= n_groups * worst(4 * width, 2.0, EPS64)
    torch.testing.assert_close(got_grad, want_grad, atol=worst(4 * width, 2.0, EPS64) * n_groups, rtol=0)


@pytest.mark.numerical
@pytest.mark.parametrize("seed", [0, 1])
def test_float32_uld_is_within_float32_rounding_of_float64(seed):
    c = case(seed, 300, 1000, n_groups=6, scale=4.0)
    want = uld_reference(c).item()
    c32 = {**c, "s": c["s"].float(), "t": c["t"].float()}
    got = run(uld_rows, c32, chunk_size=4).item()
    # per group: a log-softmax over V (V + 2 roundings), the exp, then a sum of 2 V terms of size <= 2
    assert abs(got - want) <= 6 * worst(4 * 1000 + 8, 2.0)


def test_chunk_size_does_not_change_the_loss_or_gradient():
    c = case(3, 13, 17, n_groups=7)
    results = []
    for chunk in (1, 3, 1000):
        s = c["s"].clone().requires_grad_(True)
        value = run(uld_rows, {**c, "s": s}, chunk_size=chunk)
        results.append((value.item(), torch.autograd.grad(value, s)[0]))
    for value, grad in results[1:]:
        assert abs(value - results[0][0]) <= worst(2 * 17 * 7, 2.0, EPS64)
        torch.testing.assert_close(grad, results[0][1], atol=worst(4 * 17, 2.0, EPS64), rtol=0)


def test_uld_ignores_which_token_has_which_probability():
    """Sorted vectors: permuting the teacher's vocabulary (targets with it) leaves the loss unchanged, and identical
    distributions give 0."""
    c = case(4, 9, 9)
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(0))
    inverse = perm.argsort()
    permuted = {**c, "t": c["t"][:, perm], "t_targets": inverse[c["t_targets"]]}
    assert abs(run(uld_rows, c).item() - run(uld_rows, permuted).item()) <= worst(4 * 9 * 5, 2.0, EPS64)
    same = {**c, "t": c["s"].clone(), "t_targets": c["s_targets"], "t_groups": c["s_groups"]}
    assert run(uld_rows, same).item() <= worst(4 * 9 * 5, 2.0, EPS64)


def test_a_teacher_head_maps_hidden_states_inside_each_chunk():
    """Teacher hidden states through its head give the same loss as its precomputed logits."""
    c = case(5, 8, 12)
    gen = torch.Generator().manual_seed(1)
    hidden = torch.randn(len(c["t"]), 4, generator=gen, dtype=torch.float64)
    weight = torch.randn(12, 4, generator=gen, dtype=torch.float64)
    c = {**c, "t": hidden @ weight.T}
    with_head = run(uld_rows, c, head=Head(lambda h: h @ weight.T), teacher_inputs=hidden)
    assert abs(with_head.item() - run(uld_rows, c).item()) <= worst(4 * 12 * 5, 2.0, EPS64)


@pytest.mark.numerical
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hybrid_matches_brute_force_and_its_gradient(seed):
    c = case(seed, 10, 14)
    c["s"].requires_grad_(True)
    s_ids, t_ids = [0, 2, 3, 7], [5, 1, 9, 13]  # student token s_ids[i] has the bytes of teacher token t_ids[i]
    rows = HybridRows(divergences.per_row("generalized_jsd", beta=0.5), torch.tensor(s_ids), torch.tensor(t_ids),
                      10, 14)
    got = run(rows, c)
    (got_grad,) = torch.autograd.grad(got, c["s"])
    want = hybrid_reference(c, s_ids, t_ids, 0.5)
    (want_grad,) = torch.autograd.grad(want, c["s"])
    tolerance = len(c["s_groups"]) * worst(6 * 14, 2.0, EPS64)
    assert abs(got.item() - want.item()) <= tolerance
    torch.testing.assert_close(got_grad, want_grad, atol=tolerance, rtol=0)
    want_mass = sum((lambda p: p[t_ids].sum() / p.sum())(merged(c["t"], c["t_targets"], tg, 1.0)).item()
                    for tg in c["t_groups"])
    assert math.isclose(rows.shared_mass, want_mass, abs_tol=tolerance)


def test_hybrid_with_every_token_shared_is_the_exact_divergence():
    """One-token groups, the same vocabulary in another order, every token shared: the ULD part is empty and the
    exact part is the divergence between the (renormalised, equal-sum) distributions."""
    gen = torch.Generator().manual_seed(7)
    s, t = torch.randn(5, 6, generator=gen, dtype=torch.float64), torch.randn(5, 6, generator=gen, dtype=torch.float64)
    perm = torch.randperm(6, generator=gen)
    groups = [[i] for i in range(5)]
    c = dict(s=s, t=t[:, perm], s_targets=torch.zeros(5, dtype=torch.long), t_targets=torch.zeros(5, dtype=torch.long),
             s_groups=groups, t_groups=groups)
    rows = HybridRows(divergences.per_row("forward_kl"), torch.arange(6), perm.argsort(), 6, 6)
    want = divergences.forward_kl(s, t, reduction="sum")
    assert abs(run(rows, c).item() - want.item()) <= worst(4 * 6 * 5, 2.0, EPS64)


def test_mismatched_group_counts_are_refused():
    c = case(0)
    with pytest.raises(ValueError, match="groups"):
        group_loss(uld_rows, c["s"], c["s_targets"], rows_of(c["s_groups"][:-1], len(c["s"])), c["t"],
                   c["t_targets"], rows_of(c["t_groups"], len(c["t"])))
