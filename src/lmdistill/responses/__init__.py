"""Where training responses come from besides the dataset: the student's own (on-policy), written during training."""
from lmdistill.responses.prepare import check_responses, fit_prompts, make_writer  # noqa: F401
