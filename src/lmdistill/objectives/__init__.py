"""Objectives: one small class per loss, looked up by name from one registry.

An objective declares what it reads from each model (`needs()`, needs.py), sees the student's and the
teacher's outputs at response positions (`teachers.ModelOutputs`) and returns the SUM of its per-token loss; the training loop divides by the global count of response
tokens, so accumulation and multi-process runs normalise the same way.
"""
from lmdistill.objectives.base import OBJECTIVES, Objective, ObjectiveParams, objective_params_class, register

# Importing the modules fills the registry.
from lmdistill.objectives import attention, ce, dkd, feature, lens, logit_kd, uld  # noqa: E402,F401

__all__ = ["OBJECTIVES", "Objective", "ObjectiveParams", "objective_params_class", "register", "build_objectives",
           "labels_of"]


def labels_of(objectives):
    """A unique log name per objective (or its params): its name, numbered when it appears more than once."""
    names = [o.name for o in objectives]
    return [n if names.count(n) == 1 else f"{n}_{i}" for i, n in enumerate(names)]


def build_objectives(params_list, context):
    objectives = [OBJECTIVES[p.name](p, context) for p in params_list]
    for i, objective in enumerate(objectives):
        objective.index = i  # position in the config's list: names per-objective files
    return objectives
