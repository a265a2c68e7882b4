"""The teacher model itself, run on every batch without gradients: it can answer any request."""
import torch

from lmdistill.teachers.base import Teacher
from lmdistill.teachers.outputs import Request
from lmdistill.teachers.response_lm import ResponseLM


class OnlineTeacher(Teacher):
    kind = "online"

    def __init__(self, model, vocab_size):
        self.model = ResponseLM(model, vocab_size)
        self.lm = model

    @torch.no_grad()
    def __call__(self, batch, request=Request()):
        return self.model(batch["input_ids"], batch["attention_mask"], batch["labels"], request)
