"""Progress bars (with ETA) for work that takes minutes outside training: the teacher cache, generation. Shown by the
first process only."""
import torch.distributed as dist
from tqdm.auto import tqdm


def bar(iterable, total=None, desc=None):
    first = not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
    return tqdm(iterable, total=total, desc=desc, dynamic_ncols=True, mininterval=1.0, disable=not first)
