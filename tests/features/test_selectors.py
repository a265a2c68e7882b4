"""Selectors recover the coordinates a model's output depends on; gradient scores match finite differences."""
import pytest
import torch
import torch.nn.functional as F

from lmdistill.features import selectors
from tolerance import EPS64, llama_terms, typical, worst

pytestmark = pytest.mark.numerical

D, K = 32, 4
KNOWN = torch.tensor([3, 11, 17, 29])


def synthetic_gradients(n=400, seed=0):
    """A 'teacher' whose loss depends only on hidden coordinates KNOWN, through a full-rank map:
    L = sum_i ||W h_i[KNOWN] - y_i||^2. The other coordinates have LARGER activations, so variance (PCA)
    points the wrong way."""
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, D, generator=g)
    h[:, [i for i in range(D) if i not in KNOWN]] *= 5.0
    h.requires_grad_()
    w = torch.randn(K, K, generator=g) + 2 * torch.eye(K)
    y = torch.randn(n, K, generator=g)
    loss = ((h[:, KNOWN] @ w.T - y) ** 2).sum()
    (grads,) = torch.autograd.grad(loss, h)
    return grads, h.detach()


def test_flexkd_scores_recover_the_known_coordinates():
    grads, acts = synthetic_gradients()
    for kind in selectors.SCORES:
        chosen = selectors.flexkd(grads, acts, K, kind).indices
        assert chosen.tolist() == KNOWN.tolist(), kind
    ranked = selectors.flexkd(grads, acts, K, pairing="rank")
    assert set(ranked.indices.tolist()) == set(KNOWN.tolist())
    assert (ranked.scores[ranked.indices].diff() <= 0).all()  # highest score first


def test_functional_basis_spans_the_known_coordinates_and_is_orthonormal():
    grads, _ = synthetic_gradients()
    selection = selectors.functional(grads, K)
    basis = selection.basis.double()
    # a float64 eigendecomposition (orthonormal to D EPS64) rounded to float32: each entry moves by u relative, so
    # each entry of B^T B by <= 2u sum_d |b_di b_dj| <= EPS32 (unit columns), then a float64 dot product over D
    orthonormal = worst(1, 1.0) + worst(2 * D, 1.0, EPS64)
    torch.testing.assert_close(basis.T @ basis, torch.eye(K, dtype=torch.float64), atol=orthonormal, rtol=0)
    inside = basis[KNOWN].pow(2).sum()  # energy of the basis inside the known coordinates
    assert inside > K - K * orthonormal  # K unit columns, each exactly inside KNOWN before rounding
    assert selectors.effective_dimension(selection.spectrum, 0.99) <= K


def test_controls_do_not_recover_them():
    grads, acts = synthetic_gradients()
    assert set(selectors.random_coordinates(D, K, seed=0).indices.tolist()) != set(KNOWN.tolist())
    assert selectors.pca(acts, K).basis.double()[KNOWN].pow(2).sum() < 1.0
    assert selectors.random_coordinates(D, K, seed=0).indices.equal(selectors.random_coordinates(D, K, seed=0).indices)


def test_selection_apply_shapes():
    t = torch.randn(7, D)
    assert selectors.Selection(indices=KNOWN).apply(t).equal(t[:, KNOWN])
    grads, _ = synthetic_gradients()
    assert selectors.functional(grads, K).apply(t).shape == (7, K)


def test_effective_dimension():
    spectrum = torch.tensor([5.0, 3.0, 1.0, 0.5, 0.5])
    assert selectors.effective_dimension(spectrum, 0.5) == 1
    assert selectors.effective_dimension(spectrum, 0.8) == 2
    assert selectors.effective_dimension(spectrum, 0.9) == 3
    assert selectors.effective_dimension(spectrum, 1.0) == 5


def test_teacher_gradients_match_finite_differences():
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                         num_attention_heads=2, num_key_value_heads=2)
    model = LlamaForCausalLM(config).double().eval().requires_grad_(False)
    ids = torch.randint(0, 50, (2, 6))
    labels = ids.clone()
    labels[:, :2] = -100
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    layer = 2
    grads, acts = selectors.teacher_gradients(model, [batch], [layer])[layer]
    assert grads.shape == acts.shape == (2 * 4, 16)  # response positions: 4 per row predict a label

    def nll_with(delta):
        """The response NLL with `delta` added to the output of decoder layer layer-1 (= hidden_states[layer])."""
        def hook(module, args, output):
            hidden = output[0] if isinstance(output, tuple) else output
            hidden = hidden + delta
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden
        handle = model.model.layers[layer - 1].register_forward_hook(hook)
        try:
            logits = model(input_ids=ids).logits[:, :-1]
        finally:
            handle.remove()
        where = labels[:, 1:] != -100
        return F.cross_entropy(logits[where], labels[:, 1:][where], reduction="sum")

    eps = 1e-3  # RMSNorm computes in float32 even in a float64 model, so a tiny step drowns in rounding
    # response position 0 of row 0 is sequence position 1 (it predicts token 2)
    for dim in (0, 5, 11):
        delta = torch.zeros(2, 6, 16, dtype=torch.float64)
        delta[0, 1, dim] = eps
        numeric = (nll_with(delta) - nll_with(-delta)) / (2 * eps)
        assert abs(numeric.item() - grads[0, dim].item()) < 1e-4 * max(1.0, abs(numeric.item()))


def test_teacher_gradients_do_not_depend_on_batching():
    from transformers import LlamaConfig, LlamaForCausalLM

    from lmdistill.data import Example, in_batches, token_batches
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2)
    model = LlamaForCausalLM(config).double().eval().requires_grad_(False)
    examples = [Example(input_ids=torch.randint(1, 50, (n,)).tolist(), n_prompt=2, prompt="p", response="r")
                for n in (5, 9, 4, 12, 6)]
    alone = selectors.teacher_gradients(model, in_batches(examples, 0, 1), [1, 2])
    grouped = selectors.teacher_gradients(model, token_batches(examples, 0, 20), [1, 2])
    # a float64 model, but its RMSNorms compute in float32: forward and backward through each of the 5 norms on a
    # path (2 per layer, the final one), (hidden + 3) roundings each, and the rest of llama_terms in float64, both
    # ways (backward); batching changes padding and shapes, so each could be computed in another order
    rms_terms = 2 * 5 * (config.hidden_size + 3)
    f64_terms = 2 * llama_terms(config, 12, vocab=config.vocab_size)
    for layer in (1, 2):
        for a, b in zip(alone[layer], grouped[layer]):
            assert a.shape == b.shape
            m = a.abs().max().item()
            torch.testing.assert_close(a, b, rtol=0, atol=typical(rms_terms, m) + typical(f64_terms, m, EPS64))
