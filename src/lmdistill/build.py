"""Everything a run needs, built from a Config, with all user-fixable problems found before any output."""
from dataclasses import dataclass

from lmdistill import data
from lmdistill.errors import UserError
from lmdistill.forward import OnlineTeacher, ResponseLM
from lmdistill.models import load_model, load_student, load_teacher, load_tokenizer, shared_vocab_size
from lmdistill.objectives import build_objectives


@dataclass
class ObjectiveContext:
    teacher_config: object
    student_config: object
    vocab_size: int


@dataclass
class Parts:
    config: object
    teacher: object          # HF model, frozen
    student: object          # HF model
    tokenizer: object        # the teacher's; every split is encoded with it
    vocab_size: int
    task: str                # 'generation' or 'classification'
    splits: dict             # name -> data.Split
    objectives: list


def _check_layers(objectives, teacher_config, student_config):
    for obj in objectives:
        for role, config, layers in (("teacher", teacher_config, obj.teacher_layers()),
                                     ("student", student_config, obj.student_layers())):
            n = config.num_hidden_layers
            for layer in layers:
                if not 0 <= layer <= n:
                    raise UserError(f"objective '{obj.name}': {role} layer {layer} does not exist; "
                                    f"hidden_states indices run from 0 (embeddings) to {n}")


def build_parts(config, splits=("train", "dev", "test"), student_path=None, log=print):
    """Load data first (cheap, most likely to be wrong), then the models."""
    cfg = config.data
    teacher_tokenizer = load_tokenizer(config.teacher.model, config.teacher.revision, config.teacher.trust_remote_code)
    loaded = {}
    for name in splits:
        limit = cfg.max_train_examples if name == "train" else None
        split = data.load_split(cfg, name, teacher_tokenizer, limit)
        if split is None and name == "train":
            raise UserError("data.train is not set; give a JSONL file of {prompt, response} records")
        if split is not None:
            loaded[name] = split
    teacher, tokenizer = load_teacher(config.teacher)
    if student_path is None and config.student.from_teacher is not None:  # objectives checked before the cut
        from lmdistill.models.prune import planned
        _, _, student_config = planned(config.student.from_teacher, teacher)
        planned_objectives = build_objectives(config.objectives, ObjectiveContext(teacher.config, student_config,
                                                                                  teacher.config.vocab_size))
        _check_layers(planned_objectives, teacher.config, student_config)
    if student_path is not None:
        student, student_tokenizer = load_model(student_path), load_tokenizer(student_path)
    else:
        train_examples = loaded["train"].examples if "train" in loaded else []
        student, student_tokenizer = load_student(config.student, teacher, tokenizer, config.seed, train_examples, log)
    vocab = shared_vocab_size(teacher, student, tokenizer, student_tokenizer)
    context = ObjectiveContext(teacher.config, student.config, vocab)
    objectives = build_objectives(config.objectives, context)
    _check_layers(objectives, teacher.config, student.config)
    train_records = loaded["train"].records if "train" in loaded else data.read_records(data.split_path(cfg, "train"))
    return Parts(config, teacher, student, tokenizer, vocab, data.task_kind(cfg, train_records), loaded, objectives)


def wrap(parts):
    """(student as ResponseLM, teacher as OnlineTeacher), both keeping only the shared vocabulary."""
    return ResponseLM(parts.student, parts.vocab_size), OnlineTeacher(parts.teacher, parts.vocab_size)
