"""token_bytes, shared_tokens and check_offsets on the real Gemma/SmolLM2 pair and on small stubs."""
import time

import pytest
import torch
from tokenizers import Tokenizer, decoders, models
from transformers import PreTrainedTokenizer, PreTrainedTokenizerFast

from lmdistill.crosstok import check_offsets, shared_tokens, token_bytes
from lmdistill.errors import UserError

TEXTS = ["Hello, world!", " leading space and trailing  ", "naïve café 😀👍🏽 e\u0301 👨\u200d👩\u200d👧",
         "你好，世界 مرحبا שלום 𠜎𝄞 \U000e0100", "tabs\tand\n\nnewlines\r\n \t", "<table><tr>x</tr></table>", "a" * 300]


@pytest.mark.parametrize("text", TEXTS)
def test_token_bytes_round_trip(gemma, gemma_bytes, smol, smol_bytes, text):
    for tokenizer, table in ((gemma, gemma_bytes), (smol, smol_bytes)):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert b"".join(table[i] for i in ids) == text.encode("utf-8"), type(tokenizer).__name__


def test_no_dummy_prefix_space(gemma, gemma_bytes, smol, smol_bytes):
    """Neither tokenizer prepends a space to a sequence, so a response's first token needs no special case."""
    for tokenizer, table in ((gemma, gemma_bytes), (smol, smol_bytes)):
        first = tokenizer("hello", add_special_tokens=False, return_offsets_mapping=True)
        spaced = tokenizer(" hello", add_special_tokens=False, return_offsets_mapping=True)
        assert table[first["input_ids"][0]].startswith(b"h") and table[spaced["input_ids"][0]].startswith(b" ")
        assert first["offset_mapping"][0][0] == spaced["offset_mapping"][0][0] == 0


@pytest.mark.parametrize("which", ["gemma", "smol"])
def test_every_token_matches_the_backend_decoder(request, which):
    """Each id decoded alone (no special-token skipping) gives its bytes; partial UTF-8 compares lossily."""
    tokenizer, table = request.getfixturevalue(which), request.getfixturevalue(f"{which}_bytes")
    assert len(table) == len(tokenizer)
    ids = [i for i, b in enumerate(table) if b is not None]
    decoded = tokenizer.backend_tokenizer.decode_batch([[i] for i in ids], skip_special_tokens=False)
    wrong = [(i, table[i], d) for i, d in zip(ids, decoded) if table[i].decode("utf-8", "replace") != d]
    assert not wrong, wrong[:5]


def test_known_entries(gemma, gemma_bytes, smol, smol_bytes):
    g, s = gemma.convert_tokens_to_ids, smol.convert_tokens_to_ids
    assert [gemma_bytes[g(p)] for p in ["▁", "<0xF0>", "<0x0A>", "\n\n", "▁the", "<table>"]] == \
        [b" ", b"\xf0", b"\n", b"\n\n", b" the", b"<table>"]
    assert [smol_bytes[s(p)] for p in ["Ġ", "Ċ", "Ġthe", "ðŁ", "Ã©"]] == \
        [b" ", b"\n", b" the", b"\xf0\x9f", "é".encode()]
    for p in ["<bos>", "<eos>", "<pad>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>", "<unused0>"]:
        assert gemma_bytes[g(p)] is None, p
    for p in ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]:
        assert smol_bytes[s(p)] is None, p


def test_token_bytes_is_fast(gemma):
    began = time.perf_counter()
    token_bytes(gemma)
    assert time.perf_counter() - began < 10  # about 0.5 s alone; loose for a busy machine


def _fast(decoder, vocab):
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.decoder = decoder
    return PreTrainedTokenizerFast(tokenizer_object=backend)


def test_metaspace_decoder_without_byte_fallback():
    tokenizer = _fast(decoders.Metaspace(), {"[UNK]": 0, "▁a": 1, "<0x41>": 2, "b▁": 3})
    assert token_bytes(tokenizer)[1:] == [b" a", b"<0x41>", b"b "]


def test_unknown_scheme_is_a_user_error():
    tokenizer = _fast(decoders.WordPiece(), {"[UNK]": 0, "a": 1, "##b": 2})
    with pytest.raises(UserError, match=f"{type(tokenizer).__name__}.*byte-level BPE and SentencePiece"):
        token_bytes(tokenizer)


def test_shared_tokens_on_the_real_pair(gemma, gemma_bytes, smol, smol_bytes, capsys):
    teacher_ids, student_ids = shared_tokens(gemma, smol)
    with capsys.disabled():
        print(f"\n{len(teacher_ids)} tokens shared by Gemma-3 ({len(gemma)}) and SmolLM2 ({len(smol)})")
    assert teacher_ids.dtype == student_ids.dtype == torch.long and len(teacher_ids) == len(student_ids) > 1000
    assert torch.all(teacher_ids[1:] > teacher_ids[:-1]) and len(set(student_ids.tolist())) == len(student_ids)
    pairs = dict(zip(teacher_ids.tolist(), student_ids.tolist()))
    assert all(gemma_bytes[t] == smol_bytes[s] is not None for t, s in pairs.items())
    by_bytes = {gemma_bytes[t]: (t, s) for t, s in pairs.items()}
    for text in [b"the", b" the", b"\n", b" ", b"\xf0"]:
        t, s = by_bytes[text]
        assert t == min(i for i, b in enumerate(gemma_bytes) if b == text)  # '\n' is also '<0x0A>': lowest id
        assert s == min(i for i, b in enumerate(smol_bytes) if b == text)


class CharTokenizer(PreTrainedTokenizer):
    """A slow (pure Python) tokenizer: one token per character of 'ab '."""

    def __init__(self, **kwargs):
        self._vocab = {c: i for i, c in enumerate("ab ")}
        super().__init__(**kwargs)

    def get_vocab(self):
        return dict(self._vocab)

    @property
    def vocab_size(self):
        return len(self._vocab)

    def _tokenize(self, text):
        return list(text)

    def _convert_token_to_id(self, token):
        return self._vocab.get(token, 0)

    def _convert_id_to_token(self, index):
        return "ab "[index]


class NoOffsets:
    """Says it is fast but cannot return offsets."""
    is_fast = True

    def __call__(self, text, **kwargs):
        if kwargs.get("return_offsets_mapping"):
            raise NotImplementedError("return_offset_mapping is not available when using Python tokenizers")
        return {"input_ids": [0]}


def test_check_offsets(gemma, smol):
    check_offsets(gemma, "teacher")
    check_offsets(smol, "student")
    with pytest.raises(UserError, match="student tokenizer \\(CharTokenizer\\).*fast tokenizer.*tokenizer.json"):
        check_offsets(CharTokenizer(), "student")
    with pytest.raises(UserError, match="teacher tokenizer \\(NoOffsets\\)") as caught:
        check_offsets(NoOffsets(), "teacher")
    assert "\n" not in str(caught.value)
