"""Distillation between models with different tokenizers: alignment of the two tokenizations, the vocabularies' shared
tokens, and losses between distributions over different vocabularies."""
