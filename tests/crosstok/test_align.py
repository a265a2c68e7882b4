"""align and boundary_ends: hand-made offsets, random segmentations, and the real Gemma/SmolLM2 pair."""
import random

import pytest

from lmdistill.crosstok import AlignmentStats, align, boundary_ends


def ends_of(offsets, stop, start=0):
    return boundary_ends(offsets, start, stop)


def test_one_to_one():
    offsets = [(0, 3), (3, 5), (5, 9)]
    assert ends_of(offsets, 9) == [3, 5, 9]
    assert align([3, 5, 9], [3, 5, 9]) == [(0, 1, 0, 1), (1, 2, 1, 2), (2, 3, 2, 3)]


def test_many_to_one_both_ways():
    # "unhappy day": teacher un|happy| day, student unhappy| d|ay
    teacher = ends_of([(0, 2), (2, 7), (7, 11)], 11)
    student = ends_of([(0, 7), (7, 9), (9, 11)], 11)
    assert align(teacher, student) == [(0, 2, 0, 1), (2, 3, 1, 3)]


def test_split_character_closes_only_after_its_last_token():
    # a 4-byte emoji at character 2 split over three byte-level tokens, each reporting the whole character
    student = ends_of([(0, 2), (2, 3), (2, 3), (2, 3), (3, 4)], 4)
    assert student == [2, None, None, 3, 4]
    teacher = ends_of([(0, 2), (2, 3), (3, 4)], 4)
    assert align(teacher, student) == [(0, 1, 0, 1), (1, 2, 1, 4), (2, 3, 4, 5)]


def test_split_character_merged_with_the_one_before():
    # SmolLM2 on ' ש': 'Ġ×' holds the space and the first byte of ש, so it reports (5, 7), as does '©'
    assert ends_of([(0, 5), (5, 7), (6, 7)], 7) == [5, None, 7]


def test_suffix_tokens_of_different_counts():
    teacher = ends_of([(0, 4), (4, 9)], 4)  # 'text' + '<eos>'
    student = ends_of([(0, 2), (2, 4), (4, 5), (5, 14), (14, 15)], 4)  # 'te', 'xt', then three suffix tokens
    assert teacher == [4, None] and student == [2, 4, None, None, None]
    assert align(teacher, student) == [(0, 1, 0, 2), (1, 2, 2, 5)]


def test_token_straddling_text_stop():
    # response 'a ' with suffix 'b': the student's 'Ġb' spans (1, 3) across text_stop 2
    student = ends_of([(0, 1), (1, 3)], 2)
    teacher = ends_of([(0, 1), (1, 2), (2, 3)], 2)
    assert student == [1, None] and teacher == [1, 2, None]
    assert align(teacher, student) == [(0, 1, 0, 1), (1, 3, 1, 2)]


def test_no_common_boundary_is_one_group():
    assert align([None, None], [None]) == [(0, 2, 0, 1)]
    assert align([2, None], [1, None]) == [(0, 2, 0, 2)]


def test_side_that_runs_out_first_joins_the_previous_group():
    assert align([1, 2, None], [1, 2]) == [(0, 1, 0, 1), (1, 3, 1, 2)]
    assert align([3], [1, 3, None]) == [(0, 1, 0, 3)]


def test_zero_width_tokens_repeat_a_boundary():
    assert align([2, 2, 4], [2, 4]) == [(0, 1, 0, 1), (1, 3, 1, 2)]


def test_empty_sides():
    assert align([], []) == []
    with pytest.raises(ValueError):
        align([1], [])


def test_offsets_are_relative_to_text_start():
    assert boundary_ends([(5, 7), (7, 9), (9, 14)], 5, 9) == [2, 4, None]
    assert boundary_ends([(4, 7)], 5, 7) == [2]  # a first token straddling text_start still closes


def test_tokens_before_the_response_join_the_first_group():
    assert boundary_ends([(0, 0), (0, 2)], 0, 2) == [None, 2]  # e.g. <bos> added by the post-processor
    assert boundary_ends([(0, 5), (5, 7)], 5, 7) == [None, 2]  # text a template writes before the response
    assert align(boundary_ends([(0, 5), (5, 7)], 5, 7), [2]) == [(0, 2, 0, 1)]


