import math

import torch


def warmup_cosine(optimizer, warmup_steps, total_steps, min_lr_ratio):
    """Linear warmup to the base lr, then cosine decay to min_lr_ratio * base lr at total_steps."""
    def factor(step):
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
