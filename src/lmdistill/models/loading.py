"""Load teacher and student: hub id, local directory, .gguf file, built-in name, or a spec."""
import functools
import math
from pathlib import Path

import torch

from lmdistill.errors import UserError
from lmdistill.models.builtin import BUILTIN, builtin_model_dir

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _source(name):
    """(directory or hub id, gguf file name or None) for a model reference."""
    if name in BUILTIN:
        return str(builtin_model_dir(name)), None
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise UserError(f"model file not found: {path}")
        return str(path.parent), path.name
    if path.exists() and not path.is_dir():
        raise UserError(f"model path {path} is a file; give a model directory, a .gguf file or a hub id")
    looks_local = name.startswith((".", "/", "~")) or name.count("/") > 1
    if looks_local and not path.is_dir():
        raise UserError(f"model directory not found: {path}")
    return (str(path) if path.is_dir() else name), None


def _hub_source(name, revision):
    """_source(name), refusing a revision for a model that is not read from the hub (it would be ignored)."""
    source, gguf = _source(name)
    if revision is not None and (gguf is not None or Path(source).is_dir()):
        raise UserError(f"revision '{revision}' is set for '{name}', which is a local model, not a hub id; remove "
                        f"the revision (it only selects a version of a hub model)")
    return source, gguf


def _load_error(name, error):
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if "custom code" in str(error) or "trust_remote_code" in str(error):
        return UserError(f"model '{name}' needs its own Python code to load, which lmdistill does not run unless told "
                         f"to; read that code, then set trust_remote_code: true on its teacher or student entry")
    return UserError(f"could not load model '{name}': {first} (a hub id needs network access; "
                     f"give a local directory, a .gguf file or a built-in name: {', '.join(BUILTIN)})")


def load_tokenizer(name, revision=None, trust_remote_code=False):
    from transformers import AutoTokenizer
    source, gguf = _hub_source(name, revision)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf, revision=revision,
                                                  trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise _load_error(name, e) from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(name, dtype="float32", revision=None, trust_remote_code=False):
    from transformers import AutoModelForCausalLM
    source, gguf = _hub_source(name, revision)
    try:
        return AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf, dtype=DTYPES[dtype], revision=revision,
                                                    trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise _load_error(name, e) from None


def load_teacher(cfg):
    """The frozen teacher and its tokenizer (the tokenizer every dataset is encoded with)."""
    return load_teacher_model(cfg), load_tokenizer(cfg.model, cfg.revision, cfg.trust_remote_code)


def load_teacher_model(cfg):
    """The teacher model, frozen (eval mode, no gradients)."""
    model = load_model(cfg.model, cfg.dtype, cfg.revision, cfg.trust_remote_code)
    model.eval()
    model.requires_grad_(False)
    return model


def _config_class(arch):
    """The transformers config class of a fresh student's architecture (student.spec.arch)."""
    import transformers
    return {"llama": transformers.LlamaConfig}[arch]


def spec_config(spec, teacher_config, tokenizer=None, vocab_size=None):
    """The transformers config of a fresh student of spec.arch: the teacher's embedding rows, or vocab_size rows for a
    tokenizer of its own."""
    intermediate = spec.intermediate_size or 64 * math.ceil(spec.hidden_size * 8 / 3 / 64)
    special = {} if tokenizer is None else {"bos_token_id": tokenizer.bos_token_id,
                                            "eos_token_id": tokenizer.eos_token_id,
                                            "pad_token_id": tokenizer.pad_token_id}
    return _config_class(spec.arch)(
        vocab_size=vocab_size or teacher_config.vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=intermediate,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads or spec.num_heads,
        max_position_embeddings=getattr(teacher_config, "max_position_embeddings", 2048),
        rms_norm_eps=1e-5,
        tie_word_embeddings=spec.tie_word_embeddings,
        **special,
    )


def student_from_spec(spec, teacher_config, tokenizer, dtype="float32", own_tokenizer=False):
    """A fresh student of spec.arch with the teacher's tokenizer (and embedding row count), or `tokenizer` of its own
    (own_tokenizer: one row per token)."""
    from transformers import AutoModelForCausalLM
    vocab = len(tokenizer) if own_tokenizer else None
    return AutoModelForCausalLM.from_config(spec_config(spec, teacher_config, tokenizer, vocab), dtype=DTYPES[dtype])


@functools.lru_cache(maxsize=32)
def model_config(name, revision=None, trust_remote_code=False):
    """A model's transformers config, without its weights."""
    from transformers import AutoConfig
    source, gguf = _hub_source(name, revision)
    try:
        return AutoConfig.from_pretrained(source, gguf_file=gguf, revision=revision,
                                          trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise _load_error(name, e) from None


def student_model_config(cfg, teacher_config):
    """The config of the student config.StudentConfig `cfg` describes, without building (or cutting) it."""
    if cfg.spec is not None:
        own = load_tokenizer(cfg.tokenizer) if cfg.tokenizer is not None else None
        return spec_config(cfg.spec, teacher_config, vocab_size=len(own) if own is not None else None)
    if cfg.from_teacher is not None:
        from lmdistill.models.prune import planned_config
        return planned_config(cfg.from_teacher, teacher_config)[2]
    return model_config(cfg.model, cfg.revision, cfg.trust_remote_code)


def load_student(cfg, teacher, teacher_tokenizer, seed, train_examples=(), log=print):
    """The student and its tokenizer: a pretrained student's own, a fresh one's student.tokenizer or the teacher's.
    A student cut from the teacher is scored on the first training examples (encoded with that tokenizer)."""
    if cfg.spec is not None:
        tokenizer = load_tokenizer(cfg.tokenizer) if cfg.tokenizer is not None else teacher_tokenizer
        torch.manual_seed(seed)
        model = student_from_spec(cfg.spec, teacher.config, tokenizer, cfg.dtype, cfg.tokenizer is not None)
        return model, tokenizer
    if cfg.from_teacher is not None:
        from lmdistill.models.prune import prune_teacher
        torch.manual_seed(seed)
        student = prune_teacher(cfg.from_teacher, teacher, list(train_examples), teacher_tokenizer.pad_token_id,
                                DTYPES[cfg.dtype], log)
        return student, teacher_tokenizer
    model = load_model(cfg.model, cfg.dtype, cfg.revision, cfg.trust_remote_code)
    return model, load_tokenizer(cfg.model, cfg.revision, cfg.trust_remote_code)
