"""A training step's micro-batches: the dataset's examples, or the responses the student writes to their prompts."""
import torch

from lmdistill.data import collate
from lmdistill.responses.cross import batch_paired, paired_example


def collate_on(examples, pad_id, device):
    return {key: value.to(device) for key, value in collate(examples, pad_id).items()}


def micro_batches(split, indices, pad_id, device, writer=None, model=None, step=0, writing=None):
    """One batch per list of example indices of `split`. With a `writer` (responses.StudentWriter) it decides which
    batches the student (`model()`, called when needed) writes, inside the context `writing()`; with a teacher that has another tokenizer, every
    batch then carries its own encoding for the teacher (`paired`, rows in batch order)."""
    batches = []
    for k, idx in enumerate(indices):
        if writer is None:
            batches.append({**collate_on([split.examples[i] for i in idx], pad_id, device), "index": torch.tensor(idx)})
            continue
        chosen = [paired_example(split.paired, i) for i in idx] if split.paired is not None \
            else [split.examples[i] for i in idx]
        with writing():
            chosen = writer.examples(model(), step, k, chosen)
        batch = {**collate_on(chosen, pad_id, device), "index": torch.tensor(idx)}
        if split.paired is not None:
            batch |= {"paired": batch_paired(chosen), "index": torch.arange(len(chosen))}
        batches.append(batch)
    return batches
