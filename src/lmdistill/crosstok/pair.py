"""Teacher and student tokenizers of a run: whether they differ, and what a run with two of them must refuse before
it writes anything."""
from lmdistill.crosstok.encode import Side, encode_pairs
from lmdistill.crosstok.vocab import check_offsets, shared_tokens
from lmdistill.errors import UserError
from lmdistill.models import load_tokenizer


def student_tokenizer(config, teacher_tokenizer):
    """The student's tokenizer without its weights: a pretrained student's own, a fresh one's student.tokenizer, or
    the teacher's (the same object)."""
    student = config.student
    if student.model is not None:
        return load_tokenizer(student.model, student.revision, student.trust_remote_code)
    if student.spec is not None and student.tokenizer is not None:
        return load_tokenizer(student.tokenizer)
    return teacher_tokenizer


def differ(teacher_tokenizer, student_tokenizer):
    return teacher_tokenizer is not student_tokenizer and teacher_tokenizer.get_vocab() != student_tokenizer.get_vocab()


def check_pair(config, cross, objective_classes):
    """UserError for what a run cannot do with its pair of tokenizers (`cross`: they differ)."""
    if not cross:
        if config.student.use_chat_template is not None:
            raise UserError("student.use_chat_template is set, but the student uses the teacher's tokenizer and so "
                            "its encoding; remove it (teacher.use_chat_template or data.use_chat_template sets both)")
        return
    refused = [cls.name for cls in objective_classes if not cls.cross_tokenizer]
    if refused:
        able = sorted({"uld", "gold", "feature", "ce"})
        raise UserError(f"objective '{refused[0]}' compares the two models token by token and needs one tokenizer, "
                        f"but teacher {config.teacher.model} and the student tokenize differently; use the "
                        f"cross-tokenizer objectives {', '.join(able)}")
    if config.teacher_cache is not None and config.teacher_cache.logits == "topk":
        raise UserError("teacher_cache.logits: topk keeps too little of the teacher's distribution for the "
                        "cross-tokenizer losses (they sort or renormalise all of it); use logits: head")


def check_offsets_of(teacher_tokenizer, student_tokenizer):
    check_offsets(teacher_tokenizer, "teacher")
    check_offsets(student_tokenizer, "student")


def pair_encoder(config, teacher_tokenizer, student_tokenizer):
    """records -> crosstok.encode.Paired, each model with its own prompt format."""
    teacher = Side(teacher_tokenizer, config.teacher.use_chat_template, "teacher")
    student = Side(student_tokenizer, config.student.use_chat_template, "student")
    return lambda records: encode_pairs(records, teacher, student, config.data)


def shared_ids(teacher_tokenizer, student_tokenizer):
    """(student ids, teacher ids) of the tokens both vocabularies have (the same bytes)."""
    teacher_ids, student_ids = shared_tokens(teacher_tokenizer, student_tokenizer)
    return student_ids, teacher_ids
