"""Distillation between models with different tokenizers: alignment of the two tokenizations of one text (align.py),
the vocabularies' shared tokens by bytes (vocab.py), paired encoding of a dataset (encode.py), a batch's alignment as
rows of the models' outputs (rows.py), and losses between distributions over different vocabularies (uld.py)."""
from lmdistill.crosstok.align import AlignmentStats, align, boundary_ends
from lmdistill.crosstok.vocab import check_offsets, shared_tokens, token_bytes

__all__ = ["AlignmentStats", "align", "boundary_ends", "check_offsets", "shared_tokens", "token_bytes"]
