"""Refuse a key that a user set but that the rest of their config makes meaningless: an accepted key is
either honoured or refused, never silently ignored."""


def refuse_unused(model, rules):
    """ValueError for the first key set to a non-default value that `model` will not read.

    rules: (key, used, when) triples; `used` says whether the key is read with this config, `when` says when it is.
    A key left at its default is never refused, so a resolved config (every default written out) loads again."""
    for key, used, when in rules:
        default = type(model).model_fields[key].get_default(call_default_factory=True)
        if not used and getattr(model, key) != default:
            raise ValueError(f"{key}={getattr(model, key)!r} is only used {when}; remove it")
