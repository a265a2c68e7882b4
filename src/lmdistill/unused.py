"""Refuse a key that a user set but that the rest of their config makes meaningless: an accepted key is
either honoured or refused, never silently ignored.

Settings under a switch the user turned off (eval.generate: false, train.eval_every: 0) are not refused: turning a
feature off keeps its settings for when it is turned on again, and nobody expects them to act meanwhile. What is
refused is a key the user may believe acts, e.g. a sampling temperature with greedy decoding."""


def refuse_unused(model, rules):
    """ValueError for the first key set to a non-default value that `model` will not read.

    rules: (key, used, when) triples; `used` says whether the key is read with this config, `when` says when it is.
    A key left at its default is never refused, so a resolved config (every default written out) loads again."""
    for key, used, when in rules:
        default = type(model).model_fields[key].get_default(call_default_factory=True)
        if not used and getattr(model, key) != default:
            raise ValueError(f"{key}={getattr(model, key)!r} is only used {when}; remove it")
