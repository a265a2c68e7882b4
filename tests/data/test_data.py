import pytest

from lmdistill.config import DataConfig
from lmdistill.data import IGNORE, BatchOrder, Example, collate, encode, read_records, token_batches
from lmdistill.errors import UserError


def test_read_records_line_numbered_errors(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "a", "response": "b"}\n\n{"prompt": "c", "response": \n')
    with pytest.raises(UserError, match=r"d.jsonl line 3: invalid JSON"):
        read_records(path)
    path.write_text('{"prompt": "a", "response": "b"}\n{"prompt": "c"}\n')
    with pytest.raises(UserError, match=r"line 2: missing 'response'"):
        read_records(path)
    path.write_text('{"prompt": "a", "response": 3}\n')
    with pytest.raises(UserError, match=r"line 1: 'response' must be a string"):
        read_records(path)
    path.write_text('{"prompt": "a", "response": "  "}\n')
    with pytest.raises(UserError, match=r"line 1: empty 'response'"):
        read_records(path)
    path.write_bytes(b'{"prompt": "a\xff", "response": "b"}\n')
    with pytest.raises(UserError, match=r"line 1: not valid UTF-8"):
        read_records(path)
    path.write_text("\n\n")
    with pytest.raises(UserError, match=r"no records"):
        read_records(path)
    with pytest.raises(UserError, match=r"data file not found"):
        read_records(tmp_path / "nope.jsonl")


def test_loss_only_on_response_tokens_with_chat_template(tokenizer):
    cfg = DataConfig(builtin=None, train="x", system_prompt="Be brief.")
    records = [{"prompt": "Define the word: cat", "response": "a small domesticated feline"}]
    [example], stats = encode(records, tokenizer, cfg)
    batch = collate([example], tokenizer.pad_token_id)
    labelled = batch["labels"][0][batch["labels"][0] != IGNORE].tolist()
    text = tokenizer.decode(labelled)
    assert text == "a small domesticated feline<|im_end|>"
    prompt_text = tokenizer.decode(example.input_ids[:example.n_prompt])
    assert prompt_text.endswith("<|im_start|>assistant\n") and "Be brief." in prompt_text
    assert "Define the word: cat" in prompt_text
    assert stats.truncated == 0 and stats.dropped == 0


def test_without_chat_template_response_ends_with_eos(tokenizer):
    cfg = DataConfig(builtin=None, train="x", use_chat_template=False)
    [example], _ = encode([{"prompt": "Q", "response": "answer"}], tokenizer, cfg)
    assert example.input_ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(example.input_ids[example.n_prompt:]) == "answer" + tokenizer.eos_token


def test_truncation_is_reported_and_long_prompts_dropped(tokenizer):
    cfg = DataConfig(builtin=None, train="x", max_length=40)
    records = [{"prompt": "short", "response": "word " * 100},
               {"prompt": "long " * 100, "response": "x"},
               {"prompt": "fine", "response": "ok"}]
    examples, stats = encode(records, tokenizer, cfg)
    assert (stats.total, stats.truncated, stats.dropped) == (3, 1, 1)
    assert len(examples) == 2 and all(len(e.input_ids) <= 40 for e in examples)
    assert "1 responses truncated and 1 dropped" in stats.summary(40)
    with pytest.raises(UserError, match="no example fits"):
        encode(records[1:2], tokenizer, cfg)


def test_padding_is_masked(tokenizer):
    cfg = DataConfig(builtin=None, train="x")
    examples, _ = encode([{"prompt": "a", "response": "b"}, {"prompt": "a much longer prompt here", "response": "c d e"}],
                         tokenizer, cfg)
    batch = collate(examples, tokenizer.pad_token_id)
    short = len(examples[0].input_ids)
    assert batch["attention_mask"][0, short:].sum() == 0
    assert (batch["labels"][0, short:] == IGNORE).all()


def test_batch_order_is_deterministic_and_covers_each_epoch():
    order = BatchOrder(20, batch_size=4, grad_accum=1, seed=3)
    epoch = [i for k in range(5) for i in order.micro_batch(k)]
    assert sorted(epoch) == list(range(20))
    assert BatchOrder(20, 4, seed=3).micro_batch(7) == order.micro_batch(7)
    assert [i for k in range(5, 10) for i in order.micro_batch(k)] != epoch  # reshuffled next epoch
    assert BatchOrder(20, 4, seed=4).micro_batch(0) != order.micro_batch(0)
    # accumulation of two half batches sees the same examples as one full batch
    assert sum(BatchOrder(20, 2, grad_accum=2, seed=3).step(1), []) == BatchOrder(20, 4, seed=3).step(1)[0]
    # two processes split the global batch between them
    ranks = [BatchOrder(20, 2, seed=3, world_size=2, rank=r).micro_batch(1) for r in (0, 1)]
    assert ranks[0] + ranks[1] == BatchOrder(20, 4, seed=3).micro_batch(1)
    with pytest.raises(UserError, match="fewer than one batch"):
        BatchOrder(3, 4)


def test_token_batches_bound_padded_tokens_and_keep_order():
    lengths = [3, 9, 4, 4, 20, 2, 2, 2, 7]
    examples = [Example(input_ids=list(range(1, n + 1)), n_prompt=1, prompt="p", response="r") for n in lengths]
    batches = list(token_batches(examples, pad_id=0, max_tokens=12))
    seen = [row[row != 0].tolist() for b in batches for row in b["input_ids"]]
    assert seen == [e.input_ids for e in examples]  # every example once, in order
    sizes = [tuple(b["input_ids"].shape) for b in batches]
    assert sizes == [(1, 3), (1, 9), (2, 4), (1, 20), (3, 2), (1, 7)]  # 20 > 12 goes alone
    assert all(rows * width <= 12 for rows, width in sizes if rows > 1)


@pytest.mark.parametrize("name, task", [("define-word", "generation"), ("spam", "classification"),
                                        ("email-subject", "generation")])
def test_builtin_datasets_encode(tokenizer, name, task):
    from lmdistill.data import load_split, task_kind
    cfg = DataConfig(builtin=name, max_length=256)
    split = load_split(cfg, "dev", tokenizer, limit=50)
    assert len(split.examples) + split.stats.dropped == 50
    assert all(len(e.input_ids) > e.n_prompt for e in split.examples)
    assert task_kind(cfg, split.records) == task


def test_unknown_builtin_dataset(tokenizer):
    from lmdistill.data import load_split
    with pytest.raises(UserError, match="unknown built-in dataset 'define-words'.*did you mean 'define-word'"):
        load_split(DataConfig(builtin="define-words"), "train", tokenizer)


def test_auto_task_detects_label_sets():
    from lmdistill.data import task_kind
    cfg = DataConfig(builtin=None, train="x")
    labels = [{"prompt": str(i), "response": ["yes", "no"][i % 2]} for i in range(20)]
    free = [{"prompt": str(i), "response": f"text {i}"} for i in range(20)]
    assert task_kind(cfg, labels) == "classification" and task_kind(cfg, free) == "generation"
