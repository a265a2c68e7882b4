"""A student cut from the teacher (student.from_teacher): K of its decoder layers and k of its d residual
dimensions, chosen on calibration examples. All heads and the full MLP width stay.

- activation: keep the k residual coordinates with the largest mean |h|;
- flexkd: keep the k coordinates with the largest mean |dL/dh| (L = response NLL);
- functional: rotate the residual stream onto the eigenvectors of sum_layers E[g g^T] and keep the top k.
  Every RMSNorm weight is first folded into the linears that read its output, so the rotation itself is
  exact (SliceGPT); dropping the last d - k directions is the only approximation.

Scores are summed over the hidden states entering the kept layers and the final one (after the final norm,
as transformers returns it). Works on the Llama family's parameter names (Llama, Qwen2, Mistral, SmolLM).
"""
import copy
import re
import time

import torch

from lmdistill.data import calibration_batches
from lmdistill.errors import UserError
from lmdistill.features import selectors
from lmdistill.teachers.outputs import response_positions

READERS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.gate_proj", "mlp.up_proj")
WRITERS = ("self_attn.o_proj", "mlp.down_proj")
NORMS = {"input_layernorm": READERS[:3], "post_attention_layernorm": READERS[3:]}  # norm -> the linears it feeds
GLOBALS = ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight")
LAYER_KEY = re.compile(r"model\.layers\.(\d+)\.(.+)")


def check_architecture(teacher):
    """UserError unless every teacher parameter is one this module knows how to cut."""
    known = {f"{m}.{p}" for m in READERS + WRITERS for p in ("weight", "bias")} | {f"{n}.weight" for n in NORMS}
    keys = teacher.state_dict().keys()
    for key in keys:
        match = LAYER_KEY.fullmatch(key)
        if not (key in GLOBALS or match and match[2] in known):
            raise UserError(f"student.from_teacher supports Llama-style models (Llama, Qwen2, Mistral, SmolLM); "
                            f"{type(teacher).__name__} has '{key}'; use student.spec or student.model instead")
    missing = [key for key in GLOBALS if key not in keys]
    if missing:
        raise UserError(f"student.from_teacher supports Llama-style models (Llama, Qwen2, Mistral, SmolLM); "
                        f"{type(teacher).__name__} has no '{missing[0]}'; use student.spec or student.model instead")


def kept_layers(layers, n_layers):
    """0-based teacher layers to keep: K evenly spaced (first and last included) or the given list."""
    if isinstance(layers, int):
        if layers > n_layers:
            raise UserError(f"student.from_teacher.layers: {layers} layers asked for but the teacher has "
                            f"{n_layers}; give at most {n_layers}")
        return [round(x) for x in torch.linspace(0, n_layers - 1, layers, dtype=torch.float64).tolist()]
    if layers[-1] >= n_layers:
        raise UserError(f"student.from_teacher.layers: layer {layers[-1]} does not exist; the teacher's decoder "
                        f"layers are 0 to {n_layers - 1}")
    return list(layers)


@torch.no_grad()
def response_activations(model, batches, layers):
    """{hidden_states index: [N, d]} at the positions that predict response tokens."""
    found = {layer: [] for layer in layers}
    for batch in batches:
        out = model.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                               output_hidden_states=True, use_cache=False)
        where = response_positions(batch["labels"])
        for layer in layers:
            found[layer].append(out.hidden_states[layer][:, :-1][where])
    return {layer: torch.cat(h) for layer, h in found.items()}


