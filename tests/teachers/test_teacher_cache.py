"""The teacher cache: exact where it claims to be, and never used when stale, partial or corrupted."""
import json
import math

import numpy as np
import pytest
import torch

from lmdistill import data
from lmdistill.teachers import cache as teacher_cache
from lmdistill.teachers.cached import CachedTeacher
from lmdistill.config import CacheSettings, DataConfig, TeacherConfig, build_config
from lmdistill.errors import UserError
from lmdistill.teachers import OnlineTeacher, Request, ResponseLM
from lmdistill.models import load_teacher
from lmdistill.run import train
from lmdistill.teachers.cache import StaleCache
from conftest import tiny_config
from tolerance import EPS32, EPS64, TINY_STUDENT, llama_terms, training_terms, typical, worst

pytestmark = pytest.mark.numerical

VOCAB = 49152
FULL = CacheSettings(logits="topk", top_k=VOCAB, hidden_dtype="float32")
HEAD = CacheSettings(logits="head", hidden_dtype="float32")


@pytest.fixture(scope="module")
def teacher_and_examples(word_data):
    teacher, tokenizer = load_teacher(TeacherConfig())
    cfg = DataConfig(builtin=None, train=word_data["train"], max_length=64)
    examples = data.load_split(cfg, "train", tokenizer).examples[:24]
    return teacher, tokenizer, examples


@pytest.fixture(scope="module")
def built(tmp_path_factory, teacher_and_examples):
    teacher, tokenizer, examples = teacher_and_examples
    path = tmp_path_factory.mktemp("cache") / "full"
    teacher_cache.build(path, teacher, tokenizer, examples, VOCAB, [10, 30], FULL, log=lambda *_: None)
    return path


@pytest.fixture(scope="module")
def built_head(tmp_path_factory, teacher_and_examples):
    teacher, tokenizer, examples = teacher_and_examples
    path = tmp_path_factory.mktemp("cache") / "head"
    teacher_cache.build(path, teacher, tokenizer, examples, VOCAB, [10], HEAD, log=lambda *_: None)
    return path


def _copy(src, dst):
    import shutil
    shutil.copytree(src, dst)
    return dst


def _open(path, teacher_and_examples, layers=(10, 30), settings=FULL, examples=None):
    teacher, tokenizer, default = teacher_and_examples
    expected = teacher_cache.identity(teacher, tokenizer, examples or default, VOCAB, settings)
    return teacher_cache.open_cache(path, expected, layers)


@pytest.mark.parametrize("mode", ["topk", "head"])
@pytest.mark.e2e
def test_full_cache_equals_the_online_teacher(built, built_head, teacher_and_examples, mode):
    teacher, tokenizer, examples = teacher_and_examples
    cache = _open(built, teacher_and_examples) if mode == "topk" else _open(built_head, teacher_and_examples, settings=HEAD)
    if mode == "head":
        assert "topk_ids.npy" not in cache.manifest["files"] and cache.manifest["layers"] == [10, 30]
    cached = CachedTeacher(cache, teacher)
    online = OnlineTeacher(teacher, VOCAB)
    indices = [5, 0, 17, 3]  # any order: rows come back in batch order
    batch = {**data.collate([examples[i] for i in indices], tokenizer.pad_token_id), "index": torch.tensor(indices)}
    a, b = online(batch, Request(hidden=(10, 30))), cached(batch, Request(hidden=(10, 30)))
    # equal up to float32 rounding: the cache was computed in other batches (other batch sizes and padding widths,
    # so other kernels and summation orders), through the teacher's whole forward (tolerance.py: typical)
    want = torch.log_softmax(a.logits, -1) if mode == "topk" else a.logits
    width, config = batch["input_ids"].shape[1], teacher.config
    torch.testing.assert_close(b.logits, want, rtol=0,
                               atol=typical(llama_terms(config, width, vocab=VOCAB), a.logits.abs().max().item()))
    assert set(cached(batch, Request(hidden=(10,))).hidden) == {10}  # only the layers asked for
    assert torch.equal(a.targets, b.targets)
    for layer in (10, 30):
        terms = llama_terms(config, width, layers=layer)
        torch.testing.assert_close(b.hidden[layer], a.hidden[layer], rtol=0,
                                   atol=typical(terms, a.hidden[layer].abs().max().item()))


