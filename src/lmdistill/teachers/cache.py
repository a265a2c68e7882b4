"""The teacher computed once: its outputs at the response positions of every training example, in memory-mapped
.npy files with a manifest. Logits are stored one of two ways (`logits`):
- head (default): the final hidden state, float32; training applies the teacher's LM head to it, which gives the
  online logits (to float32 rounding) at a few percent of the teacher's cost;
- topk: the top-k log-probabilities with their ids and the log of the rest's mass (smaller for huge vocabularies).
Hidden states for feature and lens objectives are stored as `hidden_dtype`.

The manifest binds the files to the teacher (weights fingerprint), tokenizer, encoded data, vocabulary, top-k,
storage dtype and layer set, and records each file's size and sha256. `open_cache` checks all of it; anything
that does not match (or a missing, truncated or altered file) is rebuilt, never used. The directory is
written to a temporary name and renamed into place, so a killed build leaves nothing that looks finished.

`cached.CachedTeacher` reads it and answers like the online teacher (`ModelOutputs`). In topk mode its logits are
log-probabilities, exact on the top k, with the rest of the mass spread evenly over the other tokens. How far
each objective moves from its online value: benchmarks/cache_fidelity.py (topk is far off for reverse KL, AKL and
temperatures above 1, whose values depend on the tail).
"""
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import torch

from lmdistill.data import in_batches
from lmdistill.errors import UserError
from lmdistill.progress import bar
from lmdistill.provenance import data_fingerprint, model_fingerprint, tokenizer_fingerprint
from lmdistill.teachers.outputs import Request
from lmdistill.teachers.response_lm import ResponseLM
from lmdistill.io import atomic_dir, atomic_write_json

FORMAT = "lmdistill-teacher-cache-1"
NP_DTYPES = {"float16": np.float16, "float32": np.float32}


class StaleCache(Exception):
    """The cache at a path cannot be used for this run; the message says why."""


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def identity(teacher, tokenizer, examples, vocab_size, settings, student_tokenizer=None):
    """What a cache must have been built from to be used (besides holding the needed layers). With a student of
    another tokenizer (`student_tokenizer`), the examples are the teacher's encoding of those both models keep, so
    a cache is bound to that student tokenizer too."""
    other = tokenizer_fingerprint(student_tokenizer) if student_tokenizer is not None else None
    return {"format": FORMAT, "student_tokenizer_fingerprint": other, "teacher": teacher.config.name_or_path, "teacher_fingerprint": model_fingerprint(teacher),
            "teacher_dtype": str(next(teacher.parameters()).dtype).removeprefix("torch."),
            "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer), "data_fingerprint": data_fingerprint(examples),
            "examples": len(examples), "vocab_size": vocab_size, "logits": settings.logits,
            "top_k": settings.top_k if settings.logits == "topk" else None, "hidden_dtype": settings.hidden_dtype}


def response_rows(example):
    """Number of positions of `example` that predict a response token."""
    return len(example.input_ids) - max(example.n_prompt, 1)


def build(path, teacher, tokenizer, examples, vocab_size, layers, settings, batch_size=16, log=print,
          student_tokenizer=None):
    """Run the teacher over `examples` once and write the cache directory at `path` (atomically)."""
    top_k, final = settings.top_k, teacher.config.num_hidden_layers
    topk = settings.logits == "topk"
    if topk and not 0 < top_k <= vocab_size:
        raise UserError(f"teacher_cache.top_k must be between 1 and the vocabulary size {vocab_size}, got {top_k}")
    layers = sorted(set(layers) | ({final} if not topk else set()))
    meta = identity(teacher, tokenizer, examples, vocab_size, settings, student_tokenizer)
    counts = [response_rows(e) for e in examples]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    n, width = int(offsets[-1]), teacher.config.hidden_size
    device = next(teacher.parameters()).device
    model = ResponseLM(teacher, vocab_size)
    log(f"teacher cache: {len(examples)} examples, {n} response positions, "
        + (f"top-{top_k} log-probs + rest" if topk else "logits from the final hidden state (float32)")
        + f", hidden layers {layers} as {settings.hidden_dtype} -> {path}")
    with atomic_dir(path) as tmp:
        mm = {}
        if topk:
            mm = {"topk_logprobs": np.lib.format.open_memmap(tmp / "topk_logprobs.npy", "w+", np.float32, (n, top_k)),
                  "topk_ids": np.lib.format.open_memmap(tmp / "topk_ids.npy", "w+", np.int32, (n, top_k)),
                  "rest_logmass": np.lib.format.open_memmap(tmp / "rest_logmass.npy", "w+", np.float32, (n,))}
        for layer in layers:
            dtype = np.float32 if layer == final and not topk else NP_DTYPES[settings.hidden_dtype]
            mm[f"hidden_{layer}"] = np.lib.format.open_memmap(tmp / f"hidden_{layer}.npy", "w+", dtype, (n, width))
        row = 0
        with torch.no_grad():
            batches = in_batches(examples, tokenizer.pad_token_id, batch_size, device)
            for batch in bar(batches, total=math.ceil(len(examples) / batch_size), desc="teacher cache"):
                out = model(batch["input_ids"], batch["attention_mask"], batch["labels"], Request(hidden=tuple(layers)))
                end = row + len(out.targets)
                if topk:
                    values, ids = torch.log_softmax(out.logits.float(), dim=-1).topk(top_k, dim=-1)
                    mm["topk_logprobs"][row:end] = values.cpu().numpy()
                    mm["topk_ids"][row:end] = ids.int().cpu().numpy()
                    mm["rest_logmass"][row:end] = rest_logmass(values).cpu().numpy()
                for layer in layers:
                    mm[f"hidden_{layer}"][row:end] = out.hidden[layer].float().cpu().numpy()
                row = end
        if row != n:
            raise RuntimeError(f"teacher cache: wrote {row} rows, expected {n}")
        for array in mm.values():
            array.flush()
        del mm
        np.save(tmp / "offsets.npy", offsets)
        files = {p.name: {"bytes": p.stat().st_size, "sha256": file_sha256(p)} for p in sorted(tmp.glob("*.npy"))}
        atomic_write_json(tmp / "manifest.json", {**meta, "layers": layers, "rows": n, "files": files})
    return path


