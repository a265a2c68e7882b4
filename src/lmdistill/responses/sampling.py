"""Batched generation of responses to a batch's prompts, for training: a KV cache, no gradients, eval mode (the
training mode restored after), and a generator seeded per call so that a resumed run writes what an uninterrupted
one would, without touching the global random state that training uses."""
import numpy as np
import torch

from lmdistill.data.encode import render
from lmdistill.responses.sampler import sampling_processors


def seed_of(*numbers):
    """One 63-bit seed from (seed, step, micro-batch, process, ...)."""
    return int(np.random.SeedSequence(list(numbers)).generate_state(2, np.uint64)[0] >> np.uint64(1))


def left_padded(prompts, pad_id):
    """(input_ids, attention_mask) of lists of prompt ids, padded on the left so every row ends at its prompt."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    return ids, mask


def decoding(do_sample, temperature, top_p):
    """`generate`'s decoding arguments: greedy with the model's own sampling defaults switched off, or sampling over
    the whole vocabulary (no top-k) by our faster sampler (responses/sampler.py), which runs as a logits processor
    under greedy decoding."""
    greedy = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    if do_sample:
        return {**greedy, "logits_processor": sampling_processors(temperature, top_p)}
    return greedy


def synced(model):
    """`generate`'s arguments for a sharded model (train.sharding: fsdp): every process runs forward passes until all
    have finished, since each pass gathers parameters from all of them."""
    from torch.distributed.fsdp import FSDPModule
    sharded = isinstance(model, torch.nn.Module) and any(isinstance(m, FSDPModule) for m in model.modules())
    return {"synced_gpus": True} if sharded else {}


def stop_ids(tokenizer, data_cfg, chat=None):
    """The tokens that end a response: the tokenizer's EOS and the first token that the prompt format writes after a
    response (a chat template's end-of-turn marker, which is not always the EOS token)."""
    _, suffix = render(tokenizer, "x", "", data_cfg, chat)
    first = tokenizer(suffix, add_special_tokens=False)["input_ids"][:1] if suffix else []
    return sorted({tokenizer.eos_token_id, *first} - {None})


@torch.no_grad()
def write(model, prompts, pad_id, stop, cfg, seed, device="cpu"):
    """Per prompt, the ids of a response to it (`cfg`: train.responses), cut after its first stop token."""
    was_training = model.training
    model.eval()
    ids, mask = left_padded(prompts, pad_id)
    sampling = decoding(cfg.do_sample, cfg.temperature, cfg.top_p)
    devices = [torch.device(device).index or 0] if torch.device(device).type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=True,
                                 max_new_tokens=cfg.max_new_tokens, pad_token_id=pad_id, eos_token_id=stop, **sampling,
                                 **synced(model))
    finally:
        model.train(was_training)
    responses = []
    for row in out[:, ids.shape[1]:].tolist():
        end = next((i for i, token in enumerate(row) if token in stop), None)
        responses.append(row if end is None else row[:end + 1])
    return responses
