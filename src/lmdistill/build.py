"""Everything a run needs, built from a Config, with all user-fixable problems found before any output."""
from dataclasses import dataclass, replace

from lmdistill import data
from lmdistill.errors import UserError
from lmdistill.crosstok import pair
from lmdistill.models import load_model, load_student, load_teacher_model, load_tokenizer, shared_vocab_size
from lmdistill.models.vocab import check_rows
from lmdistill.models.loading import model_config, student_model_config
from lmdistill.objectives import OBJECTIVES, build_objectives
from lmdistill.teachers import OnlineTeacher, ResponseLM
from lmdistill.teachers.cross_tokenizer import CrossTokenizerTeacher


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
    tokenizer: object        # the student's; every split's examples are encoded with it
    vocab_size: int          # the student's vocabulary (the shared one, when the teacher's tokenizer is the same)
    task: str                # 'generation' or 'classification'
    splits: dict             # name -> data.Split
    objectives: list
    teacher_tokenizer: object = None  # the teacher's, when it is another (split.paired holds its encoding)

    @property
    def cross_tokenizer(self):
        return self.teacher_tokenizer is not None

    def teacher_examples(self, split):
        """The examples of a split as the teacher reads them (its own encoding, when its tokenizer is another)."""
        s = self.splits[split]
        return s.paired.teacher if s.paired is not None else s.examples

    @property
    def teacher_pad_id(self):
        return (self.teacher_tokenizer or self.tokenizer).pad_token_id


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


def objective_context(teacher_config, student_config, vocab_size, teacher_tokenizer=None, student_tokenizer=None):
    """What objectives know of the models; with two tokenizers (teacher_tokenizer given), both vocabularies and the
    tokens they share."""
    if teacher_tokenizer is None:
        return ObjectiveContext(teacher_config, student_config, vocab_size)
    return ObjectiveContext(teacher_config, student_config, len(student_tokenizer), len(teacher_tokenizer),
                            pair.shared_ids(teacher_tokenizer, student_tokenizer))


def planned_objectives(config, teacher_config=None):
    """The run's objectives built against the models' configs alone (no weights loaded, no student built or cut),
    their layers checked: what they need is known before anything heavy runs."""
    teacher = config.teacher
    if teacher_config is None:
        teacher_config = model_config(teacher.model, teacher.revision, teacher.trust_remote_code)
    student_config = student_model_config(config.student, teacher_config)
    teacher_tokenizer, student_tokenizer = tokenizers(config)
    context = objective_context(teacher_config, student_config, teacher_config.vocab_size,
                                *((teacher_tokenizer, student_tokenizer) if student_tokenizer is not teacher_tokenizer
                                  else ()))
    objectives = build_objectives(config.objectives, context)
    check_layers(objectives, teacher_config, student_config)
    return objectives


def tokenizers(config):
    """(teacher tokenizer, student tokenizer): the same object when the student's has the teacher's vocabulary;
    with two, the run's pair of tokenizers is checked (objectives, offsets, prompt formats) before anything is
    encoded."""
    teacher = config.teacher
    teacher_tokenizer = load_tokenizer(teacher.model, teacher.revision, teacher.trust_remote_code)
    student_tokenizer = pair.student_tokenizer(config, teacher_tokenizer)
    cross = pair.differ(teacher_tokenizer, student_tokenizer)
    pair.check_pair(config, cross, [OBJECTIVES[p.name] for p in config.objectives])
    if not cross:
        return teacher_tokenizer, teacher_tokenizer
    pair.check_offsets_of(teacher_tokenizer, student_tokenizer)
    return teacher_tokenizer, student_tokenizer


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


def load_splits(config, tokenizer, splits, student_tokenizer=None):
    """{name: data.Split} of the splits the config gives, encoded with the teacher's tokenizer, or with each model's
    when the student's is another."""
    loaded = {}
    encoder = pair.pair_encoder(config, tokenizer, student_tokenizer) if student_tokenizer is not None else None
    for name in splits:
        limit = config.data.max_train_examples if name == "train" else None
        split = data.load_split(config.data, name, tokenizer, limit, config.teacher.use_chat_template, encoder)
        if split is None and name == "train":
            raise UserError("data.train is not set; give a JSONL file of {prompt, response} records")
        if split is not None:
            loaded[name] = split
    return loaded


def encode_like(parts, name, records):
    """`records` encoded as the run encodes its split `name` (with two tokenizers, each model's own encoding)."""
    config = parts.config
    encoder = pair.pair_encoder(config, parts.teacher_tokenizer, parts.tokenizer) if parts.cross_tokenizer else None
    return data.encode_split(config.data, name, records, parts.teacher_tokenizer or parts.tokenizer,
                             config.teacher.use_chat_template, encoder)


def teacher_parts(config, splits=("train", "dev", "test")):
    """Parts without a student (student None, no objectives): the data and the teacher, and the teacher tokenizer's
    vocabulary (the one a student that shares it is compared on). Data first: cheap, and most likely to be wrong."""
    teacher_tokenizer, student_tokenizer = tokenizers(config)
    cross = student_tokenizer is not teacher_tokenizer  # tokenizers() returns one object for one vocabulary
    loaded = load_splits(config, teacher_tokenizer, splits, student_tokenizer if cross else None)
    teacher, tokenizer = load_teacher_model(config.teacher), teacher_tokenizer
    train_records = loaded["train"].records if "train" in loaded else data.read_records(data.split_path(config.data, "train"))
    task = data.task_kind(config.data, train_records)
    if cross:
        return Parts(config, teacher, None, student_tokenizer, len(student_tokenizer), task, loaded, [], tokenizer)
    return Parts(config, teacher, None, tokenizer, len(tokenizer), task, loaded, [])


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
        student, student_tokenizer = load_student(config.student, teacher, parts.teacher_tokenizer or tokenizer,
                                                  config.seed, train_examples, log)
    if parts.cross_tokenizer:
        check_rows(teacher, parts.teacher_tokenizer, "teacher")
        check_rows(student, student_tokenizer, "student")
        vocab, context = parts.vocab_size, objective_context(teacher.config, student.config, parts.vocab_size,
                                                             parts.teacher_tokenizer, student_tokenizer)
    else:
        vocab = shared_vocab_size(teacher, student, tokenizer, student_tokenizer)
        context = objective_context(teacher.config, student.config, vocab)
    objectives = build_objectives(config.objectives, context)
    check_layers(objectives, teacher.config, student.config)
    return replace(parts, student=student, vocab_size=vocab, objectives=objectives)


def wrap(parts, split="train"):
    """(student as ResponseLM, the teacher of `split`'s batches), keeping only the shared vocabulary, or each model's
    own with two tokenizers."""
    return ResponseLM(parts.student, parts.vocab_size), teacher_of(parts, split)


def teacher_of(parts, split):
    """The online teacher of a split's batches: with another tokenizer, run on its own encoding of that split."""
    if not parts.cross_tokenizer:
        return OnlineTeacher(parts.teacher, parts.vocab_size)
    return CrossTokenizerTeacher(parts.teacher, len(parts.teacher_tokenizer), parts.teacher_pad_id,
                                 parts.splits[split].paired)
