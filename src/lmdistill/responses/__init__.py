"""Where training responses come from besides the dataset: the teacher's (sequence-level KD), written once before
training, and the student's own (on-policy), written during training."""
from lmdistill.responses.prepare import check_responses, describe, fit_prompts, make_writer  # noqa: F401
from lmdistill.responses.teacher_written import with_teacher_responses  # noqa: F401