@pytest.mark.e2e
def test_top_k_keeps_the_top_exactly_and_the_rest_mass(tmp_path, teacher_and_examples):
    teacher, tokenizer, examples = teacher_and_examples
    k8 = CacheSettings(logits="topk", top_k=8)
    # The cache is built from one batch of the same 3 examples the online teacher gets below: the same shapes, so
    # the same kernels and summation order, and what the cache stores must be the online log-probs bit for bit.
    # (In other batches float32 rounding differs: test_full_cache_equals_the_online_teacher.)
    some = examples[:3]
    path = teacher_cache.build(tmp_path / "k8", teacher, tokenizer, some, VOCAB, [30], k8, batch_size=len(some),
                               log=lambda *_: None)
    cache = _open(path, teacher_and_examples, layers=(30,), settings=k8, examples=some)
    batch = data.collate(some, tokenizer.pad_token_id)
    full = torch.log_softmax(OnlineTeacher(teacher, VOCAB)(batch, Request(hidden=(30,))).logits, -1)
    rows = cache.rows([0, 1, 2])
    logits, hidden = cache.topk_logprobs(rows), cache.hidden(rows, (30,))
    top = full.topk(8, dim=-1)
    torch.testing.assert_close(logits.gather(1, top.indices), top.values, atol=0, rtol=0)
    # still a distribution: a float32 sum of VOCAB probabilities (partial sums <= 1), each exp of a float32
    # log-prob (relative error <= EPS32 |log-prob|)
    mass_tol = worst(VOCAB, 1.0) + EPS32 * logits.abs().max().item()
    torch.testing.assert_close(logits.exp().sum(-1), torch.ones(len(logits)), atol=mass_tol, rtol=0)
    rest = torch.log1p(-top.values.double().exp().sum(-1))
    tail = logits.double().exp().sum(-1) - top.values.double().exp().sum(-1)
    # the rest's log-mass is rounded to float32 twice (stored, then minus log(VOCAB - 8) per spread entry); the
    # sums here are float64
    stored = cache.manifest["vocab_size"] - 8
    torch.testing.assert_close(tail.log(), rest, rtol=0, atol=worst(2, rest.abs().max().item() + math.log(stored)))
    assert hidden[30].dtype == torch.float32 and cache.arrays["hidden_30"].dtype == np.float16


def test_rest_logmass_matches_float64(one_thread):
    torch.manual_seed(0)
    logits = torch.randn(50, 300) * 4
    logprobs = torch.log_softmax(logits, -1)
    values = logprobs.topk(20, dim=-1).values
    want = torch.log(1 - values.double().exp().sum(-1))
    # the float64 result rounded to float32 (relative EPS32 / 2); the reference's 1 - sum cancels: float64 error of
    # a 20-term sum of size <= 1, divided by the rest's mass
    ref_error = worst(20, 1.0, EPS64) / (1 - values.double().exp().sum(-1)).min().item()
    torch.testing.assert_close(teacher_cache.rest_logmass(values).double(), want, rtol=EPS32, atol=ref_error)
    # all the mass in the top: a finite floor, not -inf or nan
    peaked = torch.tensor([[0.0, -200.0]])
    assert torch.isfinite(teacher_cache.rest_logmass(peaked)).all()


@pytest.mark.parametrize("damage, message", [
    ("flip", "checksum"), ("truncate", "partial"), ("manifest", "unfinished"), ("delete", "missing"),
    ("bad_json", "not valid JSON")])
@pytest.mark.e2e
def test_damaged_cache_is_refused(tmp_path, built, teacher_and_examples, damage, message):
    path = _copy(built, tmp_path / "c")
    target = path / "topk_logprobs.npy"
    if damage == "flip":
        raw = bytearray(target.read_bytes())
        raw[-5] ^= 0xFF
        target.write_bytes(bytes(raw))
    elif damage == "truncate":
        target.write_bytes(target.read_bytes()[:1000])
    elif damage == "manifest":
        (path / "manifest.json").unlink()
    elif damage == "delete":
        target.unlink()
    else:
        (path / "manifest.json").write_text("{not json")
    with pytest.raises(StaleCache, match=message):
        _open(path, teacher_and_examples)


@pytest.mark.parametrize("change, message", [("data", "data_fingerprint"), ("top_k", "top_k"), ("mode", "logits"),
                                             ("dtype", "hidden_dtype"), ("layer", "also needs")])
@pytest.mark.e2e
def test_mismatched_cache_is_refused(built, teacher_and_examples, change, message):
    teacher, tokenizer, examples = teacher_and_examples
    kwargs = {"data": {"examples": examples[:23]}, "top_k": {"settings": FULL.model_copy(update={"top_k": 64})},
              "dtype": {"settings": FULL.model_copy(update={"hidden_dtype": "float16"})},
              "layer": {"layers": (10, 20, 30)}, "mode": {"settings": HEAD}}[change]
    with pytest.raises(StaleCache, match=message):
        _open(built, teacher_and_examples, **kwargs)


@pytest.mark.e2e
def test_a_changed_teacher_is_refused(built, teacher_and_examples):
    teacher, tokenizer, examples = teacher_and_examples
    weight = teacher.model.norm.weight
    with torch.no_grad():
        weight[0] += 1.0
    try:
        with pytest.raises(StaleCache, match="teacher_fingerprint"):
            _open(built, teacher_and_examples)
    finally:
        with torch.no_grad():
            weight[0] -= 1.0


