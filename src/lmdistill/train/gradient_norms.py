"""What gradnorm weighting measures: each objective's gradient norm (of its per-token loss) at the student
parameters every objective reaches, on the step's first global micro-batch (every process's first micro-batch
together), so its weights equal one process's with the same global batch."""
import torch

from lmdistill.train.sharding import square_sum


def objective_gradient_norms(trainer, step, batch):
    """(gradient norm per objective, loss per objective); None for an objective its schedule switches off."""
    acc, model = trainer.accelerator, trainer.unwrapped  # unwrapped: these gradients never enter DDP's buckets
    params = [p for p in model.parameters() if p.requires_grad]
    with acc.autocast():
        s, t = trainer._forward(model, batch)
        tokens = acc.reduce(torch.tensor(len(s.targets), device=acc.device), "sum").item()
        losses = [o.loss(s, t, batch) / max(tokens, 1) if active else None
                  for o, active in zip(trainer.objectives, trainer.weighting.on(step))]
    values = [None if l is None else acc.reduce(l.detach().float(), "sum").item() for l in losses]
    if trainer.sharded:
        return _sharded_norms(losses, params, model, acc.num_processes), values
    grads = [torch.autograd.grad(l, params, retain_graph=True, allow_unused=True) if l is not None else None
             for l in losses]
    shared = _shared(grads, len(params))
    norms = [None if g is None else  # of the global micro-batch's gradient: every process's summed
             acc.reduce(torch.cat([g[j].float().flatten() for j in shared if g[j] is not None]), "sum").norm().item()
             for g in grads]
    return norms, values


def _shared(grads, n):
    """Indices of the parameters every measured objective reaches; all of them when none is reached by all."""
    measured = [g for g in grads if g is not None]
    shared = [j for j in range(n) if all(g[j] is not None for g in measured)]
    return shared or range(n)


def _sharded_norms(losses, params, model, num_processes):
    """The norms under FSDP: one backward per objective, so FSDP reduce-scatters each objective's gradient into the
    shards (averaged over processes: times the process count makes the global sum), read, then cleared."""
    model.set_requires_gradient_sync(True)
    shards = []
    for l in losses:
        if l is None:
            shards.append(None)
            continue
        l.backward(retain_graph=True)
        shards.append([None if p.grad is None else p.grad.to_local().float().flatten() * num_processes
                       for p in params])
        for p in params:
            p.grad = None
    shared = _shared(shards, len(params))
    return [None if g is None else square_sum([g[j] for j in shared if g[j] is not None]).sqrt().item()
            for g in shards]
