"""A teacher with its own tokenizer, run on its own encoding of the batch's examples (crosstok.encode), or read from
a teacher cache built over that encoding.

It answers at its own response positions: no logits (a large vocabulary: the objectives apply its LM head to `final`
one chunk at a time), the hidden states asked for, and the batch's alignment of its rows with the student's
(`ModelOutputs.alignment`), which is all an objective needs to compare the two."""
import torch

from lmdistill.crosstok.rows import batch_alignment
from lmdistill.data import collate
from lmdistill.teachers.base import Teacher
from lmdistill.errors import UserError
from lmdistill.teachers.outputs import ModelOutputs, Request, response_positions
from lmdistill.teachers.response_lm import ResponseLM


class CrossTokenizerTeacher(Teacher):
    """Batches must carry `index`: their examples' positions in the split `paired` (a crosstok.encode.Paired) encodes,
    or their own `paired` (text the student wrote, encoded for both: rows in batch order). With a `cache` (teachers.cache.TeacherCache over paired.teacher, logits: head) it reads instead of running."""
    kind = "online, own tokenizer"

    def __init__(self, model, vocab_size, pad_id, paired, cache=None):
        self.model = ResponseLM(model, vocab_size, logits=False)
        self.lm, self.vocab_size, self.pad_id, self.paired, self.cache = model, vocab_size, pad_id, paired, cache
        if cache is not None:
            self.kind = "cache, own tokenizer"

    @classmethod
    def refuses(cls, request):
        if request.attention or request.values:
            return ("attention logits and value projections are maps over tokens, and the two tokenizations have "
                    "different tokens; remove")
        return None

    @torch.no_grad()
    def __call__(self, batch, request=Request()):
        if "index" not in batch:
            raise RuntimeError("a cross-tokenizer teacher needs batches that carry their example indices ('index')")
        index, device, paired = batch["index"].tolist(), batch["input_ids"].device, batch.get("paired", self.paired)
        own = {k: v.to(device) for k, v in collate([paired.teacher[i] for i in index], self.pad_id).items()}
        out = self.model(own["input_ids"], own["attention_mask"], own["labels"], request) if self.cache is None \
            else self.read(index, own["labels"], request)
        out.alignment = batch_alignment([paired.groups[i] for i in index],
                                        response_positions(own["labels"]).sum(1).tolist(),
                                        response_positions(batch["labels"]).sum(1).tolist(), device)
        return out

    def read(self, index, labels, request):
        """The cache's rows of these examples, as the model would answer."""
        where = response_positions(labels)
        rows = self.cache.rows(index)
        if len(rows) != int(where.sum()):
            raise UserError(f"teacher cache {self.cache.path} has {len(rows)} positions for this batch, the batch "
                            f"has {int(where.sum())}; delete the cache directory to rebuild it")
        final = self.lm.config.num_hidden_layers
        hidden = self.cache.hidden(rows, sorted(set(request.hidden) | {final}), labels.device)
        last = hidden[final] if final in request.hidden else hidden.pop(final)
        return ModelOutputs(None, labels[:, 1:][where], hidden, self.lm, where=where, final=last)
