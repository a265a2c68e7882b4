"""A teacher with its own tokenizer, run on its own encoding of the batch's examples (crosstok.encode).

It answers at its own response positions: no logits (a large vocabulary: the objectives apply its LM head to `final`
one chunk at a time), the hidden states asked for, and the batch's alignment of its rows with the student's
(`ModelOutputs.alignment`), which is all an objective needs to compare the two."""
import torch

from lmdistill.crosstok.rows import batch_alignment
from lmdistill.data import collate
from lmdistill.teachers.base import Teacher
from lmdistill.teachers.outputs import Request, response_positions
from lmdistill.teachers.response_lm import ResponseLM


class CrossTokenizerTeacher(Teacher):
    """Batches must carry `index`: their examples' positions in the split `paired` (a crosstok.encode.Paired) encodes."""
    kind = "online, own tokenizer"

    def __init__(self, model, vocab_size, pad_id, paired):
        self.model = ResponseLM(model, vocab_size, logits=False)
        self.lm, self.vocab_size, self.pad_id, self.paired = model, vocab_size, pad_id, paired

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
        index, device = batch["index"].tolist(), batch["input_ids"].device
        own = {k: v.to(device) for k, v in collate([self.paired.teacher[i] for i in index], self.pad_id).items()}
        out = self.model(own["input_ids"], own["attention_mask"], own["labels"], request)
        out.alignment = batch_alignment([self.paired.groups[i] for i in index],
                                        response_positions(own["labels"]).sum(1).tolist(),
                                        response_positions(batch["labels"]).sum(1).tolist(), device)
        return out