def _random_ends(rng, n_chars):
    """Boundary ends of a random segmentation of n_chars characters, some of them split over tokens."""
    ends = []
    for pos in sorted(rng.sample(range(1, n_chars), rng.randint(0, n_chars - 1)) + [n_chars]):
        ends += [None] * rng.choice([0, 0, 0, 1, 3]) + [pos]
    return ends + [None] * rng.randint(0, 3)


def test_random_segmentations_close_at_every_common_boundary():
    rng = random.Random(0)
    for _ in range(500):
        n = rng.randint(1, 12)
        teacher, student = _random_ends(rng, n), _random_ends(rng, n)
        groups = align(teacher, student)
        assert_partition(groups, len(teacher), len(student))
        closed = [teacher[t1 - 1] for _, t1, _, s1 in groups if teacher[t1 - 1] == student[s1 - 1] is not None]
        common = sorted({p for p in teacher if p is not None} & {p for p in student if p is not None})
        left = (len(teacher) - teacher.index(common[-1]) - 1, len(student) - student.index(common[-1]) - 1)
        if (left[0] == 0) != (left[1] == 0):  # one side ran out: the last group took the other's remainder
            common.pop()
        assert closed == common


def test_alignment_stats_sum_over_examples():
    stats = AlignmentStats().add([(0, 1, 0, 1), (1, 3, 1, 2), (3, 4, 2, 5)]).add([(0, 1, 0, 1)])
    assert (stats.student_tokens, stats.aligned, stats.one_to_one) == (6, 4, 2)
    assert stats.aligned_share == pytest.approx(4 / 6) and stats.one_to_one_share == pytest.approx(2 / 6)
    assert AlignmentStats().aligned_share == 0.0


def assert_partition(groups, n_teacher, n_student):
    """Groups cover both sides in order, with no gap, overlap, or empty side."""
    assert groups[0][0] == 0 and groups[0][2] == 0
    assert groups[-1][1] == n_teacher and groups[-1][3] == n_student
    for (_, t1, _, s1), (t0, _, s0, _) in zip(groups, groups[1:]):
        assert (t0, s0) == (t1, s1)
    assert all(t1 > t0 and s1 > s0 for t0, t1, s0, s1 in groups)


HOSTILE = [
    "  leading spaces", "trailing spaces   ", "a  b", "tabs\t\tand\tspaces \t mixed", "new\nlines\n\n\nand\r\n crlf",
    " \n \t \n ", "   ", "\n", "x", "é", "😀",
    "naïve café 😀👍🏽 e\u0301", "👨\u200d👩\u200d👧\u200d👦 family 🏳️\u200d🌈 flag 👋🏿 wave 🧑🏽\u200d💻",
    "e\u0301\u0302 a\u0308\u0323 Z\u0337\u0322\u034ea\u0338l\u0334g\u0335o",
    "你好，世界！日本語のテキスト 한국어", "مرحبا بالعالم שלום עולם", "𠜎𠜱𝄞 \U000e0100 ꙮ \U0010fffd",
    "pneumonoultramicroscopicsilicovolcanoconiosis Donaudampfschiffahrtsgesellschaftskapitän " + "a" * 200,
    "https://example.com/a/very/long/path?with=query&and=more#fragment", "def f(x):\n\treturn x**2  # ok\n",
    "\x00\x01\x7f control",
]


def _encode(tokenizer, string, text_start, text_stop):
    """(ids, boundary ends) of the tokens of string that end after text_start."""
    enc = tokenizer(string, add_special_tokens=False, return_offsets_mapping=True)
    kept = [(i, o) for i, o in zip(enc["input_ids"], enc["offset_mapping"]) if o[1] > text_start]
    return [i for i, _ in kept], boundary_ends([o for _, o in kept], text_start, text_stop)


def _group_bytes(tokenizer, table, ids):
    """Bytes of a run of tokens; a special token counts as its own text (it was rendered as text)."""
    return b"".join(table[i] if table[i] is not None else tokenizer.convert_ids_to_tokens(i).encode() for i in ids)


