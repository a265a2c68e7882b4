"""Selectors by name: how a feature objective brings the teacher's width d_T to the student's width d_S.

Each selector is one registered class that declares, as data, what it computes and what it needs. The feature
objective, its config checks, the `select` job and compare grids read these declarations and never branch on a
selector's name, so a new selector is one new class here. The numerical work is in `features.selectors`.
"""
from typing import ClassVar

import torch

from lmdistill.errors import did_you_mean
from lmdistill.features import selectors

SELECTORS: dict[str, type["Selector"]] = {}


def register(cls):
    SELECTORS[cls.name] = cls
    return cls


def get_selector(name):
    """The selector class registered under `name`; ValueError naming the valid ones otherwise."""
    if name not in SELECTORS:
        raise ValueError(f"unknown selector '{name}'{did_you_mean(name, SELECTORS)}; valid: {', '.join(SELECTORS)}")
    return SELECTORS[name]


def selector_options():
    """Every FeatureParams key that some selector reads."""
    return {key for cls in SELECTORS.values() for key in cls.options}


def recorded_options():
    """Every option some selection artifact records, in registry order (score, pairing, seed): an artifact holds
    them all, None where its selector does not read one."""
    return list(dict.fromkeys(key for cls in SELECTORS.values() for key in cls.recorded))


def which(test):
    """'a, b or c': the names of the selectors whose class passes `test`, for messages."""
    chosen = [name for name, cls in SELECTORS.items() if test(cls)]
    return " or ".join(filter(None, [", ".join(chosen[:-1]), chosen[-1]])) if chosen else "no selector"


def seed_of(params):
    """The selector's seed: a Config fills an unset one with the run's seed; objectives built without a Config get 0."""
    return 0 if params.seed is None else params.seed


class Selector:
    """A selector's declaration, and its `select` for one layer. Instances hold the objective's FeatureParams."""
    name: ClassVar[str]
    options: ClassVar[tuple[str, ...]] = ()   # FeatureParams keys it reads; another selector's option set is refused
    recorded: ClassVar[tuple[str, ...]] = ()  # the options its artifact records: a reused artifact must match them
    calibrates: ClassVar[bool] = False        # runs the teacher's calibration pass (gradients and activations)
    selects: ClassVar[bool] = False           # keeps d_S of the teacher's d_T dimensions, chosen before training and
    #                                           written to a selection artifact (so the student must not be wider)
    learned: ClassVar[bool] = False           # a trainable Linear student -> teacher width per pair, seeded by
    #                                           `seed`, trained with the student and saved beside it
    full_width: ClassVar[bool] = False        # compares the full widths: needs metric cka, which accepts any
    functional_spectrum: ClassVar[bool] = False  # its spectrum is E[g g^T]'s: the pass logs the effective dimension
    score_name: ClassVar[str] = "none"        # the plot's names for the per-coordinate scores and the spectrum
    spectrum_name: ClassVar[str] = "E[g g^T] spectrum"

    def __init__(self, params):
        self.params = params

    def select(self, k, d_teacher, grads=None, acts=None):
        """A Selection of k of the d_teacher dimensions for one layer; a selector that calibrates gets the
        teacher's gradients and activations at the calibration response positions, [N, d_teacher] each."""
        raise NotImplementedError

    def projections(self, pairs, d_student, d_teacher):
        """The trainable maps of a learned selector, one per layer pair."""
        return torch.nn.ModuleList()


@register
class FlexKD(Selector):
    """Top-k teacher coordinates by a gradient score (Flex-KD)."""
    name = "flexkd"
    options = ("score", "pairing", "calibration_examples", "selection_file")
    recorded = ("score", "pairing")
    calibrates = selects = functional_spectrum = True

    @property
    def score_name(self):
        return self.params.score

    def select(self, k, d_teacher, grads=None, acts=None):
        return selectors.flexkd(grads, acts, k, self.params.score, self.params.pairing)


@register
class Functional(Selector):
    """Top-k eigenvectors of the gradient second moment E[g g^T] (rotation-invariant Flex-KD)."""
    name = "functional"
    options = ("calibration_examples", "selection_file")
    calibrates = selects = functional_spectrum = True
    score_name = "mean g^2"

    def select(self, k, d_teacher, grads=None, acts=None):
        return selectors.functional(grads, k)


@register
class PCA(Selector):
    """Top-k principal directions of the teacher's activations (control: variance, not function)."""
    name = "pca"
    options = ("calibration_examples", "selection_file")
    calibrates = selects = True
    score_name, spectrum_name = "activation variance", "activation covariance"

    def select(self, k, d_teacher, grads=None, acts=None):
        return selectors.pca(acts, k)


@register
class Random(Selector):
    """k teacher coordinates drawn with `seed` (control); every layer gets the same ones."""
    name = "random"
    options = ("seed", "selection_file")
    recorded = ("seed",)
    selects = True

    def select(self, k, d_teacher, grads=None, acts=None):
        return selectors.random_coordinates(d_teacher, k, seed_of(self.params))


@register
class Projection(Selector):
    """A learned linear map student -> teacher width (FitNets/TinyBERT)."""
    name = "projection"
    options = ("seed",)
    learned = True

    def projections(self, pairs, d_student, d_teacher):
        with torch.random.fork_rng():  # seed the projector without moving the global RNG
            torch.manual_seed(seed_of(self.params))
            return torch.nn.ModuleList(torch.nn.Linear(d_student, d_teacher, bias=False) for _ in pairs)


@register
class FullWidth(Selector):
    """No selection: the metric compares the full widths."""
    name = "none"
    full_width = True