def importance(kind, teacher, batches, layers, k):
    """(rotation [d, d] or None, the k residual coordinates to keep, in index order)."""
    top = lambda scores: torch.topk(scores, k).indices.sort().values  # noqa: E731
    if kind == "activation":
        return None, top(sum(h.double().abs().mean(0) for h in response_activations(teacher, batches, layers).values()))
    found = selectors.teacher_gradients(teacher, batches, layers)
    if kind == "flexkd":
        return None, top(sum(selectors.coordinate_scores(g, h, "abs_grad") for g, h in found.values()))
    # The last hidden state is after the final norm, whose weight w gets folded into the lm_head: in the
    # folded model the lm_head reads h / w, where the gradient is g * w.
    final, w = teacher.config.num_hidden_layers, teacher.get_submodule("model.norm").weight.float()
    grads = torch.cat([g.float() * w if layer == final else g.float() for layer, (g, _) in found.items()])
    # Concatenating layers averages their E[g g^T]; the sum has the same eigenvectors.
    return selectors.functional(grads, teacher.config.hidden_size).basis, torch.arange(k)


def kept_state(teacher, keep):
    """The teacher's tensors (float32) under the student's names: teacher layer keep[s] becomes layer s.
    Nothing below works in place, so the teacher is never modified."""
    state = {}
    for key, tensor in teacher.state_dict().items():
        match = LAYER_KEY.fullmatch(key)
        if match is None:
            state[key] = tensor.float()
        elif int(match[1]) in keep:
            state[f"model.layers.{keep.index(int(match[1]))}.{match[2]}"] = tensor.float()
    return state


def fold_norms(state, n_layers):
    """Move every RMSNorm weight into the linears that read the norm's output and set the norm to 1:
    the same function, and a residual stream that can be rotated exactly."""
    for i in range(n_layers):
        for norm, readers in NORMS.items():
            w = state[f"model.layers.{i}.{norm}.weight"]
            for name in readers:
                state[f"model.layers.{i}.{name}.weight"] = state[f"model.layers.{i}.{name}.weight"] * w
            state[f"model.layers.{i}.{norm}.weight"] = torch.ones_like(w)
    state["lm_head.weight"] = state["lm_head.weight"] * state["model.norm.weight"]
    state["model.norm.weight"] = torch.ones_like(state["model.norm.weight"])


def _linears(state, n_layers, names, suffix):
    return [key for i in range(n_layers) for key in (f"model.layers.{i}.{n}.{suffix}" for n in names) if key in state]


def rotate(state, q, n_layers):
    """Residual stream x -> x @ q for an orthogonal q [d, d]; exact once the norms are folded (RMS is
    rotation-invariant and the norm weights are 1)."""
    for key in ("model.embed_tokens.weight", "lm_head.weight", *_linears(state, n_layers, READERS, "weight")):
        state[key] = state[key] @ q
    for key in _linears(state, n_layers, WRITERS, "weight") + _linears(state, n_layers, WRITERS, "bias"):
        state[key] = q.T @ state[key]


def slice_coordinates(state, keep, n_layers):
    """Keep residual coordinates `keep`."""
    # RMSNorm(x) = x / rms(x), and the student's rms is over its k coordinates instead of the teacher's d:
    # the one approximation besides the dropped coordinates, the same for rotated as for plain ones.
    for key in ("model.embed_tokens.weight", "lm_head.weight", *_linears(state, n_layers, READERS, "weight")):
        state[key] = state[key][:, keep]
    writers = _linears(state, n_layers, WRITERS, "weight") + _linears(state, n_layers, WRITERS, "bias")
    norms = [f"model.layers.{i}.{n}.weight" for i in range(n_layers) for n in NORMS] + ["model.norm.weight"]
    for key in writers + norms:
        state[key] = state[key][keep]


def head_dim(config):
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def student_config(teacher_config, keep, width, tied):
    config = copy.deepcopy(teacher_config)
    config.num_hidden_layers, config.hidden_size = len(keep), width
    config.head_dim = head_dim(teacher_config)  # heads keep their size: q_proj becomes Linear(k, heads * head_dim)
    config.tie_word_embeddings = tied
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in keep]
    return config


