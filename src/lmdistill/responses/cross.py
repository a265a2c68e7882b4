"""Student-written responses for a teacher with another tokenizer: the student's text is encoded again for both
models, as any dataset response is (crosstok.encode), so the teacher reads it in its own tokens and the two are
aligned by character offsets. A response that the student did not end is cut where its text ends on both sides
(the encoding would add an end-of-response marker the student never wrote)."""
from dataclasses import dataclass

from lmdistill.crosstok.encode import Paired
from lmdistill.data.encode import EncodeStats, Example
from lmdistill.errors import UserError


@dataclass
class PairedExample(Example):
    """A student example with its teacher-side encoding and their alignment groups (crosstok.encode.Paired's row)."""
    teacher: Example = None
    groups: list = None


def paired_example(paired, i):
    return PairedExample(*vars(paired.student[i]).values(), teacher=paired.teacher[i], groups=paired.groups[i])


def batch_paired(examples):
    """A Paired of a micro-batch's PairedExamples, rows in batch order."""
    return Paired(list(examples), [e.teacher for e in examples], [e.groups for e in examples], EncodeStats())


def cut_to_text(paired):
    """The one example of `paired` without the end-of-response tokens after its text."""
    (n_t, n_s), student, teacher = paired.text_tokens[0], paired.student[0], paired.teacher[0]
    groups = [g for g in paired.groups[0] if g[1] <= n_t and g[3] <= n_s]
    return PairedExample(student.input_ids[:student.n_prompt + n_s], student.n_prompt, student.prompt, student.response,
                         teacher=Example(teacher.input_ids[:teacher.n_prompt + n_t], teacher.n_prompt, teacher.prompt,
                                         teacher.response), groups=groups)


class PairedWriting:
    """(dataset PairedExamples, the student's response ids) -> PairedExamples of its responses; a response that
    cannot be encoded for both models (a tokenizer that would not reproduce its text) keeps the dataset's example,
    and is counted in `refused`."""
    def __init__(self, encoder, tokenizer, stop):
        self.encoder, self.tokenizer, self.stop = encoder, tokenizer, set(stop)
        self.refused = 0

    def __call__(self, examples, responses):
        out = []
        for e, ids in zip(examples, responses):
            text = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
            try:
                paired = self.encoder([{"prompt": e.prompt, "response": text}])
            except UserError:
                self.refused += 1
                out.append(e)
                continue
            ended = bool(ids) and ids[-1] in self.stop
            out.append(paired_example(paired, 0) if ended else cut_to_text(paired))
        return out
