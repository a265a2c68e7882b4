"""The lens objective on tiny Hugging Face models against the full forward pass in float64, its options, and
the final norm it applies (the chunked divergence itself: test_lens.py)."""
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from lmdistill import divergences as D
from lmdistill.build import ObjectiveContext
from lmdistill.config import build_config
from lmdistill.data import IGNORE
from lmdistill.errors import UserError
from lmdistill.teachers import ResponseLM
from lmdistill.teachers.outputs import final_norm, lm_head_logits, output_head
from lmdistill.objectives import build_objectives
from divergence_reference import per_position
from tolerance import divergence_magnitudes, divergence_terms, llama_terms, typical, worst

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.numerical]


# -----------------------------------------------------------------------------
# the lens objective on tiny Hugging Face models against the full forward pass in float64

def rel(a, b):
    return ((a.double() - b).norm() / b.norm()).item()


VOCAB = 96  # shared; the student pads its embedding to 128 rows


def tiny_llama(layers, hidden, vocab_rows, seed):
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_rows, hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=1,
                         tie_word_embeddings=True, rms_norm_eps=1e-6, initializer_range=0.3)  # logits far from uniform
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # non-trivial norm weights, so that applying the final norm or not matters
        for module in model.modules():
            if "RMSNorm" in type(module).__name__:
                module.weight.uniform_(0.5, 1.5)
    return model


def batch(seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (3, 9), generator=g)
    labels = ids.clone()
    labels[:, :4] = IGNORE  # prompt
    labels[1, 7:] = IGNORE  # padding
    attention = torch.ones_like(ids)
    attention[1, 7:] = 0
    return {"input_ids": ids, "attention_mask": attention, "labels": labels}


def lens_objective(teacher, student, **params):
    context = ObjectiveContext(teacher.config, student.config, VOCAB)
    return build_objectives([build_config({"objectives": [{"name": "lens", **params}]}).objectives[0]], context)[0]


def lens_reference(teacher, student, data, pairs, final_norm_on, weights, name="generalized_jsd", params=None):
    """Float64 copies of both models, full hidden states, every position's lens logits; mean over response tokens,
    weighted mean over pairs. Returns the loss and its gradient for each student parameter."""
    t64, s64 = [type(m)(m.config).double() for m in (teacher, student)]
    t64.load_state_dict(teacher.state_dict())
    s64.load_state_dict(student.state_dict())
    where = data["labels"][:, 1:] != IGNORE
    t_hidden = t64(data["input_ids"], attention_mask=data["attention_mask"], output_hidden_states=True).hidden_states
    s_hidden = s64(data["input_ids"], attention_mask=data["attention_mask"], output_hidden_states=True).hidden_states

    def lens(model, hidden, layer):
        h = hidden[layer][:, :-1][where]
        if final_norm_on and layer < model.config.num_hidden_layers:
            h = model.model.norm(h)
        return model.lm_head(h)[:, :VOCAB]

    loss, logits = 0.0, []
    for (t, s), w in zip(pairs, weights):
        logits.append((lens(s64, s_hidden, s), lens(t64, t_hidden, t).detach()))
        per = per_position(name, *logits[-1], **(params or {"beta": 0.5}))
        loss = loss + w / sum(weights) * per.mean()
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in s64.named_parameters()}, [(s.detach(), t) for s, t in logits]


def objective_value_and_grads(objective, teacher, student, data):
    student.zero_grad()
    s_lm, t_lm = ResponseLM(student, VOCAB), ResponseLM(teacher, VOCAB)
    s = s_lm(data["input_ids"], data["attention_mask"], data["labels"], objective.needs().student)
    with torch.no_grad():
        t = t_lm(data["input_ids"], data["attention_mask"], data["labels"], objective.needs().teacher)
    total = objective.loss(s, t, data)
    (total / len(s.targets)).backward()
    return total.item() / len(s.targets), {n: p.grad for n, p in student.named_parameters()}


def lens_tolerances(teacher, student, pairs, weights, logits):
    """(value, relative gradient norm) bounds of the float32 lens objective against its float64 reference.
    Each pair's lens logits come through the model's forward to its layer, the final norm and the LM head
    (llama_terms with vocab: also the log-softmax), a deep computation: typical, on the logits' size. A logit off by
    delta moves its log-probability by <= 2 delta, weighed by the divergence's magnitude M (divergence_magnitudes);
    the divergence itself adds worst(divergence_terms(V, n), M); pairs in their weighted mean. A gradient goes
    through the teacher's forward and the student's forward and backward (tolerance.training_terms' count) and the
    divergence's terms, relative to its size."""
    value, rel_grad = 0.0, 0.0
    for (t, s), w, (s_logits, t_logits) in zip(pairs, weights, logits):
        n, vocab = s_logits.shape
        m, _ = divergence_magnitudes(s_logits, t_logits)
        s_terms = llama_terms(student.config, 9, layers=s, vocab=vocab)
        t_terms = llama_terms(teacher.config, 9, layers=t, vocab=vocab)
        delta = typical(s_terms, s_logits.abs().max().item()) + typical(t_terms, t_logits.abs().max().item())
        value += w / sum(weights) * (worst(divergence_terms(vocab, n), m) + 2 * m * delta)
        if w:
            rel_grad = max(rel_grad, typical(t_terms + 2 * s_terms + divergence_terms(vocab, n)))
    return value, rel_grad


