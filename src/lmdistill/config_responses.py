"""train.responses: where the responses that training runs on come from (the dataset's references, the teacher's
generations, or the student's own, on-policy)."""
from typing import Literal

from pydantic import Field, model_validator

from lmdistill.config_models import Strict
from lmdistill.unused import refuse_unused


class AdaptiveConfig(Strict):
    """DistiLLM's adaptive off-policy approach (Ko et al. 2024, jongwooko/distillm finetune.py): the probability that a
    batch is student-written starts at `start` and rises by `rise` whenever the dev CE has grown by `tolerance` over
    its value at the last rise; student-written examples go to a replay buffer, and a student-written batch is
    either freshly generated or replayed from it."""
    start: float = Field(0.0, ge=0, le=1, description="the initial probability that a batch is student-written")
    rise: float = Field(0.1, gt=0, le=1, description="added to the probability (up to 1) when the dev CE has grown")
    tolerance: float = Field(0.1, ge=0, description="how much the dev CE must grow (nats) for the probability to rise")
    buffer_size: int = Field(1000, gt=0, description="student-written examples kept for replay (the oldest go first)")
    replay: Literal["decreasing", "constant", "increasing"] = Field(
        "decreasing", description="the share of student-written batches that are freshly generated rather than replayed: "
        "decreasing: 1 - step/steps; constant: 1/2; increasing: step/steps (DistiLLM's replay_ratio)")


class ResponsesConfig(Strict):
    source: Literal["dataset", "teacher", "student"] = Field(
        "dataset", description="dataset: the references; teacher: sequence-level KD on the teacher's generations for "
        "the training prompts (made once, cached); student: on-policy, the student writes responses to a batch's "
        "prompts and every objective runs on them (GKD)")
    lmbda: float = Field(1.0, ge=0, le=1, description="source student: the probability that a micro-batch is "
                         "student-written (GKD's lmbda); the others use off_policy's responses")
    off_policy: Literal["dataset", "teacher"] = Field("dataset", description="source student: the responses of the "
                                                      "batches the student does not write")
    adaptive: AdaptiveConfig | None = Field(None, description="source student: DistiLLM's adaptive schedule and replay "
                                            "buffer instead of a fixed lmbda")
    references: float = Field(0.0, ge=0, le=1, description="with the teacher's generations: the share of training "
                               "examples that keep their reference instead")
    max_new_tokens: int = Field(48, gt=0, description="the longest response the writer generates")
    do_sample: bool = True
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)

    @property
    def writes(self):
        """Whether any response is generated (by the student or the teacher)."""
        return self.source != "dataset"

    @property
    def teacher_writes(self):
        return self.source == "teacher" or (self.source == "student" and self.off_policy == "teacher")

    @model_validator(mode="after")
    def _used(self):
        student, sampling = self.source == "student", self.writes and self.do_sample
        refuse_unused(self, [("lmbda", student and self.adaptive is None, "with source: student and no adaptive"),
                             ("off_policy", student, "with source: student"),
                             ("adaptive", student, "with source: student"),
                             ("references", self.teacher_writes, "with the teacher's generations (source: teacher, "
                              "or off_policy: teacher)"),
                             ("max_new_tokens", self.writes, "with source: teacher or student"),
                             ("do_sample", self.writes, "with source: teacher or student"),
                             ("temperature", sampling, "when generating with do_sample: true"),
                             ("top_p", sampling, "when generating with do_sample: true")])
        return self
