import json

import pytest
import torch


@pytest.fixture
def one_thread():
    """For tests on tiny tensors: intra-op threads only add spin-wait overhead (5-10x on a busy 2-core box)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tokenizer():
    from lmdistill.models import load_tokenizer
    return load_tokenizer("smollm2-135m-instruct")


# The real pair of cross-tokenizer distillation (tests/crosstok), loaded once per session.
@pytest.fixture(scope="session")
def smol(tokenizer):
    """SmolLM2-135M-Instruct's tokenizer (GPT-2-style byte-level BPE, 49152 tokens)."""
    return tokenizer


@pytest.fixture(scope="session")
def gemma():
    """Gemma-3-270m's tokenizer (SentencePiece-style BPE with byte fallback, 262144 tokens)."""
    from lmdistill.models import load_tokenizer
    return load_tokenizer("gemma3-270m")


@pytest.fixture(scope="session")
def smol_bytes(smol):
    from lmdistill.crosstok import token_bytes
    return token_bytes(smol)


@pytest.fixture(scope="session")
def gemma_bytes(gemma):
    from lmdistill.crosstok import token_bytes
    return token_bytes(gemma)


WORDS = ["apple", "hammer", "river", "cloud", "chair", "table", "dog", "cat", "book", "stone", "tree", "house",
         "car", "bread", "milk", "glass", "paper", "wind", "fire", "snow", "lamp", "road", "ship", "coin"]


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="session")
def word_data(tmp_path_factory):
    """A small define-the-word dataset with a learnable pattern: {'train','dev','test'} -> path."""
    root = tmp_path_factory.mktemp("words")
    records = [{"prompt": f"Define the word: {w}", "response": f"{w} is a common object, like a {w}"} for w in WORDS]
    splits = {"train": records * 4, "dev": records[:8], "test": records[8:16]}
    return {name: write_jsonl(root / f"{name}.jsonl", recs) for name, recs in splits.items()}


def tiny_config(run_dir, word_data, **sections):
    """A config dict for a fast real run: SmolLM2 teacher, a 2-layer 64-wide student."""
    config = {
        "seed": 0,
        "run_dir": str(run_dir),
        "student": {"spec": {"hidden_size": 64, "num_layers": 2, "num_heads": 2}},
        "data": {"builtin": None, **word_data, "max_length": 64},
        "train": {"steps": 6, "batch_size": 4, "lr": 3e-3, "warmup_steps": 0, "eval_every": 0, "log_every": 1},
        "eval": {"max_examples": 4, "generate": False, "batch_size": 4},
    }
    for section, values in sections.items():
        config[section] = {**config.get(section, {}), **values} if isinstance(values, dict) else values
    return config
