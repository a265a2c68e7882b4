"""Encode each record twice, once per tokenizer and prompt format, and align the two tokenizations of its response.

The response text is the record's, byte for byte, on both sides: each side renders its prompt (chat template or
plain) and its end-of-response suffix (end-of-turn marker, EOS) its own way, and the check below refuses a format
that changes the response itself. Response tokens are aligned by character offsets (`align.align`); an example is
kept only when both sides keep it (a prompt that fills max_length on either side drops it), and groups past either
side's truncation are dropped.
"""
from dataclasses import dataclass, field

from lmdistill.crosstok.align import AlignmentStats, align, boundary_ends
from lmdistill.crosstok.vocab import token_bytes
from lmdistill.data.encode import EncodeStats, Example, check_system_prompt, fit, render, tokenize, uses_chat_template
from lmdistill.errors import UserError


@dataclass
class Side:
    """One model's view of a dataset: its tokenizer, whether it uses its chat template, and what to call it."""
    tokenizer: object
    chat: bool | None   # None: data.use_chat_template
    role: str           # "teacher" or "student", for messages
    table: list | None = None  # token_bytes(tokenizer), computed on first use

    def token_bytes(self):
        if self.table is None:
            self.table = token_bytes(self.tokenizer)
        return self.table


@dataclass
class Paired:
    student: list[Example]
    teacher: list[Example]
    groups: list[list[tuple[int, int, int, int]]]  # per example: (t0, t1, s0, s1) over its response tokens
    stats: EncodeStats
    alignment: AlignmentStats = field(default_factory=AlignmentStats)  # over the student response tokens kept
    text_tokens: list[tuple[int, int]] = field(default_factory=list)  # per example: (teacher, student) response
    #   tokens kept that cover the response text (the rest is the end-of-response suffix)
    complete: list[bool] = field(default_factory=list)  # per example: both sides kept every text token (no
    #   truncation cut into the response text), so bits per byte compare the same text

    def alignment_summary(self):
        return self.alignment.summary()


def _encode_side(records, side, cfg):
    """Per record: (prompt ids, response ids, boundary ends, number of tokens before the suffix)."""
    check_system_prompt(side.tokenizer, cfg, side.chat, side.role)
    chat = uses_chat_template(side.tokenizer, cfg, side.chat)
    rendered = [render(side.tokenizer, r["prompt"], r["response"], cfg, side.chat) for r in records]
    prompts, responses, offsets = tokenize(side.tokenizer, rendered, chat, offsets=True)
    out = []
    for record, (_, text), p, r, spans in zip(records, rendered, prompts, responses, offsets):
        start = text.find(record["response"])
        if start < 0:
            what = "chat template" if chat else "plain prompt format"
            fix = f"set {side.role}.use_chat_template: false" if chat else "check the record's text"
            raise UserError(f"the {side.role}'s {what} does not keep the response verbatim ({record['response'][:40]!r} "
                            f"is rendered as {text[:60]!r}); {fix}")
        stop = start + len(record["response"])
        check_verbatim(side, len(out) + 1, text, r, spans, start, stop)
        ends = boundary_ends(spans, start, stop)
        out.append((p, r, ends, sum(1 for s in spans if s[1] <= stop)))
    return out


def check_verbatim(side, number, text, ids, spans, start, stop):
    """UserError when the tokens over the response text do not spell it byte for byte (a tokenizer that normalises
    or replaces characters, or reads part of the response as a control token): the two models would not see the
    same text."""
    table = side.token_bytes()
    over = [k for k, (a, b) in enumerate(spans) if a < stop and b > start]
    if not over:
        return
    got = b"".join(table[ids[k]] or b"\0<control>" for k in over)
    want = text[spans[over[0]][0]:spans[over[-1]][1]].encode("utf-8")
    if got != want:
        raise UserError(f"the {side.role}'s tokenizer does not reproduce the response of record {number} "
                        f"({want.decode('utf-8', 'replace')[:40]!r} is read as {got.decode('utf-8', 'replace')[:40]!r}): "
                        f"it normalises, replaces or reads as a control token part of it; rewrite or remove the "
                        f"record, or use another {side.role}")


def encode_pairs(records, teacher, student, cfg):
    """Paired examples of `records` for a teacher and a student `Side`, with their alignment."""
    t_side, s_side = _encode_side(records, teacher, cfg), _encode_side(records, student, cfg)
    paired = Paired([], [], [], EncodeStats(total=len(records)))
    for record, (tp, tr, t_ends, t_text), (sp, sr, s_ends, s_text) in zip(records, t_side, s_side):
        t_stats, s_stats = EncodeStats(), EncodeStats()
        t_fit, s_fit = fit(tp, tr, cfg.max_length, t_stats), fit(sp, sr, cfg.max_length, s_stats)
        if t_fit is None or s_fit is None:
            paired.stats.dropped += 1
            continue
        paired.stats.truncated += bool(t_stats.truncated or s_stats.truncated)
        n_t, n_s = len(t_fit[1]), len(s_fit[1])
        groups = [g for g in align(t_ends, s_ends) if g[1] <= n_t and g[3] <= n_s]
        paired.teacher.append(Example(t_fit[0] + t_fit[1], len(t_fit[0]), record["prompt"], record["response"]))
        paired.student.append(Example(s_fit[0] + s_fit[1], len(s_fit[0]), record["prompt"], record["response"]))
        paired.groups.append(groups)
        paired.text_tokens.append((min(t_text, n_t), min(s_text, n_s)))
        paired.complete.append(t_text <= n_t and s_text <= n_s)
        paired.alignment.add(groups, n_s)
    if not paired.student:
        raise UserError(f"no example fits in data.max_length {cfg.max_length} for both tokenizers; raise it")
    return paired
