"""Layer maps between teacher and student, in Hugging Face hidden_states indices (0 = embeddings)."""


def uniform_pairs(n_teacher, n_student, k=5):
    """k evenly spaced (teacher, student) pairs, excluding the embeddings and the final layer.

    Pair i (1..k) maps teacher layer round(i * n_T / (k+1)) to student layer round(i * n_S / (k+1)),
    the spacing of DistillLens's maps (GPT-2 XL 48 -> 12 layers: T 8,16,24,32,40 / S 2,4,6,8,10).
    """
    k = max(1, min(k, n_student - 1, n_teacher - 1))
    return [(round(i * n_teacher / (k + 1)), round(i * n_student / (k + 1))) for i in range(1, k + 1)]


def all_pairs(n_teacher, n_student):
    """Every student layer s (1..n_S) with the teacher layer ending the block of teacher layers it stands for,
    round(s * n_T / n_S): layer-wise (block-wise) transfer. The last pair is (n_T, n_S)."""
    return [(round(s * n_teacher / n_student), s) for s in range(1, n_student + 1)]


def check_spec(spec):
    """ValueError unless spec is 'last', 'all', 'uniform:K' or a list of [teacher, student] pairs."""
    if isinstance(spec, str) and spec not in ("last", "all") and not (spec.startswith("uniform:") and spec[8:].isdigit()
                                                         and int(spec[8:]) > 0):
        raise ValueError(f"layers must be 'last', 'all', 'uniform:K' (K > 0) or a list of [teacher, student] pairs, "
                         f"got {spec!r}")
    if isinstance(spec, list) and not spec:
        raise ValueError("layers: give at least one [teacher, student] pair")
    return spec


def layer_pairs(spec, n_teacher, n_student):
    """(teacher, student) hidden_states indices from 'last', 'all', 'uniform:K' or explicit pairs."""
    if spec == "last":
        return [(n_teacher, n_student)]
    if spec == "all":
        return all_pairs(n_teacher, n_student)
    if isinstance(spec, str):
        return uniform_pairs(n_teacher, n_student, int(spec.split(":", 1)[1]))
    return [tuple(p) for p in spec]
