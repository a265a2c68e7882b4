"""The real teacher/student pair of cross-tokenizer distillation, loaded once per session."""
import pytest

from lmdistill.crosstok import token_bytes


@pytest.fixture(scope="session")
def smol(tokenizer):
    """SmolLM2-135M-Instruct's tokenizer (GPT-2-style byte-level BPE, 49152 tokens); tests/conftest.py loads it."""
    return tokenizer


@pytest.fixture(scope="session")
def gemma():
    """Gemma-3-270m's tokenizer (SentencePiece-style BPE with byte fallback, 262144 tokens)."""
    from lmdistill.models import load_tokenizer
    return load_tokenizer("gemma3-270m")


@pytest.fixture(scope="session")
def smol_bytes(smol):
    return token_bytes(smol)


@pytest.fixture(scope="session")
def gemma_bytes(gemma):
    return token_bytes(gemma)
