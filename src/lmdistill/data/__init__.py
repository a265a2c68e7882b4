"""Datasets: records from JSONL or the built-ins, encoded with the teacher's tokenizer."""
from dataclasses import dataclass

from lmdistill.data.batches import IGNORE, BatchOrder, calibration_batches, collate, in_batches, token_batches
from lmdistill.data.builtin import builtin_split, builtin_task
from lmdistill.data.encode import EncodeStats, Example, encode
from lmdistill.data.jsonl import read_records

__all__ = ["IGNORE", "BatchOrder", "calibration_batches", "collate", "in_batches", "token_batches", "Example",
           "EncodeStats", "encode", "read_records", "split_path", "load_split", "encode_split", "task_kind", "describe"]


def split_path(cfg, split):
    """Path of a split ('train', 'dev', 'test') or None when the config gives none."""
    if cfg.builtin is not None:
        return builtin_split(cfg.builtin, split)
    return getattr(cfg, split)


def describe(cfg, splits):
    """Where a run's data comes from and how many examples each loaded split has, in one line."""
    if cfg.builtin is not None:
        return f"built-in '{cfg.builtin}': " + ", ".join(f"{s.name} {len(s.examples)}" for s in splits.values()) \
            + " examples"
    return "files: " + ", ".join(f"{s.name} {split_path(cfg, s.name)} ({len(s.examples)} examples)"
                                 for s in splits.values())


@dataclass
class Split:
    name: str
    records: list
    examples: list            # the student's encoding (and the teacher's, when they share a tokenizer)
    stats: EncodeStats
    paired: object = None     # a teacher with another tokenizer: crosstok.encode.Paired (its encoding, the alignment)


def load_split(cfg, split, tokenizer, limit=None, chat=None, encoder=None):
    """The split's records encoded with `tokenizer` (chat: the model's own use_chat_template), or with
    `encoder(records) -> Paired` for a pair of tokenizers; None when the config gives no such split."""
    path = split_path(cfg, split)
    if path is None:
        return None
    return encode_split(cfg, split, read_records(path)[:limit], tokenizer, chat, encoder)


def encode_split(cfg, name, records, tokenizer, chat=None, encoder=None):
    """A Split of `records` encoded as load_split encodes a split's records."""
    if encoder is not None:
        paired = encoder(records)
        return Split(name, records, paired.student, paired.stats, paired)
    examples, stats = encode(records, tokenizer, cfg, chat)
    return Split(name, records, examples, stats)


def task_kind(cfg, train_records):
    """'classification' when responses are a small label set, else 'generation'."""
    if cfg.task != "auto":
        return cfg.task
    if cfg.builtin is not None:
        return builtin_task(cfg.builtin)
    labels = {r["response"].strip().lower() for r in train_records}
    return "classification" if len(labels) <= 20 and len(train_records) >= 5 * len(labels) else "generation"
