"""The teacher side: what a model returns (outputs.py), the response-only LM (response_lm.py), attention capture
(capture.py), the `Teacher` interface (base.py) and its kinds: online.py (run every batch), cached.py (read from
the cache cache.py builds). A new kind of teacher is a new `Teacher` subclass in a new file."""
from lmdistill.teachers.base import Teacher
from lmdistill.teachers.online import OnlineTeacher
from lmdistill.teachers.outputs import ModelOutputs, Request, response_positions
from lmdistill.teachers.response_lm import ResponseLM

__all__ = ["Teacher", "OnlineTeacher", "ModelOutputs", "Request", "ResponseLM", "response_positions"]
