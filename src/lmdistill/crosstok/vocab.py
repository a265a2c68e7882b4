"""The bytes each vocabulary entry stands for, and the entries two tokenizers share."""
import json
import re

import torch

from lmdistill.errors import UserError

BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _byte_level_table():
    """GPT-2's bytes_to_unicode, inverted: a str.translate table from each stand-in character to its byte."""
    printable = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)}
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = b
        else:
            chars[b] = 256 + extra
            extra += 1
    return {char: b for b, char in chars.items()}


def _decoders(tokenizer):
    """The backend decoder's parts as JSON dicts (a Sequence flattened), or [] when there is no backend."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or backend.decoder is None:
        return []
    spec = json.loads(backend.decoder.__getstate__())
    return spec["decoders"] if spec["type"] == "Sequence" else [spec]


def _space_marker(decoders):
    """The character SentencePiece decoding turns into a space ('▁'), or None for another scheme."""
    for d in decoders:
        if d["type"] == "Metaspace":
            return d.get("replacement", "▁")
        if d["type"] == "Replace" and d["content"] == " " and "String" in d["pattern"]:
            return d["pattern"]["String"]
    return None


def _piece_converter(tokenizer):
    """A function from a vocabulary piece to the bytes it decodes to in the middle of a sequence."""
    decoders = _decoders(tokenizer)
    types = {d["type"] for d in decoders}
    if "ByteLevel" in types:
        table = _byte_level_table()

        def byte_level(piece):
            # Like the tokenizers ByteLevel decoder: a piece with a character outside the table is plain UTF-8.
            if all(ord(c) in table for c in piece):
                return bytes(table[ord(c)] for c in piece)
            return piece.encode("utf-8")
        return byte_level
    marker = _space_marker(decoders)
    if marker is not None:
        byte_fallback = "ByteFallback" in types

        def sentencepiece(piece):
            match = BYTE_PIECE.fullmatch(piece) if byte_fallback else None
            return bytes([int(match.group(1), 16)]) if match else piece.replace(marker, " ").encode("utf-8")
        return sentencepiece
    raise UserError(f"cannot read the vocabulary of {type(tokenizer).__name__}: cross-tokenizer vocabulary "
                    f"matching supports byte-level BPE and SentencePiece tokenizers (fast, with tokenizer.json)")


def _control_ids(tokenizer):
    """Ids of special tokens (bos, eos, pad, unk, mask, chat markers): they stand for no text."""
    added = getattr(tokenizer, "added_tokens_decoder", {})
    return {i for i, token in added.items() if token.special} | set(tokenizer.all_special_ids)


def token_bytes(tokenizer):
    """For every id in range(len(tokenizer)), the bytes that token adds to decoded text mid-sequence.

    None for special tokens and ids with no token. Added tokens that are not special (Gemma's '\\n\\n',
    '<table>') decode to their text and keep it.
    """
    convert = _piece_converter(tokenizer)
    control = _control_ids(tokenizer)
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return [None if i in control or piece is None else convert(piece) for i, piece in enumerate(pieces)]


def _lowest_ids(entries):
    """bytes -> the lowest id with those bytes (None entries skipped)."""
    lowest = {}
    for i, b in enumerate(entries):
        if b is not None:
            lowest.setdefault(b, i)
    return lowest


def shared_tokens(teacher_tokenizer, student_tokenizer):
    """(teacher_ids, student_ids): LongTensors of the id pairs whose tokens stand for the same bytes.

    One to one: where several ids of one side share bytes, the lowest id speaks for them. Sorted by teacher id.
    """
    teacher = _lowest_ids(token_bytes(teacher_tokenizer))
    student = _lowest_ids(token_bytes(student_tokenizer))
    pairs = sorted((t, student[b]) for b, t in teacher.items() if b in student)
    teacher_ids = torch.tensor([t for t, _ in pairs], dtype=torch.long)
    student_ids = torch.tensor([s for _, s in pairs], dtype=torch.long)
    return teacher_ids, student_ids


def check_offsets(tokenizer, role):
    """UserError unless the tokenizer can return character offsets (cross-tokenizer alignment needs them)."""
    problem = UserError(f"the {role} tokenizer ({type(tokenizer).__name__}) cannot return character offsets, "
                        f"which cross-tokenizer distillation needs to align tokens; use a fast tokenizer "
                        f"(one with a tokenizer.json) for the {role}")
    if not getattr(tokenizer, "is_fast", False):
        raise problem
    try:
        tokenizer("a", add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError:
        raise problem from None