def rest_logmass(top_logprobs):
    """log(1 - sum exp(top)) per row, finite: a top-k holding all the mass leaves log(float32 tiny)."""
    top_mass = torch.logsumexp(top_logprobs.double(), dim=-1)
    rest = torch.log(-torch.expm1(top_mass.clamp(max=-1e-12)))
    return rest.clamp(min=math.log(torch.finfo(torch.float32).tiny)).float()


def open_cache(path, expected, layers):
    """The cache at `path` if it matches `expected` (see `identity`) and holds `layers`; else StaleCache."""
    path = Path(path)
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise StaleCache(f"no cache at {path}" if not path.exists() else f"{path} has no manifest (unfinished build)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise StaleCache(f"{manifest_path} is not valid JSON") from None
    for key, want in expected.items():
        if manifest.get(key) != want:
            raise StaleCache(f"{path} was built with {key}={manifest.get(key)!r}, this run needs {want!r}")
    missing = sorted(set(layers) - set(manifest.get("layers", [])))
    if missing:
        raise StaleCache(f"{path} holds teacher layers {manifest.get('layers')}, this run also needs {missing}")
    for name, info in manifest.get("files", {}).items():
        file = path / name
        if not file.is_file():
            raise StaleCache(f"{file} is missing")
        if file.stat().st_size != info["bytes"]:
            raise StaleCache(f"{file} has {file.stat().st_size} bytes, the manifest says {info['bytes']} (partial write?)")
        if file_sha256(file) != info["sha256"]:
            raise StaleCache(f"{file} does not match its checksum (corrupted)")
    return TeacherCache(path, manifest)


class TeacherCache:
    def __init__(self, path, manifest):
        self.path, self.manifest = Path(path), manifest
        self.offsets = np.load(path / "offsets.npy")
        self.arrays = {name[:-4]: np.load(path / name, mmap_mode="r") for name in manifest["files"]
                       if name != "offsets.npy"}

    def rows(self, indices):
        """Row numbers of these examples' response positions, example by example."""
        return np.concatenate([np.arange(self.offsets[i], self.offsets[i + 1]) for i in indices])

    def hidden(self, rows, layers, device="cpu"):
        """{layer: hidden [N, d] float32} at these rows."""
        return {layer: torch.from_numpy(np.ascontiguousarray(self.arrays[f"hidden_{layer}"][rows])).float().to(device)
                for layer in layers}

    def topk_logprobs(self, rows, device="cpu"):
        """Dense log-probs [N, V] at these rows: the stored top k, the rest's mass spread evenly over the others."""
        top = torch.from_numpy(np.ascontiguousarray(self.arrays["topk_logprobs"][rows])).to(device)
        ids = torch.from_numpy(np.ascontiguousarray(self.arrays["topk_ids"][rows])).long().to(device)
        rest = torch.from_numpy(np.ascontiguousarray(self.arrays["rest_logmass"][rows])).to(device)
        vocab, k = self.manifest["vocab_size"], self.manifest["top_k"]
        others = max(vocab - k, 1)
        logits = (rest - math.log(others)).unsqueeze(1).expand(len(rows), vocab).clone()
        logits.scatter_(1, ids, top)
        return logits


def load_or_build(path, teacher, tokenizer, examples, vocab_size, layers, settings, log=print, build_allowed=True,
                  student_tokenizer=None):
    """A matching cache at `path`, rebuilt first (with the union of its layers and `layers`) when stale.
    `settings`: config.CacheSettings (logits, top_k, hidden_dtype)."""
    expected = identity(teacher, tokenizer, examples, vocab_size, settings, student_tokenizer)
    try:
        cache = open_cache(path, expected, layers)
        log(f"teacher cache: using {path} ({cache.manifest['rows']} positions, layers {cache.manifest['layers']})")
        return cache
    except StaleCache as why:
        if not build_allowed:
            raise
        check_dir(path)
        if Path(path).exists():
            log(f"teacher cache: rebuilding, {why}")
        old_layers = _layers_of(path)
        build(path, teacher, tokenizer, examples, vocab_size, sorted(set(layers) | set(old_layers)), settings, log=log,
              student_tokenizer=student_tokenizer)
    return open_cache(path, expected, layers)


def check_dir(path):
    """Rebuilding replaces the directory: only ever one that holds nothing but a teacher cache's files."""
    path = Path(path)
    ours = lambda p: p.name == "manifest.json" or p.suffix == ".npy"  # noqa: E731
    if path.exists() and (not path.is_dir() or not all(ours(p) for p in path.iterdir())):
        raise UserError(f"teacher_cache.dir {path} exists and is not a teacher cache; it would be replaced. "
                        f"Choose a new or empty directory")


def _layers_of(path):
    try:
        return json.loads((Path(path) / "manifest.json").read_text()).get("layers", [])
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return []
