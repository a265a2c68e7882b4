"""Cross-tokenizer distillation: align two tokenizations of one text and match their vocabularies by bytes."""
from lmdistill.crosstok.align import AlignmentStats, align, boundary_ends
from lmdistill.crosstok.vocab import check_offsets, shared_tokens, token_bytes

__all__ = ["AlignmentStats", "align", "boundary_ends", "check_offsets", "shared_tokens", "token_bytes"]
