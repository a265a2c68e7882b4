"""Losses between next-token distributions over two different vocabularies, at aligned groups of response tokens.

An aligned group is a stretch of response text that both tokenizations cover with whole tokens (`crosstok.align`).
A group's distribution on each side follows the chain rule, as TRL GOLD's "bayesian" merge: the full next-token
distribution at the group's last token times the probability the model gives the group's earlier tokens, so its
entry at the actual last token is the probability of the whole group's text. (Scaling does not change a sort
order, so a group's sorted vector is its last row's, scaled.)

- ULD (Boizard et al. 2024, "Towards Cross-Tokenizer Distillation: the Universal Logit Distillation Loss"):
  sum_k |sort(q)_k - sort(p)_k| per group, both sorted descending, the shorter vocabulary padded with zeros.
- Hybrid (as GOLD's): an exact divergence between the two distributions renormalised over the tokens both
  vocabularies share (the same bytes, `crosstok.vocab.shared_tokens`), plus ULD over the tokens they do not share.
  GOLD compares the unnormalised shared probabilities; renormalising makes the exact part a true divergence.

Student rows carry gradients; the teacher's rows may be hidden states mapped to logits by its head inside each chunk
(`chunked.Head`), so the teacher's [groups x vocab] logits exist one chunk at a time.
"""
from dataclasses import dataclass

import torch

from lmdistill.chunked import chunked_sum
from lmdistill.crosstok.sorting import sort_descending, top_descending


@dataclass
class GroupRows:
    """Where G aligned groups sit among one model's N response rows (row r predicts response token r)."""
    last: torch.Tensor   # [G] long: the row predicting each group's last token
    group: torch.Tensor  # [N] long: each row's group, -1 for a row in none (e.g. past a truncation)


def prefix_log_probs(row_log_probs, rows):
    """[G]: each group's log-probability of its tokens before the last (0 for a one-token group), from the log-prob of
    each row's actual token `row_log_probs` [M] given at the rows `earlier_rows(rows)`."""
    earlier = earlier_rows(rows)
    out = torch.zeros(len(rows.last), dtype=row_log_probs.dtype, device=row_log_probs.device)
    return out.index_add(0, rows.group[earlier], row_log_probs)


def earlier_rows(rows):
    """[M] long: the rows inside a group that are not its last."""
    inside = rows.group >= 0
    inside[rows.last] = False
    return inside.nonzero().squeeze(-1)


def top_probs(logits, log_norm, k, log_mass=None):
    """The k largest of exp(logits - log_norm) per row, descending, and the mass of the rest of them. The order is the
    logits' order, so only k are ever exponentiated; the rest's mass is the total (exp(log_mass), by default from
    the logits) minus theirs. With k at least the row's length, all of them sorted and no rest."""
    if k >= logits.shape[-1]:
        return (sort_descending(logits) - log_norm).exp(), 0.0
    top = (top_descending(logits, k) - log_norm).exp()
    if log_mass is None:
        log_mass = logits.logsumexp(-1, keepdim=True) - log_norm
    return top, (log_mass.squeeze(-1).exp() - top.sum(-1)).clamp_min(0)


def uld_rows(z, tz):
    """ULD per group from each side's (logits [c, V], prefix log-prob [c, 1]): sum_k |sort(q)_k - sort(p)_k| with the
    shorter side padded with zeros, so past its length only the longer side's remaining mass counts. A group's
    probabilities are exp(logit - logsumexp + prefix); they sum to exp(prefix)."""
    k = min(z[0].shape[-1], tz[0].shape[-1])
    (q, q_rest), (p, p_rest) = (top_probs(x, x.logsumexp(-1, keepdim=True) - prefix, k, prefix)
                                for x, prefix in (z, tz))
    return (q - p).abs().sum(-1) + q_rest + p_rest


