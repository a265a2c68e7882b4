"""The teacher read from its cache (cache.py) instead of run: exact logits (or top-k) and stored hidden states."""
import torch

from lmdistill.errors import UserError
from lmdistill.teachers.base import Teacher
from lmdistill.teachers.cache import load_or_build
from lmdistill.teachers.outputs import ModelOutputs, Request, lm_head_logits, response_positions


class CachedTeacher(Teacher):
    """Batches must carry `index` (their examples' positions in the training split). The model is kept for its LM
    head (logits: head, and the logit lens)."""
    kind = "cache"

    def __init__(self, cache, model):
        self.cache, self.lm = cache, model

    @classmethod
    def refuses(cls, request):
        if request.attention or request.values:
            return "the teacher cache stores no attention logits or value projections; remove teacher_cache"
        return None

    @torch.no_grad()
    def __call__(self, batch, request=Request()):
        why = self.refuses(request)
        if why:  # runs are checked before training (run.check_teacher); this guards other callers
            raise UserError(why)
        if "index" not in batch:
            raise RuntimeError("a cached teacher needs batches that carry their example indices ('index')")
        labels, layers = batch["labels"], set(request.hidden)
        where = response_positions(labels)
        rows = self.cache.rows(batch["index"].tolist())
        if len(rows) != int(where.sum()):
            raise UserError(f"teacher cache {self.cache.path} has {len(rows)} positions for this batch, the batch "
                            f"has {int(where.sum())}; delete the cache directory to rebuild it")
        if self.cache.manifest["logits"] == "topk":
            hidden = self.cache.hidden(rows, sorted(layers), labels.device)
            logits = self.cache.topk_logprobs(rows, labels.device)
        else:
            final = self.lm.config.num_hidden_layers
            hidden = self.cache.hidden(rows, sorted(layers | {final}), labels.device)
            logits = lm_head_logits(self.lm, hidden[final])[:, :self.cache.manifest["vocab_size"]]
            if final not in layers:
                del hidden[final]
        return ModelOutputs(logits, labels[:, 1:][where], hidden, self.lm)


def cached_teacher(cfg, teacher, tokenizer, examples, vocab_size, layers, main_process=True, wait=lambda: None,
                   log=print):
    """The teacher read from the cache `cfg` (config.TeacherCacheConfig) describes, holding `layers` and cfg.layers."""
    return CachedTeacher(shared_cache(cfg, teacher, tokenizer, examples, vocab_size, layers, main_process, wait, log),
                         teacher)


def shared_cache(cfg, teacher, tokenizer, examples, vocab_size, layers, main_process=True, wait=lambda: None,
                 log=print, student_tokenizer=None):
    """The cache `cfg` describes over `examples`, holding `layers` and cfg.layers. Only the main process builds a
    missing or stale cache; `wait` is the barrier the others wait at."""
    args = (cfg.dir, teacher, tokenizer, examples, vocab_size, sorted(set(layers) | set(cfg.layers)), cfg.settings())
    if main_process:
        cache = load_or_build(*args, log=log, student_tokenizer=student_tokenizer)
    wait()
    if not main_process:
        cache = load_or_build(*args, log=log, build_allowed=False, student_tokenizer=student_tokenizer)
    return cache
