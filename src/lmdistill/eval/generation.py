"""Batched generation from prompt ids (left-padded), greedy or sampled with a seed."""
import torch

from lmdistill.progress import bar
from lmdistill.responses.sampling import decoding, left_padded, synced


@torch.no_grad()
def generate(model, tokenizer, prompts, max_new_tokens, batch_size, do_sample=False, temperature=1.0,
             top_p=1.0, seed=0, device="cpu"):
    """(texts, ended): the decoded continuation (special tokens removed) of each list of prompt ids, and whether it
    ended with an end-of-text token before max_new_tokens."""
    model.eval()
    pad = tokenizer.pad_token_id
    outputs, ended = [], []
    torch.manual_seed(seed)
    for start in bar(range(0, len(prompts), batch_size), desc="generating"):
        chunk = prompts[start:start + batch_size]
        ids, mask = left_padded(chunk, pad)
        width = ids.shape[1]
        sampling = decoding(do_sample, temperature, top_p)
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                             pad_token_id=pad, eos_token_id=tokenizer.eos_token_id, **sampling, **synced(model))
        new = out[:, width:].cpu()
        outputs += tokenizer.batch_decode(new, skip_special_tokens=True)
        eos = tokenizer.eos_token_id  # generate stops there, then pads
        ended += [False] * len(chunk) if eos is None else (new == eos).any(1).tolist()
    return [o.strip() for o in outputs], ended

