"""Selectors map teacher features [N, d_T] to the student's width k, with no trainable parameter.

- flexkd: the top-k teacher coordinates by a gradient score (Flex-KD): how much the task loss depends on
  each hidden dimension, from g = dL/dh over calibration response tokens.
- functional: the top-k eigenvectors of the gradient second moment E[g g^T] (rotation-invariant Flex-KD).
- pca: the top-k principal directions of the teacher's activations (control: variance, not function).
- random: k coordinates drawn with a seed (control).
A selection is either coordinate indices or an orthonormal basis [d_T, k]; `apply` maps features with it.
It also keeps what it was chosen from: per-coordinate `scores` and an eigen-`spectrum` (of E[g g^T] for the
gradient selectors, of the activation covariance for pca), largest first.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lmdistill.teachers.outputs import response_positions
from lmdistill.train.sharding import gathered_root, root_of

SCORES = ("abs_grad", "sq_grad", "grad_x_act")


@dataclass
class Selection:
    indices: torch.Tensor | None = None   # [k] teacher coordinates, in student order
    basis: torch.Tensor | None = None     # [d_T, k] orthonormal columns
    scores: torch.Tensor | None = None    # [d_T] per-coordinate score
    spectrum: torch.Tensor | None = None  # [d_T] eigenvalues, largest first

    def to(self, device):
        move = lambda x: None if x is None else x.to(device)  # noqa: E731
        return Selection(move(self.indices), move(self.basis), move(self.scores), move(self.spectrum))

    def apply(self, teacher_features):
        if self.indices is not None:
            return teacher_features[..., self.indices]
        return teacher_features.float() @ self.basis


def coordinate_scores(grads, acts, kind="abs_grad"):
    """Per-dimension score averaged over positions: mean |g|, mean g^2, or mean |g * h|."""
    grads, acts = grads.double(), acts.double()
    if kind == "abs_grad":
        return grads.abs().mean(0)
    if kind == "sq_grad":
        return grads.pow(2).mean(0)
    if kind == "grad_x_act":
        return (grads * acts).abs().mean(0)
    raise ValueError(f"unknown score '{kind}'; choose from {', '.join(SCORES)}")


def flexkd(grads, acts, k, kind="abs_grad", pairing="index"):
    """Top-k coordinates by score. pairing 'index' keeps them in coordinate order; 'rank' puts the
    highest-scoring coordinate first (student dimension 0)."""
    scores = coordinate_scores(grads, acts, kind)
    top = torch.topk(scores, k).indices
    return Selection(indices=top.sort().values if pairing == "index" else top, scores=scores,
                     spectrum=gradient_spectrum(grads))


def _top_eigenvectors(matrix, k):
    values, vectors = torch.linalg.eigh(matrix)          # ascending
    order = torch.argsort(values, descending=True)
    return values[order].clamp_min(0), vectors[:, order[:k]]


def gradient_spectrum(grads):
    """Eigenvalues of E[g g^T], largest first."""
    g = grads.double()
    return torch.linalg.eigvalsh(g.T @ g / len(g)).flip(0).clamp_min(0)


def functional(grads, k):
    """Top-k eigenvectors of E[g g^T]; scores are its diagonal (mean g^2 per coordinate)."""
    g = grads.double()
    moment = g.T @ g / len(g)
    values, vectors = _top_eigenvectors(moment, k)
    return Selection(basis=vectors.float(), scores=moment.diagonal().clone(), spectrum=values)


def pca(acts, k):
    """Top-k principal directions of the centred activations; scores are per-coordinate variances."""
    x = acts.double() - acts.double().mean(0)
    covariance = x.T @ x / len(x)
    values, vectors = _top_eigenvectors(covariance, k)
    return Selection(basis=vectors.float(), scores=covariance.diagonal().clone(), spectrum=values)


def random_coordinates(d, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Selection(indices=torch.randperm(d, generator=g)[:k].sort().values)


def effective_dimension(spectrum, energy=0.9):
    """Smallest k whose top-k eigenvalues hold `energy` of the total."""
    values = torch.sort(spectrum.double(), descending=True).values
    cumulative = torch.cumsum(values, 0) / values.sum()
    return int(torch.searchsorted(cumulative, torch.tensor(energy, dtype=cumulative.dtype)).item()) + 1


def teacher_gradients(model, batches, layers):
    """{layer: (g, h)} at response positions: h = hidden_states[layer] of the teacher and
    g = d(response NLL sum)/dh, for each requested hidden_states index.

    The embeddings are made to require grad so every hidden state is part of the graph while the
    teacher's weights stay frozen.
    """
    found = {layer: ([], []) for layer in layers}
    for batch in batches:
        embeds = model.get_input_embeddings()(batch["input_ids"]).detach().requires_grad_()
        # (a sharded model's own forward bypasses its root unit, whose parameters are gathered for it)
        with torch.enable_grad(), gathered_root(root_of(model)):
            out = model(inputs_embeds=embeds, attention_mask=batch["attention_mask"], output_hidden_states=True,
                        use_cache=False)
            targets, where = batch["labels"][:, 1:], response_positions(batch["labels"])
            nll = F.cross_entropy(out.logits[:, :-1][where].float(), targets[where], reduction="sum")
            hidden = [out.hidden_states[layer] for layer in layers]
            grads = torch.autograd.grad(nll, hidden)
        for layer, h, g in zip(layers, hidden, grads):
            found[layer][0].append(g[:, :-1][where].detach())
            found[layer][1].append(h[:, :-1][where].detach())
    return {layer: (torch.cat(g), torch.cat(h)) for layer, (g, h) in found.items()}
