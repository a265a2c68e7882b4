from lmdistill.models.loading import load_student, load_teacher, load_teacher_model, load_model, load_tokenizer
from lmdistill.models.vocab import shared_vocab_size

__all__ = ["load_student", "load_teacher", "load_teacher_model", "load_model", "load_tokenizer", "shared_vocab_size"]