def assert_matches(value, grads, ref_value, ref_grads, tolerances):
    value_tol, rel_grad = tolerances
    assert abs(value - ref_value.item()) <= value_tol
    for name, g in ref_grads.items():
        if g is None:  # a layer above every mapped student layer
            assert grads[name] is None or not grads[name].any(), name
        else:
            assert rel(grads[name], g) <= rel_grad, (name, rel(grads[name], g), rel_grad)


@pytest.mark.parametrize("final_norm_on", [True, False])
def test_lens_objective_matches_full_forward_reference(final_norm_on):
    teacher, student = tiny_llama(6, 24, VOCAB, 0), tiny_llama(3, 16, 128, 1)
    for p in teacher.parameters():
        p.requires_grad_(True)  # a teacher that could take gradients gets none
    data = batch(0)
    objective = lens_objective(teacher, student, final_norm=final_norm_on, chunk_size=5)
    assert objective.pairs == [(2, 1), (4, 2)]  # uniform, the final layer excluded (k clamped to n_S - 1 = 2)
    value, grads = objective_value_and_grads(objective, teacher, student, data)
    ref_value, ref_grads, logits = lens_reference(teacher, student, data, objective.pairs, final_norm_on, [1, 1])
    assert_matches(value, grads, ref_value, ref_grads,
                   lens_tolerances(teacher, student, objective.pairs, [1, 1], logits))
    assert all(p.grad is None for p in teacher.parameters())


def test_pair_weights_layers_and_divergence_choice():
    teacher, student = tiny_llama(6, 24, VOCAB, 2), tiny_llama(3, 16, 128, 3)
    data = batch(1)
    pairs = [[1, 1], [3, 2], [5, 2]]
    objective = lens_objective(teacher, student, layers=pairs, pair_weights=[1.0, 0.0, 3.0], divergence="symmetric_kl",
                               params={"lam": 0.3}, chunk_size=7)
    value, grads = objective_value_and_grads(objective, teacher, student, data)
    pairs = [tuple(p) for p in pairs]
    ref_value, ref_grads, logits = lens_reference(teacher, student, data, pairs, True, [1.0, 0.0, 3.0],
                                                  "symmetric_kl", {"lam": 0.3})
    assert_matches(value, grads, ref_value, ref_grads, lens_tolerances(teacher, student, pairs, [1.0, 0.0, 3.0], logits))


def test_last_layer_lens_is_the_final_logits():
    # Hugging Face returns the last hidden state already normalised: the lens there must not apply the norm twice,
    # so a lens pair (n_T, n_S) equals logit KD with the same divergence on the final logits
    teacher, student = tiny_llama(4, 24, VOCAB, 4), tiny_llama(2, 16, 128, 5)
    data = batch(2)
    objective = lens_objective(teacher, student, layers="last", final_norm=True)
    value, _ = objective_value_and_grads(objective, teacher, student, data)
    s = ResponseLM(student, VOCAB)(data["input_ids"], data["attention_mask"], data["labels"])
    t = ResponseLM(teacher, VOCAB)(data["input_ids"], data["attention_mask"], data["labels"])
    # the same float32 logits, but the LM head's product on other shapes (every position, or the response rows) and
    # the divergence in chunks or not: two orders of a dot product over the width (hidden + 1, on terms
    # sum_k |h_k w_vk| <= |h| |w_v|), moving log-probabilities by twice that, and of divergence_terms(V, n), plus
    # the division by the number of positions
    def head_error(model):
        h = model(data["input_ids"], attention_mask=data["attention_mask"], output_hidden_states=True).hidden_states[-1]
        size = h.detach().double().norm(dim=-1).max() * model.lm_head.weight.detach().double().norm(dim=-1).max()
        return worst(model.config.hidden_size + 1, size.item())
    m, _ = divergence_magnitudes(s.logits.detach(), t.logits)
    n, vocab = s.logits.shape
    tol = worst(divergence_terms(vocab, n) + 1, m) + 2 * m * (head_error(student) + head_error(teacher))
    assert value == pytest.approx(D.generalized_jsd(s.logits, t.logits).item(), rel=0, abs=tol)


def test_final_norm_is_found_or_refused():
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=16, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0))
    assert final_norm(gpt2) is gpt2.transformer.ln_f
    assert final_norm(tiny_llama(2, 16, 50, 0)).__class__.__name__ == "LlamaRMSNorm"

    class NoNorm(torch.nn.Module):
        base_model = torch.nn.Linear(2, 2)
    with pytest.raises(UserError, match="cannot find the final norm of NoNorm.*final_norm: false"):
        final_norm(NoNorm())


def test_output_head_is_the_models_own_head():
    # read as tensors (so a sharded head can be gathered), it must still be the module's own computation: bias,
    # soft-capping (Gemma 2 and 3) and the shared columns only; its params are the ones gradients must reach
    model = tiny_llama(2, 16, 40, 0).double()
    model.config.final_logit_softcapping = 3.0
    model.lm_head = torch.nn.Linear(16, 40, bias=True, dtype=torch.float64)
    hidden = torch.randn(5, 16, dtype=torch.float64) * 4  # logits beyond the cap
    head = output_head(model, 30)
    expected = lm_head_logits(model, hidden)[:, :30]
    assert expected.abs().max() > 2.5  # the cap is reached
    torch.testing.assert_close(head.fn(hidden), expected, rtol=1e-12, atol=1e-12)
    assert head.params == (model.lm_head.weight, model.lm_head.bias)