class HybridRows:
    """Per group: `exact` (a per-row divergence, `divergences.per_row`) over the shared tokens, renormalised, plus ULD
    over the rest. Records the teacher's mass on the shared tokens (summed over groups) in `shared_mass`, and the
    groups seen in `groups`."""

    def __init__(self, exact, student_shared, teacher_shared, student_vocab, teacher_vocab, exact_weight=1.0,
                 uld_weight=1.0):
        self.exact, self.exact_weight, self.uld_weight = exact, exact_weight, uld_weight
        self.s_ids, self.t_ids = student_shared, teacher_shared
        self.s_rest = _complement(student_shared, student_vocab)
        self.t_rest = _complement(teacher_shared, teacher_vocab)
        self.shared_mass, self.groups = 0.0, 0

    def __call__(self, z, tz):
        (s_logits, s_prefix), (t_logits, t_prefix) = z, tz
        if self.s_ids.device != s_logits.device:
            self.s_ids, self.t_ids, self.s_rest, self.t_rest = (
                x.to(s_logits.device) for x in (self.s_ids, self.t_ids, self.s_rest, self.t_rest))
        t_lse = t_logits.logsumexp(-1, keepdim=True)
        s_norm = s_logits.logsumexp(-1, keepdim=True) - s_prefix  # a group's probabilities: exp(logit - norm)
        t_norm = t_lse - t_prefix
        t_shared = t_logits[:, self.t_ids]
        with torch.no_grad():
            self.shared_mass += (t_shared.logsumexp(-1, keepdim=True) - t_lse).exp().sum().item()
            self.groups += len(t_logits)
        # the divergence softmaxes its inputs: logits over the shared tokens are their renormalised distribution
        exact = self.exact(s_logits[:, self.s_ids], t_shared)
        k = min(len(self.s_rest), len(self.t_rest))
        q, q_rest = top_probs(s_logits[:, self.s_rest], s_norm, k)
        p, p_rest = top_probs(t_logits[:, self.t_rest], t_norm, k)
        return self.exact_weight * exact + self.uld_weight * ((q - p).abs().sum(-1) + q_rest + p_rest)


def _complement(ids, size):
    keep = torch.ones(size, dtype=torch.bool, device=ids.device)
    keep[ids] = False
    return keep.nonzero().squeeze(-1)


def target_log_probs(inputs, targets, head=None, temperature=1.0, chunk_size=64):
    """[n]: log p(target) of each row, from logits [n, V] or, with a `Head`, hidden states [n, d] (chunked)."""
    if head is None:
        z = _scaled(inputs.to(_wide(inputs)), temperature)
        return z.gather(-1, targets[:, None]).squeeze(-1) - z.logsumexp(-1)
    out = [target_log_probs(head.fn(x), t, None, temperature) for x, t in
           zip(inputs.split(chunk_size), targets.split(chunk_size))]
    return torch.cat(out) if out else inputs.new_zeros(0)


def group_loss(rows_fn, student_logits, student_targets, student_rows, teacher_inputs, teacher_targets, teacher_rows,
               teacher_head=None, temperature=1.0, chunk_size=64):
    """Sum over aligned groups of rows_fn (uld_rows or a HybridRows): gradients reach the student logits [Ns, Vs];
    the teacher's inputs [Nt, Vt] logits, or [Nt, d] hidden states with `teacher_head`, get none."""
    if len(student_rows.last) != len(teacher_rows.last):
        raise ValueError(f"{len(student_rows.last)} student groups but {len(teacher_rows.last)} teacher groups")
    earlier = earlier_rows(student_rows)
    s_prefix = prefix_log_probs(
        target_log_probs(student_logits[earlier], student_targets[earlier], None, temperature), student_rows)
    with torch.no_grad():
        t_earlier = earlier_rows(teacher_rows)
        t_prefix = prefix_log_probs(target_log_probs(
            teacher_inputs[t_earlier], teacher_targets[t_earlier], teacher_head, temperature, chunk_size), teacher_rows)
    # one tensor per side, so that each chunk of it holds its groups' logits and prefixes, and gradients reach both
    s = torch.cat([_scaled(student_logits[student_rows.last].to(_wide(student_logits)), temperature),
                   s_prefix[:, None]], -1)
    t = teacher_inputs[teacher_rows.last].detach()
    t = torch.cat([t.to(_wide(t)), t_prefix[:, None].to(_wide(t))], -1)

    def logits(sc, tc):
        """Each side's (logits [c, V], prefix log-prob [c, 1]); the teacher's through its head, if it has one."""
        tz = tc[:, :-1]
        if teacher_head is not None:
            with torch.no_grad():
                tz = teacher_head.fn(tz.to(teacher_inputs.dtype))
            tz = tz.to(_wide(tz))
        return (sc[:, :-1], sc[:, -1:]), (_scaled(tz, temperature), tc[:, -1:].to(tz.dtype))

    if s.shape[0] == 0:
        return student_logits.sum() * 0.0
    return chunked_sum(logits, rows_fn, chunk_size, s, [t])


def _scaled(logits, temperature):
    return logits if temperature == 1.0 else logits / temperature


def _wide(x):
    """float32, or x's dtype when it is wider (a float64 reference)."""
    return torch.promote_types(x.dtype, torch.float32)
