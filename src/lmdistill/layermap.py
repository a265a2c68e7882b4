"""Layer maps between teacher and student, in Hugging Face hidden_states indices (0 = embeddings)."""


def uniform_pairs(n_teacher, n_student, k=5):
    """k evenly spaced (teacher, student) pairs, excluding the embeddings and the final layer.

    Pair i (1..k) maps teacher layer round(i * n_T / (k+1)) to student layer round(i * n_S / (k+1)),
    the spacing of DistillLens's maps (GPT-2 XL 48 -> 12 layers: T 8,16,24,32,40 / S 2,4,6,8,10).
    """
    k = max(1, min(k, n_student - 1, n_teacher - 1))
    return [(round(i * n_teacher / (k + 1)), round(i * n_student / (k + 1))) for i in range(1, k + 1)]
