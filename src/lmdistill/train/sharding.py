"""train.sharding: fsdp. The student and the online teacher are sharded across the launched processes with torch's
FSDP2 (`fully_shard`): each process keeps 1/N of every parameter, gradient and optimizer state and gathers a unit's
parameters only while that unit runs.

Units: every decoder layer; the input and output embeddings together (they may be one tied tensor); and the
`ResponseLM` wrapper as the root, which holds what is left (the final norm). The wrapper is the root because the
models are called piecewise (the body, then the head at response positions only)."""
import weakref
from contextlib import contextmanager

import torch
from lmdistill.errors import UserError


def check_sharding(config, num_processes):
    """Bad sharding input, refused before the run writes anything."""
    if config.train.sharding != "fsdp":
        return
    if num_processes < 2:
        raise UserError("train.sharding: fsdp shards the models across processes, but this run has 1; launch it with "
                        "`accelerate launch --num_processes N` or `torchrun --nproc_per_node N`, or set "
                        "train.sharding: none")


def decoder_layers(lm):
    """The decoder layers of a Hugging Face causal LM: the modules of the classes it names as not to be split."""
    names = set(getattr(lm, "_no_split_modules", None) or ())
    layers = [m for m in lm.modules() if type(m).__name__ in names]
    if not layers:
        raise UserError(f"train.sharding: fsdp cannot find the decoder layers of {type(lm).__name__} (no module of "
                        f"the classes {sorted(names) or 'it declares in _no_split_modules'}); set train.sharding: none")
    return layers


# model -> the ResponseLM that is the root of its units. Other wrappers of the same model (a teacher reading another
# split's encoding, teacher-scored evaluation) bypass the root's forward, so they gather its parameters (root_of).
_ROOTS = weakref.WeakKeyDictionary()


def root_of(lm):
    """The ResponseLM that is the root of a sharded model's units; None when the model is not sharded."""
    return _ROOTS.get(lm)


def shard(response_lm, mesh=None):
    """Shard a ResponseLM in place (see the module docstring for the units); returns it."""
    from torch.distributed.fsdp import fully_shard
    lm = response_lm.lm
    for layer in decoder_layers(lm):
        fully_shard(layer, mesh=mesh)
    embeddings = [m for m in (lm.get_input_embeddings(), lm.get_output_embeddings()) if m is not None]
    fully_shard(list(dict.fromkeys(embeddings)), mesh=mesh)
    fully_shard(response_lm, mesh=mesh)
    _ROOTS[lm] = response_lm
    # FSDP picks its root at the first call; generate (on-policy writing) may come first and reach the embeddings
    # before the wrapper, so the wrapper is made the root now
    response_lm._get_fsdp_state()._lazy_init()
    return response_lm


def shard_models(student_lm, teacher_lm, num_processes, log=print):
    """Shard the student's and the teacher's ResponseLM and say how much of each this process holds."""
    shard(student_lm)
    shard(teacher_lm)
    (s_held, s_all), (t_held, t_all) = held(student_lm), held(teacher_lm)
    log(f"sharding: fsdp over {num_processes} processes; this one holds {s_held / 1e6:.2f}M of the student's "
        f"{s_all / 1e6:.2f}M parameters and {t_held / 1e6:.2f}M of the teacher's {t_all / 1e6:.2f}M")


def held(module):
    """(parameters this process holds, parameters in all) of a possibly sharded module."""
    from torch.distributed.tensor import DTensor
    params = list(module.parameters())
    return (sum((p.to_local() if isinstance(p, DTensor) else p).numel() for p in params),
            sum(p.numel() for p in params))


def is_sharded(module):
    from torch.distributed.fsdp import FSDPModule
    return isinstance(module, FSDPModule)


class _AverageGrad(torch.autograd.Function):
    """Identity forward; divides the gradient by the process count (FSDP averages gradients over processes)."""

    @staticmethod
    def forward(ctx, x, n):
        ctx.n = n
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad / ctx.n, None


def gathered(tensor):
    """A sharded (DTensor) parameter gathered whole on this process, for calls outside its unit's forward (the logit
    lens reads the LM head). Its gradient is reduce-scattered back into the shards' .grad, averaged over processes
    as FSDP's own are; collective when sharded. Any other tensor is returned as it is."""
    from torch.distributed.tensor import DTensor, Partial
    if not isinstance(tensor, DTensor):
        return tensor
    full = tensor.full_tensor(grad_placements=[Partial()] * tensor.device_mesh.ndim)
    return _AverageGrad.apply(full, tensor.device_mesh.size()) if full.requires_grad else full


def call_gathered(module, *args):
    """module(*args) with its sharded parameters gathered (`gathered`), for a module that is part of a unit but
    called outside the unit's forward (the final norm for the logit lens)."""
    params = dict(module.named_parameters())
    if not any(type(p).__name__ == "DTensor" for p in params.values()):
        return module(*args)
    return torch.func.functional_call(module, {name: gathered(p) for name, p in params.items()}, args)


_GATHERED = weakref.WeakKeyDictionary()  # root -> how many gathered_root contexts hold it


@contextmanager
def gathered_root(response_lm):
    """The root unit's own parameters gathered, for calls that bypass its forward (generate on the wrapped LM, another
    wrapper of the model); nested uses keep them gathered until the outermost ends."""
    if response_lm is None or not is_sharded(response_lm):
        yield
        return
    depth = _GATHERED.get(response_lm, 0)
    if depth == 0:
        response_lm.unshard()
    _GATHERED[response_lm] = depth + 1
    try:
        yield
    finally:
        _GATHERED[response_lm] = depth
        if depth == 0:
            response_lm.reshard()


def full_state_dict(module):
    """The full (unsharded) state dict of a sharded module, on the CPU of the main process (empty elsewhere), with a
    tied tensor under its first name only, as save_pretrained expects; collective: every process must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    full = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    keep = {name for name, _ in module.named_parameters()} | {name for name, _ in module.named_buffers()}
    return {k: v for k, v in full.items() if k in keep}


def square_sum(local_shards):
    """The sum of squares, in float64, of the tensors whose shards these are, over every process (collective)."""
    square = torch.zeros((), dtype=torch.float64)
    for g in local_shards:
        square += g.double().pow(2).sum()
    torch.distributed.all_reduce(square)
    return square


def grad_norm_and_clip(params, max_norm):
    """The global gradient norm of sharded (DTensor) and replicated parameters together, clipped to max_norm;
    returns the norm before clipping. Replicated gradients are already averaged, so they count once."""
    from torch.distributed.tensor import DTensor
    grads = [p.grad for p in params if p.grad is not None]
    sharded = [g.to_local() for g in grads if isinstance(g, DTensor)]
    square = square_sum(sharded) if sharded else torch.zeros((), dtype=torch.float64)
    for g in grads:
        if not isinstance(g, DTensor):
            square += g.double().pow(2).sum()
    norm = square.sqrt().item()
    scale = max_norm / (norm + 1e-6)  # as torch.nn.utils.clip_grad_norm_
    if scale < 1:
        for g in grads:
            g.mul_(scale)
    return norm

