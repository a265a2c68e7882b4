"""The teacher computed once: top-k log-probabilities (+ the log-mass of the rest) and hidden states at response
positions of every training example, in memory-mapped .npy files with a manifest.

The manifest binds the files to the teacher (weights fingerprint), tokenizer, encoded data, vocabulary, top-k,
storage dtype and layer set, and records each file's size and sha256. `open_cache` checks all of it; anything
that does not match (or a missing, truncated or altered file) is rebuilt, never used. The directory is
written to a temporary name and renamed into place, so a killed build leaves nothing that looks finished.

A cached teacher answers like the online one (`forward.ModelOutputs`): its logits are log-probabilities with
the top k exact and the rest of the mass spread evenly over the other tokens; hidden states are the stored
ones (float16 by default). How far each objective moves from its online value: benchmarks/cache_fidelity.py.
"""
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import torch

from lmdistill.data import IGNORE, in_batches
from lmdistill.errors import UserError
from lmdistill.features.artifact import data_fingerprint, model_fingerprint
from lmdistill.forward import ModelOutputs, ResponseLM
from lmdistill.io import atomic_dir, atomic_write_json

FORMAT = "lmdistill-teacher-cache-1"
NP_DTYPES = {"float16": np.float16, "float32": np.float32}


class StaleCache(Exception):
    """The cache at a path cannot be used for this run; the message says why."""


def tokenizer_fingerprint(tokenizer):
    h = hashlib.sha256()
    h.update(json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False).encode())
    h.update(json.dumps([tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id,
                         getattr(tokenizer, "chat_template", None)], default=str).encode())
    return h.hexdigest()[:16]


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def identity(teacher, tokenizer, examples, vocab_size, top_k, hidden_dtype):
    """What a cache must have been built from to be used (besides holding the needed layers)."""
    return {"format": FORMAT, "teacher": teacher.config.name_or_path, "teacher_fingerprint": model_fingerprint(teacher),
            "teacher_dtype": str(next(teacher.parameters()).dtype).removeprefix("torch."),
            "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer), "data_fingerprint": data_fingerprint(examples),
            "examples": len(examples), "vocab_size": vocab_size, "top_k": top_k, "hidden_dtype": hidden_dtype}


def response_rows(example):
    """Number of positions of `example` that predict a response token."""
    return len(example.input_ids) - max(example.n_prompt, 1)


def build(path, teacher, tokenizer, examples, vocab_size, layers, top_k=64, hidden_dtype="float16", batch_size=16,
          log=print):
    """Run the teacher over `examples` once and write the cache directory at `path` (atomically)."""
    if not 0 < top_k <= vocab_size:
        raise UserError(f"teacher_cache.top_k must be between 1 and the vocabulary size {vocab_size}, got {top_k}")
    layers = sorted(set(layers))
    meta = identity(teacher, tokenizer, examples, vocab_size, top_k, hidden_dtype)
    counts = [response_rows(e) for e in examples]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    n, width = int(offsets[-1]), teacher.config.hidden_size
    device = next(teacher.parameters()).device
    model = ResponseLM(teacher, vocab_size)
    log(f"teacher cache: {len(examples)} examples, {n} response positions, top-{top_k} + rest, hidden layers "
        f"{layers} as {hidden_dtype} -> {path}")
    with atomic_dir(path) as tmp:
        arrays = {"offsets": offsets}
        mm = {"topk_logprobs": np.lib.format.open_memmap(tmp / "topk_logprobs.npy", "w+", np.float32, (n, top_k)),
              "topk_ids": np.lib.format.open_memmap(tmp / "topk_ids.npy", "w+", np.int32, (n, top_k)),
              "rest_logmass": np.lib.format.open_memmap(tmp / "rest_logmass.npy", "w+", np.float32, (n,))}
        for layer in layers:
            mm[f"hidden_{layer}"] = np.lib.format.open_memmap(tmp / f"hidden_{layer}.npy", "w+",
                                                              NP_DTYPES[hidden_dtype], (n, width))
        row = 0
        with torch.no_grad():
            for batch in in_batches(examples, tokenizer.pad_token_id, batch_size, device):
                out = model(batch["input_ids"], batch["attention_mask"], batch["labels"], tuple(layers))
                logprobs = torch.log_softmax(out.logits.float(), dim=-1)
                values, ids = logprobs.topk(top_k, dim=-1)
                end = row + len(values)
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
        np.save(tmp / "offsets.npy", arrays["offsets"])
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

    def outputs(self, indices, layers=(), device="cpu"):
        """(dense log-probs [N, V], {layer: hidden [N, d] float32}) for the examples `indices`, in batch order."""
        rows = self.rows(indices)
        top = torch.from_numpy(np.ascontiguousarray(self.arrays["topk_logprobs"][rows])).to(device)
        ids = torch.from_numpy(np.ascontiguousarray(self.arrays["topk_ids"][rows])).long().to(device)
        rest = torch.from_numpy(np.ascontiguousarray(self.arrays["rest_logmass"][rows])).to(device)
        vocab, k = self.manifest["vocab_size"], self.manifest["top_k"]
        others = max(vocab - k, 1)
        logits = (rest - math.log(others)).unsqueeze(1).expand(len(rows), vocab).clone()
        logits.scatter_(1, ids, top)
        hidden = {layer: torch.from_numpy(np.ascontiguousarray(self.arrays[f"hidden_{layer}"][rows])).float().to(device)
                  for layer in layers}
        return logits, hidden


class CachedTeacher:
    """Same call as `forward.OnlineTeacher`; batches must carry `index` (their examples' positions in the split).
    The model is kept for objectives that use the teacher's own LM head (the logit lens)."""

    def __init__(self, cache, model):
        self.cache, self.lm = cache, model

    @torch.no_grad()
    def __call__(self, batch, layers=()):
        if "index" not in batch:
            raise RuntimeError("a cached teacher needs batches that carry their example indices ('index')")
        labels = batch["labels"]
        where = labels[:, 1:] != IGNORE
        logits, hidden = self.cache.outputs(batch["index"].tolist(), layers, labels.device)
        if len(logits) != int(where.sum()):
            raise UserError(f"teacher cache {self.cache.path} has {len(logits)} positions for this batch, the batch "
                            f"has {int(where.sum())}; delete the cache directory to rebuild it")
        return ModelOutputs(logits, labels[:, 1:][where], hidden, self.lm)


def load_or_build(path, teacher, tokenizer, examples, vocab_size, layers, top_k, hidden_dtype, log=print,
                  build_allowed=True):
    """A matching cache at `path`, rebuilt first (with the union of its layers and `layers`) when stale."""
    expected = identity(teacher, tokenizer, examples, vocab_size, top_k, hidden_dtype)
    try:
        cache = open_cache(path, expected, layers)
        log(f"teacher cache: using {path} ({cache.manifest['rows']} positions, layers {cache.manifest['layers']})")
        return cache
    except StaleCache as why:
        if not build_allowed:
            raise
        if Path(path).exists():
            log(f"teacher cache: rebuilding, {why}")
        old_layers = _layers_of(path)
        build(path, teacher, tokenizer, examples, vocab_size, sorted(set(layers) | set(old_layers)), top_k,
              hidden_dtype, log=log)
    return open_cache(path, expected, layers)


def _layers_of(path):
    try:
        return json.loads((Path(path) / "manifest.json").read_text()).get("layers", [])
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return []
