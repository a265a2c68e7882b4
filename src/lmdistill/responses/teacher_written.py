"""Sequence-level KD (Kim & Rush 2016): the teacher's own responses to the training prompts replace the references
(all of them, or all but a share `references`), and training runs on them as on any dataset.

They are generated once and kept in $LMDISTILL_CACHE/teacher-responses/, in a file named by the hash of everything
they depend on (the teacher's weights, its tokenizer, the prompts, the generation settings) that also holds a sha256
of the responses. A file is used only when both match; it is written under a temporary name and renamed, by the main
process while the others wait.
"""
import hashlib
import json
import random
from dataclasses import replace
from pathlib import Path

from lmdistill.io import atomic_write_json
from lmdistill.models.builtin import cache_root
from lmdistill.progress import bar
from lmdistill.provenance import data_fingerprint, model_fingerprint, tokenizer_fingerprint
from lmdistill.responses import sampling

FORMAT = 1
BATCH = 16  # prompts per generate call; part of the identity (padding can move greedy ties)


def identity(teacher, tokenizer, prompts, cfg, seed):
    settings = {"max_new_tokens": cfg.max_new_tokens, "do_sample": cfg.do_sample}
    if cfg.do_sample:
        settings |= {"temperature": cfg.temperature, "top_p": cfg.top_p, "seed": seed}
    return {"format": FORMAT, "teacher_fingerprint": model_fingerprint(teacher),
            "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer), "prompts_fingerprint": data_fingerprint(prompts),
            "prompts": len(prompts), "batch": BATCH, **settings}


def cache_path(ident):
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]
    return cache_root() / "teacher-responses" / f"{key}.json"


def content_hash(responses):
    return hashlib.sha256(json.dumps(responses, ensure_ascii=False).encode()).hexdigest()


def load(path, ident):
    """The responses kept at `path`, or None when there are none, or they are for something else, or damaged."""
    try:
        kept = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if kept.get("identity") != ident or kept.get("sha256") != content_hash(kept.get("responses")):
        return None
    return kept["responses"]


def generate_all(teacher, tokenizer, prompts, stop, cfg, seed, device):
    """[text, ended] of the teacher's response to each prompt (Example: its prompt ids)."""
    out = []
    batches = range(0, len(prompts), BATCH)
    for b in bar(batches, desc="teacher responses"):
        chunk = [e.input_ids[:e.n_prompt] for e in prompts[b:b + BATCH]]
        for ids in sampling.write(teacher, chunk, tokenizer.pad_token_id, stop, cfg, sampling.seed_of(seed, b), device):
            ended = bool(ids) and ids[-1] in stop
            out.append([tokenizer.decode(ids, skip_special_tokens=True).strip(), ended])
    return out


def teacher_responses(parts, device="cpu", log=print, main_process=True, wait=lambda: None):
    """The teacher's [text, ended] for each training example, from the cache or generated (and cached)."""
    config, responses = parts.config, parts.config.train.responses
    tokenizer, prompts = parts.teacher_tokenizer or parts.tokenizer, parts.teacher_examples("train")
    ident = identity(parts.teacher, tokenizer, prompts, responses, config.seed)
    path = cache_path(ident)
    if main_process and load(path, ident) is None:
        stop = sampling.stop_ids(tokenizer, config.data, config.teacher.use_chat_template)
        log(f"generating the teacher's responses to {len(prompts)} training prompts -> {path}")
        written = generate_all(parts.teacher.to(device), tokenizer, prompts, stop, responses, config.seed, device)
        atomic_write_json(path, {"identity": ident, "sha256": content_hash(written), "responses": written})
    wait()
    kept = load(path, ident)
    if kept is None:
        raise RuntimeError(f"the teacher's responses at {path} could not be read back")
    log(f"teacher responses: {path}")
    return kept


def with_teacher_responses(parts, device="cpu", log=print, main_process=True, wait=lambda: None):
    """The parts with the training split re-encoded on the teacher's responses (when train.responses asks for them):
    a share `references` of the examples, drawn with the run's seed, keeps its reference, and so does every example
    whose teacher response did not end within max_new_tokens (a cut response would teach the student to stop there)."""
    from lmdistill.build import encode_like
    responses = parts.config.train.responses
    if not responses.teacher_writes:
        return parts
    written = teacher_responses(parts, device, log, main_process, wait)
    examples = parts.teacher_examples("train")
    keep = set(random.Random(parts.config.seed).sample(range(len(examples)), round(responses.references * len(examples))))
    use = [ended and i not in keep for i, (_, ended) in enumerate(written)]
    records = [{"prompt": e.prompt, "response": text if teacher else e.response}
               for e, (text, _), teacher in zip(examples, written, use)]
    unfinished = sum(not ended for i, (_, ended) in enumerate(written) if i not in keep)
    log(f"train: {sum(use)} of {len(records)} examples on the teacher's responses; {len(keep)} keep their reference "
        f"(train.responses.references) and {unfinished} more because the teacher's response did not end within "
        f"max_new_tokens {responses.max_new_tokens}")
    split = encode_like(parts, "train", records)
    return replace(parts, splits={**parts.splits, "train": split})
