"""Everything a run needs, built from a Config, with all user-fixable problems found before any output."""
from dataclasses import dataclass, replace

from lmdistill import data
from lmdistill.errors import UserError
from lmdistill.models import load_model, load_student, load_teacher, load_tokenizer, shared_vocab_size
from lmdistill.models.loading import model_config, student_model_config
from lmdistill.objectives import build_objectives
from lmdistill.teachers import OnlineTeacher, ResponseLM


@dataclass
class ObjectiveContext:
    teacher_config: object
    student_config: object
    vocab_size: int                    # the student's vocabulary (and the teacher's, when they share a tokenizer)
    teacher_vocab: int | None = None   # the teacher's, when its tokenizer is another
    shared_tokens: tuple | None = None  # (student ids, teacher ids) of the tokens both vocabularies have (the same
    #   bytes), when the tokenizers differ

    @property
    def cross_tokenizer(self):
        return self.teacher_vocab is not None


@dataclass
class Parts:
    config: object
    teacher: object          # HF model, frozen
    student: object          # HF model (None in teacher_parts)
    tokenizer: object        # the teacher's; every split is encoded with it
    vocab_size: int
    task: str                # 'generation' or 'classification'
    splits: dict             # name -> data.Split
    objectives: list


def check_layers(objectives, teacher_config, student_config):
    """UserError for a layer an objective needs that its model does not have."""
    for obj in objectives:
        needs = obj.needs()
        for role, config, request in (("teacher", teacher_config, needs.teacher), ("student", student_config, needs.student)):
            n = config.num_hidden_layers
            for layer in request.hidden if request is not None else ():
                if not 0 <= layer <= n:
                    raise UserError(f"objective '{obj.name}': {role} layer {layer} does not exist; "
                                    f"hidden_states indices run from 0 (embeddings) to {n}")


def planned_objectives(config, teacher_config=None):
    """The run's objectives built against the models' configs alone (no weights loaded, no student built or cut),
    their layers checked: what they need is known before anything heavy runs."""
    if teacher_config is None:
        teacher = config.teacher
        teacher_config = model_config(teacher.model, teacher.revision, teacher.trust_remote_code)
    student_config = student_model_config(config.student, teacher_config)
    objectives = build_objectives(config.objectives, ObjectiveContext(teacher_config, student_config,
                                                                      teacher_config.vocab_size))
    check_layers(objectives, teacher_config, student_config)
    return objectives


def teacher_refusal(kind, objectives):
    """(objective, why) for the first of `objectives` needing teacher outputs the teacher class `kind` cannot give,
    or None when it can give them all."""
    for objective in objectives:
        request = objective.needs().teacher
        why = kind.refuses(request) if request is not None else None
        if why:
            return objective, why
    return None


def check_teacher(kind, objectives):
    """UserError when the teacher class `kind` cannot give what one of `objectives` needs from the teacher."""
    refused = teacher_refusal(kind, objectives)
    if refused:
        objective, why = refused
        raise UserError(f"objective '{objective.name}': {why} or the {objective.name} objective")


def load_splits(config, tokenizer, splits):
    """{name: data.Split} of the splits the config gives, encoded with the teacher's tokenizer."""
    loaded = {}
    for name in splits:
        limit = config.data.max_train_examples if name == "train" else None
        split = data.load_split(config.data, name, tokenizer, limit)
        if split is None and name == "train":
            raise UserError("data.train is not set; give a JSONL file of {prompt, response} records")
        if split is not None:
            loaded[name] = split
    return loaded


def teacher_parts(config, splits=("train", "dev", "test")):
    """Parts without a student (student None, no objectives): the data and the teacher, and the teacher tokenizer's
    vocabulary (the one a student that shares it is compared on). Data first: cheap, and most likely to be wrong."""
    teacher_tokenizer = load_tokenizer(config.teacher.model, config.teacher.revision, config.teacher.trust_remote_code)
    loaded = load_splits(config, teacher_tokenizer, splits)
    teacher, tokenizer = load_teacher(config.teacher)
    train_records = loaded["train"].records if "train" in loaded else data.read_records(data.split_path(config.data, "train"))
    return Parts(config, teacher, None, tokenizer, len(tokenizer), data.task_kind(config.data, train_records), loaded, [])


def build_parts(config, splits=("train", "dev", "test"), student_path=None, log=print):
    """The data, the teacher, the student (built, cut, or loaded from student_path) and the objectives."""
    parts = teacher_parts(config, splits)
    teacher, tokenizer = parts.teacher, parts.tokenizer
    if student_path is None and config.student.from_teacher is not None:  # objectives checked before the cut
        from lmdistill.models.prune import check_architecture
        check_architecture(teacher)
        planned_objectives(config, teacher.config)
    if student_path is not None:
        student, student_tokenizer = load_model(student_path), load_tokenizer(student_path)
    else:
        train_examples = parts.splits["train"].examples if "train" in parts.splits else []
        student, student_tokenizer = load_student(config.student, teacher, tokenizer, config.seed, train_examples, log)
    vocab = shared_vocab_size(teacher, student, tokenizer, student_tokenizer)
    objectives = build_objectives(config.objectives, ObjectiveContext(teacher.config, student.config, vocab))
    check_layers(objectives, teacher.config, student.config)
    return replace(parts, student=student, vocab_size=vocab, objectives=objectives)


def wrap(parts):
    """(student as ResponseLM, teacher as OnlineTeacher), both keeping only the shared vocabulary."""
    return ResponseLM(parts.student, parts.vocab_size), OnlineTeacher(parts.teacher, parts.vocab_size)