def check_alignment(text, teacher, student, prefix="", suffixes=("", "")):
    """Align one response on the real pair; every group ending at a common boundary holds the same bytes on
    both sides, equal to that stretch of the response; the last such boundary is the response's end; the
    final group holds exactly the suffix."""
    (gemma, gemma_bytes), (smol, smol_bytes) = teacher, student
    start, stop = len(prefix), len(prefix) + len(text)
    t_ids, t_ends = _encode(gemma, prefix + text + suffixes[0], start, stop)
    s_ids, s_ends = _encode(smol, prefix + text + suffixes[1], start, stop)
    groups = align(t_ends, s_ends)
    assert_partition(groups, len(t_ids), len(s_ids))
    pos = 0
    for t0, t1, s0, s1 in groups:
        end = t_ends[t1 - 1]
        if end is None or end != s_ends[s1 - 1]:
            break
        expected = text[pos:end].encode("utf-8")
        assert _group_bytes(gemma, gemma_bytes, t_ids[t0:t1]) == expected, (text, pos, end)
        assert _group_bytes(smol, smol_bytes, s_ids[s0:s1]) == expected, (text, pos, end)
        pos, last = end, (t1, s1)
    assert pos == len(text)
    assert _group_bytes(gemma, gemma_bytes, t_ids[last[0]:]) == suffixes[0].encode()
    assert _group_bytes(smol, smol_bytes, s_ids[last[1]:]) == suffixes[1].encode()
    return groups


@pytest.fixture(scope="module")
def pair(gemma, gemma_bytes, smol, smol_bytes):
    return (gemma, gemma_bytes), (smol, smol_bytes)


@pytest.mark.parametrize("text", HOSTILE)
def test_real_pair_aligns_hostile_text(pair, text):
    groups = check_alignment(text, *pair)
    assert groups[-1][1:4:2] == (len(_encode(pair[0][0], text, 0, len(text))[0]),
                                 len(_encode(pair[1][0], text, 0, len(text))[0]))


@pytest.mark.parametrize("text", HOSTILE)
def test_real_pair_aligns_hostile_text_with_suffixes(pair, text):
    groups = check_alignment(text, *pair, suffixes=("<eos>", "<|im_end|>"))
    assert groups[-1][1] - groups[-1][0] == 1 and groups[-1][3] - groups[-1][2] == 1  # <eos> against <|im_end|>
    check_alignment(text, *pair, suffixes=("<end_of_turn>\n", "<|im_end|>\n<|endoftext|>"))


@pytest.mark.parametrize("text", [t for t in HOSTILE if not t[0].isspace()])
def test_real_pair_aligns_after_a_template_prefix(pair, text):
    check_alignment(text, *pair, prefix="<start_of_turn>model\n", suffixes=("<end_of_turn>", "<|im_end|>"))


def test_real_pair_alignment_share(pair, capsys):
    stats = AlignmentStats()
    for text in HOSTILE:
        stats.add(check_alignment(text, *pair, suffixes=("<eos>", "<|im_end|>")))
    with capsys.disabled():
        print(f"\nhostile texts: {stats.aligned_share:.3f} of student tokens start an aligned group, "
              f"{stats.one_to_one_share:.3f} are in 1:1 groups")
    assert 0 < stats.one_to_one_share <= stats.aligned_share <= 1


def test_response_starting_with_whitespace_merges_into_the_template_newline(pair):
    # '\n' + '\nHi': both tokenizers read '\n\n' as one token straddling text_start; its end still closes
    (gemma, gemma_bytes), (smol, _) = pair
    prefix, text = "model\n", "\nHi there"
    t_ids, t_ends = _encode(gemma, prefix + text, len(prefix), len(prefix) + len(text))
    s_ids, s_ends = _encode(smol, prefix + text, len(prefix), len(prefix) + len(text))
    assert gemma_bytes[t_ids[0]] == b"\n\n" and t_ends[0] == 1
    groups = align(t_ends, s_ends)
    assert_partition(groups, len(t_ids), len(s_ids))
    assert t_ends[groups[0][1] - 1] == s_ends[groups[0][3] - 1] == 1