def check_savable(config):
    """UserError now, rather than after training, when transformers would refuse to save this config
    (transformers 5's LlamaConfig wants hidden_size to be a multiple of num_attention_heads, head_dim or not)."""
    try:
        getattr(config, "validate", lambda: None)()
    except Exception as e:  # huggingface_hub's validation errors are not ValueErrors
        width, heads = config.hidden_size, config.num_attention_heads
        hint = (f"; give a multiple of {heads}, e.g. {width // heads * heads} or {(width // heads + 1) * heads}"
                if width % heads else "")
        raise UserError(f"student.from_teacher.hidden_size {width}: transformers cannot save this "
                        f"{type(config).__name__} ({str(e.__cause__ or e).strip().rstrip('.')}){hint}") from None


def cut(teacher, keep, coordinates, rotation=None, dtype=torch.float32):
    """The student: teacher layers `keep`, residual `coordinates` of the stream rotated by `rotation` if given."""
    from transformers import AutoModelForCausalLM
    state = kept_state(teacher, keep)
    if rotation is not None:
        fold_norms(state, len(keep))
        rotate(state, rotation.float(), len(keep))
    slice_coordinates(state, coordinates, len(keep))
    # A folded final norm lives in the lm_head, which then differs from the embeddings.
    tied = bool(teacher.config.tie_word_embeddings) and rotation is None
    student = AutoModelForCausalLM.from_config(student_config(teacher.config, keep, len(coordinates), tied), dtype=dtype)
    student.load_state_dict({key: v.to(dtype) for key, v in state.items()}, strict=True)
    return student


def count(model):
    return sum(p.numel() for p in model.parameters())


def planned(spec, teacher):
    """(spec with its hidden_size filled in, kept layers, the student's config): everything about the student
    that does not need the calibration pass, checked before it runs."""
    check_architecture(teacher)
    return planned_config(spec, teacher.config)


def planned_config(spec, teacher_config):
    """`planned` from the teacher's config alone (the architecture check needs its weights' names)."""
    n_layers, d = teacher_config.num_hidden_layers, teacher_config.hidden_size
    heads = teacher_config.num_attention_heads
    spec = spec.model_copy(update={"hidden_size": spec.hidden_size or min(d, 256 // heads * heads)})
    if spec.hidden_size > d:
        raise UserError(f"student.from_teacher.hidden_size {spec.hidden_size} is larger than the teacher's hidden "
                        f"size {d}; give at most {d}")
    keep = kept_layers(spec.layers, n_layers)
    config = student_config(teacher_config, keep, spec.hidden_size, tied=False)
    check_savable(config)
    return spec, keep, config


def prune_teacher(spec, teacher, examples, pad_id, dtype=torch.float32, log=print):
    """Build the student that `spec` (a config FromTeacher) describes from the frozen teacher."""
    spec, keep, _ = planned(spec, teacher)
    n_layers, d = teacher.config.num_hidden_layers, teacher.config.hidden_size
    calibration = examples[:spec.calibration_examples]
    if not calibration:
        raise UserError("student.from_teacher needs training examples to score dimensions; give data.train")
    device = next(teacher.parameters()).device
    batches = list(calibration_batches(calibration, pad_id, device))
    started = time.time()
    rotation, coordinates = importance(spec.importance, teacher, batches, sorted(set(keep) | {n_layers}),
                                       spec.hidden_size)
    seconds = time.time() - started
    student = cut(teacher, keep, coordinates, rotation, dtype)
    untied = teacher.config.tie_word_embeddings and not student.config.tie_word_embeddings
    log(f"student from teacher: layers {keep} of {n_layers}, hidden {d} -> {spec.hidden_size}, "
        f"{spec.importance} importance on {len(calibration)} examples in {seconds:.1f} s; "
        f"{count(student) / 1e6:.1f}M parameters (teacher {count(teacher) / 1e6:.1f}M)"
        + ("; lm_head untied from the embeddings (the final norm is folded into it)" if untied else ""))
    return student
