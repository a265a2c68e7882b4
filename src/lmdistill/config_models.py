"""The config sections about models: the teacher, the student (pretrained, fresh from a spec, or cut from the
teacher) and the teacher cache. Part of the one schema in config.py, which re-exports them."""
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lmdistill.unused import refuse_unused


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StudentSpec(Strict):
    """A fresh student built from scratch; it shares the teacher's tokenizer."""
    arch: Literal["llama"] = "llama"
    hidden_size: int = Field(256, gt=0)
    num_layers: int = Field(6, gt=0)
    num_heads: int = Field(4, gt=0)
    num_kv_heads: int | None = Field(None, gt=0, description="default: num_heads")
    intermediate_size: int | None = Field(None, gt=0, description="default: 8/3 * hidden_size, rounded up to 64")
    tie_word_embeddings: bool = True

    @model_validator(mode="after")
    def _heads_divide(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}; "
                             f"choose num_heads from {[h for h in range(1, 33) if self.hidden_size % h == 0]}")
        kv = self.num_kv_heads or self.num_heads
        if self.num_heads % kv:
            raise ValueError(f"num_heads {self.num_heads} is not divisible by num_kv_heads {kv}")
        return self


class FromTeacher(Strict):
    """A student cut from the teacher: some of its decoder layers and its most important residual dimensions
    (all heads and the full MLP width stay). Checked against the teacher when the student is built."""
    layers: int | list[int] = Field(8, description="K evenly spaced layers (first and last included), "
                                                   "or a list of 0-based decoder layer indices")
    hidden_size: int | None = Field(None, gt=0, description="residual width kept, at most the teacher's and a "
                                    "multiple of its attention heads; default: 256 rounded down to such a multiple "
                                    "(252 for SmolLM2-135M's 9 heads)")
    importance: Literal["activation", "flexkd", "functional"] = "activation"
    calibration_examples: int = Field(256, gt=0, description="the first N training examples score the dimensions")

    @field_validator("layers")
    @classmethod
    def _layers(cls, value):
        if isinstance(value, int):
            if value < 2:
                raise ValueError("give at least 2 layers (the first and last are always kept) or a list of indices")
        elif not value or value[0] < 0 or value != sorted(set(value)):
            raise ValueError("give a non-empty list of distinct 0-based layer indices in increasing order")
        return value


DType = Literal["float32", "bfloat16", "float16"]


CHAT = ("render prompts with this model's chat template when its tokenizer has one, else as plain text; default: "
        "data.use_chat_template")


class TeacherConfig(Strict):
    model: str = Field("smollm2-135m-instruct", description="hub id, local directory, .gguf file or built-in name")
    dtype: DType = "float32"
    revision: str | None = None
    trust_remote_code: bool = False
    use_chat_template: bool | None = Field(None, description=CHAT)


class CacheSettings(Strict):
    """How the teacher cache stores the teacher's outputs (see teachers/cache.py)."""
    logits: Literal["head", "topk"] = Field("head", description="head: store the final hidden state (float32) and "
                                            "apply the teacher's LM head when training (exact); topk: store the top_k "
                                            "log-probs and the rest's mass, spread evenly (smaller, approximate)")
    top_k: int = Field(256, gt=0, description="log-probabilities kept per position (logits: topk)")
    hidden_dtype: Literal["float16", "float32"] = Field("float16", description="storage of the hidden states the "
                                                        "feature and lens objectives read")

    @model_validator(mode="after")
    def _used(self):
        refuse_unused(self, [("top_k", self.logits == "topk", "with logits: topk")])
        return self


class TeacherCacheConfig(CacheSettings):
    """Compute the teacher once over the training set and train from the stored outputs."""
    dir: str = Field(..., description="cache directory; built when missing or stale, reused when it matches")
    layers: list[int] = Field(default_factory=list, description="teacher hidden_states to store besides those "
                              "this run's objectives need (compare stores every method's)")

    def settings(self):
        return CacheSettings(**self.model_dump(include=set(CacheSettings.model_fields)))


class StudentConfig(Strict):
    model: str | None = Field(None, description="hub id, local directory or .gguf file of a pretrained student")
    spec: StudentSpec | None = None
    from_teacher: FromTeacher | None = None
    tokenizer: str | None = Field(None, description="a fresh student's (spec) tokenizer: hub id, local directory or "
                                  "built-in name; default: the teacher's")
    dtype: DType = "float32"
    revision: str | None = None
    trust_remote_code: bool = False
    use_chat_template: bool | None = Field(None, description=CHAT + "; only for a student whose tokenizer is not the "
                                           "teacher's (one that shares it shares the teacher's encoding)")

    @model_validator(mode="after")
    def _one_source(self):
        if sum(source is not None for source in (self.model, self.spec, self.from_teacher)) != 1:
            raise ValueError("give exactly one of student.model (a pretrained model), student.spec (a fresh one) "
                             "or student.from_teacher (cut from the teacher)")
        loads = self.model is not None
        refuse_unused(self, [("revision", loads, "to load student.model"),
                             ("trust_remote_code", loads, "to load student.model"),
                             ("tokenizer", self.spec is not None, "with student.spec (a pretrained student has its "
                              "own tokenizer, a cut one the teacher's)")])
        return self
