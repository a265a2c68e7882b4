"""Teacher and student must score the same token ids before their logits can be compared."""
from lmdistill.errors import UserError


def _rows(model):
    return model.get_output_embeddings().weight.shape[0]


def shared_vocab_size(teacher, student, teacher_tokenizer, student_tokenizer):
    """Number of leading logit columns that mean the same token in both models.

    Models of one family often pad their embedding matrix past the tokenizer's size (to a multiple of
    64, say); those padded rows are never real tokens, so we compare only the tokenizer's ids.
    """
    if teacher_tokenizer is not student_tokenizer and teacher_tokenizer.get_vocab() != student_tokenizer.get_vocab():
        raise UserError("teacher and student tokenizers differ (different vocabularies), so their logits cannot "
                        "be compared token by token; use the cross-tokenizer objectives (uld, gold, feature, ce) or a "
                        "student with the teacher's tokenizer")
    check_rows(teacher, teacher_tokenizer, "teacher")
    check_rows(student, teacher_tokenizer, "student")
    return len(teacher_tokenizer)


def check_rows(model, tokenizer, role):
    """UserError when the model has fewer output rows than its tokenizer has tokens."""
    size = len(tokenizer)
    if _rows(model) < size:
        raise UserError(f"{role} has {_rows(model)} output rows but its tokenizer has {size} tokens; "
                        f"resize the {role}'s embeddings (model.resize_token_embeddings) first")
