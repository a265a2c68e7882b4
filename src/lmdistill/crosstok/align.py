"""Align two tokenizations of one response text by character offsets.

Each side first turns its offset mapping into boundary ends (boundary_ends): where, counted in characters
from the start of the response, a span of its tokens can close. align then cuts both token sequences at
every boundary the two sides share, so each group covers the same characters on both sides.
"""
from dataclasses import dataclass


def boundary_ends(offsets, text_start, text_stop):
    """For each token, its end relative to text_start when a span can close there, else None.

    offsets are (start, end) character pairs in the string that was tokenized, whose response text is
    string[text_start:text_stop]; tokens after it (end-of-turn markers, eos) and a token straddling
    text_stop get None. A token whose end the next token starts before does not close a span: a character
    whose UTF-8 bytes are split over several tokens gives each of them the whole character's span, so only
    the last of those tokens closes it.

    Tokens that end at or before text_start (text a template writes before the response) cannot close a span
    either: they join the first group. So does a first token that starts before text_start (the template's
    trailing whitespace merged into the response's): its end closes as usual, and the first group on that side
    also holds those template characters.
    """
    pairs = [(int(start), int(end)) for start, end in offsets]
    ends = []
    for k, (_, end) in enumerate(pairs):
        if end <= text_start:
            ends.append(None)
            continue
        next_start = pairs[k + 1][0] if k + 1 < len(pairs) else end
        ends.append(end - text_start if end <= text_stop and next_start >= end else None)
    return ends


def _first_index(ends):
    """Boundary position -> index of the first token closing there (zero-width tokens can repeat one)."""
    at = {}
    for k, pos in enumerate(ends):
        if pos is not None:
            at.setdefault(pos, k)
    return at


def align(teacher_ends, student_ends):
    """Groups (t0, t1, s0, s1): half-open token ranges covering the same characters on both sides.

    The groups partition range(len(teacher_ends)) and range(len(student_ends)) in order, and no group is
    empty on either side. A group closes right after the tokens where both sides have a boundary at the same
    character (as TRL's GOLD _align_by_byte_offsets, with None meaning "cannot close here"). Whatever follows
    the last common boundary (the suffix tokens of both sides, plus any response tokens no common boundary
    closed) is one final group; when only one side has tokens left, they join the previous group instead,
    so that group then ends at the end of both sequences.
    """
    if not teacher_ends and not student_ends:
        return []
    if not teacher_ends or not student_ends:
        raise ValueError(f"cannot align {len(teacher_ends)} teacher tokens with {len(student_ends)} student tokens")
    t_at, s_at = _first_index(teacher_ends), _first_index(student_ends)
    groups, t0, s0 = [], 0, 0
    for pos in sorted(t_at.keys() & s_at.keys()):
        t1, s1 = t_at[pos] + 1, s_at[pos] + 1
        if t1 > t0 and s1 > s0:  # skips a position out of order (offsets that are not monotonic)
            groups.append((t0, t1, s0, s1))
            t0, s0 = t1, s1
    return _close(groups, t0, len(teacher_ends), s0, len(student_ends))


def _close(groups, t0, n_teacher, s0, n_student):
    """Add the tokens after the last common boundary as a final group, or to the last group if one side has none."""
    if t0 < n_teacher and s0 < n_student:
        groups.append((t0, n_teacher, s0, n_student))
    elif t0 < n_teacher or s0 < n_student:
        first_t, _, first_s, _ = groups.pop()
        groups.append((first_t, n_teacher, first_s, n_student))
    return groups


@dataclass
class AlignmentStats:
    """Counts of student tokens over many aligned examples.

    aligned: tokens that start a group (their position is aligned on both sides); one_to_one: tokens in
    groups of one teacher and one student token.
    """
    student_tokens: int = 0
    aligned: int = 0
    one_to_one: int = 0

    def add(self, groups, student_tokens=None):
        """Count one example's groups (align's result) over its `student_tokens` (default: those the groups cover;
        more when truncation left some in no group); returns self."""
        covered = sum(s1 - s0 for _, _, s0, s1 in groups)
        self.student_tokens += covered if student_tokens is None else student_tokens
        self.aligned += len(groups)
        self.one_to_one += sum(1 for t0, t1, s0, s1 in groups if t1 - t0 == 1 and s1 - s0 == 1)
        return self

    @property
    def aligned_share(self):
        return self.aligned / self.student_tokens if self.student_tokens else 0.0

    @property
    def one_to_one_share(self):
        return self.one_to_one / self.student_tokens if self.student_tokens else 0.0

    def summary(self):
        return (f"{self.aligned_share:.1%} of {self.student_tokens} student response tokens have an aligned teacher "
                f"position ({self.one_to_one_share:.1%} one-to-one)")