@pytest.mark.e2e
def test_stale_cache_is_rebuilt_with_the_union_of_layers(tmp_path, built, teacher_and_examples):
    teacher, tokenizer, examples = teacher_and_examples
    path = _copy(built, tmp_path / "c")
    raw = bytearray((path / "hidden_10.npy").read_bytes())
    raw[-1] ^= 0x01
    (path / "hidden_10.npy").write_bytes(bytes(raw))
    said = []
    teacher_cache.load_or_build(path, teacher, tokenizer, examples, VOCAB, [10], FULL, log=said.append)
    assert "rebuilding" in said[0] and "checksum" in said[0]
    cache = teacher_cache.load_or_build(path, teacher, tokenizer, examples, VOCAB, [20], FULL, log=said.append)
    assert "rebuilding" in said[-2] and "also needs [20]" in said[-2]
    assert cache.manifest["layers"] == [10, 20, 30]  # what it held, and what this run needs
    fresh = _open(path, teacher_and_examples, layers=(10, 20, 30))
    assert np.array_equal(fresh.arrays["hidden_10"], _open(built, teacher_and_examples).arrays["hidden_10"])
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.e2e
def test_the_build_shows_a_progress_bar(tmp_path, teacher_and_examples, capsys):
    teacher, tokenizer, examples = teacher_and_examples
    teacher_cache.build(tmp_path / "c", teacher, tokenizer, examples[:10], VOCAB, [30], HEAD, batch_size=4,
                        log=lambda *_: None)
    err = capsys.readouterr().err
    assert "teacher cache" in err and "3/3" in err  # 10 examples in batches of 4


def test_an_interrupted_build_leaves_nothing_usable(tmp_path, teacher_and_examples, monkeypatch):
    teacher, tokenizer, examples = teacher_and_examples
    calls = []

    def fail_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    real = ResponseLM.forward
    monkeypatch.setattr(ResponseLM, "forward", fail_on_second)
    with pytest.raises(KeyboardInterrupt):
        teacher_cache.build(tmp_path / "c", teacher, tokenizer, examples, VOCAB, [30], HEAD, batch_size=8,
                            log=lambda *_: None)
    assert list(tmp_path.iterdir()) == []  # no cache directory, no temporary left behind


@pytest.mark.parametrize("mode", ["head", "topk"])
@pytest.mark.e2e
def test_training_from_a_full_cache_equals_online(tmp_path, word_data, teacher_and_examples, mode):
    objectives = [{"name": "ce", "weight": 0.5}, {"name": "logit_kd", "weight": 0.5},
                  {"name": "feature", "weight": 1.0, "selector": "projection", "metric": "mse"},
                  {"name": "lens", "weight": 0.5, "layers": [[15, 1]]}]
    losses = {}
    for cache in (False, True):
        run = "cache" if cache else "online"
        extra = {"teacher_cache": {"dir": str(tmp_path / "teacher-cache"), "logits": mode, "hidden_dtype": "float32",
                                   **({"top_k": VOCAB} if mode == "topk" else {})}} if cache else {}
        config = build_config({**tiny_config(tmp_path / run, word_data), "objectives": objectives, **extra})
        result = train(config, log=lambda *_: None)
        losses[run] = [json.loads(l) for l in open(tmp_path / run / "metrics.jsonl") if '"train"' in l]
        assert result["resources"]["peak_rss_gib"] > 0
    assert json.loads((tmp_path / "teacher-cache" / "manifest.json").read_text())["logits"] == mode
    # the cache's teacher outputs were computed in other batches (float32 rounding of the teacher's forward), and
    # the students then train on them for 6 steps (tolerance.py: training_terms)
    teacher_config = teacher_and_examples[0].config
    rel = typical(training_terms(teacher_config, TINY_STUDENT, 64, VOCAB, len(losses["online"])))
    for a, b in zip(losses["online"], losses["cache"]):
        for key in ("ce", "logit_kd", "feature", "lens"):
            assert math.isclose(a[key], b[key], rel_tol=rel), (key, a[key], b[key])


@pytest.mark.e2e
def test_a_directory_that_is_not_a_cache_is_never_replaced(tmp_path, built, teacher_and_examples):
    teacher, tokenizer, examples = teacher_and_examples
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    with pytest.raises(UserError, match="exists and is not a teacher cache"):
        teacher_cache.load_or_build(home, teacher, tokenizer, examples, VOCAB, [10], FULL, log=lambda *_: None)
    assert (home / "thesis.tex").read_text() == "years of work"
    # a cache that lost its manifest holds only cache files: it is rebuilt
    path = _copy(built, tmp_path / "c")
    (path / "manifest.json").unlink()
    said = []
    teacher_cache.load_or_build(path, teacher, tokenizer, examples, VOCAB, [10], FULL, log=said.append)
    assert "rebuilding" in said[0] and (path / "manifest.json").is_file()
