"""Padding and a deterministic batch order: the micro-batches of step s depend only on (seed, s),
so a resumed run sees exactly the batches an uninterrupted run would."""
import torch

from lmdistill.errors import UserError

IGNORE = -100
# padded tokens per batch of a calibration gradient pass (selection, pruning importance): memory, not speed
CALIBRATION_BATCH_TOKENS = 512


def collate(examples, pad_id):
    """Right-padded input_ids, attention_mask, and labels (IGNORE on prompt and padding)."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, e.n_prompt:n] = ids[i, e.n_prompt:n]
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def in_batches(examples, pad_id, batch_size, device="cpu"):
    """Collated batches of `examples`, in order, on `device`, each with its examples' positions (`index`)."""
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        yield {**_collated(chunk, pad_id, device), "index": torch.arange(start, start + len(chunk), device=device)}


def token_batches(examples, pad_id, max_tokens, device="cpu"):
    """Collated batches of consecutive `examples`, each at most `max_tokens` padded tokens (an example longer
    than that goes alone): a backward pass's memory follows tokens, not examples, so long inputs get small batches."""
    group, width = [], 0
    for e in examples:
        n = len(e.input_ids)
        if group and max(width, n) * (len(group) + 1) > max_tokens:
            yield _collated(group, pad_id, device)
            group, width = [], 0
        group.append(e)
        width = max(width, n)
    if group:
        yield _collated(group, pad_id, device)


def calibration_batches(examples, pad_id, device="cpu"):
    """The batches of a calibration gradient pass (feature selection, pruning importance)."""
    return token_batches(examples, pad_id, CALIBRATION_BATCH_TOKENS, device)


def _collated(examples, pad_id, device):
    return {k: v.to(device) for k, v in collate(examples, pad_id).items()}


class BatchOrder:
    """Reshuffles every epoch with a generator seeded by (seed, epoch); drops the last partial batch."""

    def __init__(self, n_examples, batch_size, grad_accum=1, seed=0, world_size=1, rank=0):
        self.global_batch = batch_size * world_size
        self.per_epoch = n_examples // self.global_batch
        if self.per_epoch == 0:
            raise UserError(f"the training set has {n_examples} examples, fewer than one batch of "
                            f"{self.global_batch}; lower train.batch_size or add data")
        self.n, self.batch_size, self.grad_accum = n_examples, batch_size, grad_accum
        self.seed, self.rank = seed, rank
        self._epoch, self._perm = None, None

    def _permutation(self, epoch):
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=g).tolist()
        return self._perm

    def micro_batch(self, index):
        """This rank's example indices for global micro-batch `index`."""
        epoch, k = divmod(index, self.per_epoch)
        start = k * self.global_batch + self.rank * self.batch_size
        return self._permutation(epoch)[start:start + self.batch_size]

    def step(self, step):
        return [self.micro_batch(step * self.grad_accum + i) for i in range(self.grad_accum)]
