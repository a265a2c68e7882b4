"""Reading a YAML config: unknown keys named with the nearest valid one, `--set` paths, one-line errors."""
import json
import types
import typing
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from lmdistill.errors import UserError, did_you_mean


def _model_class(annotation):
    """The BaseModel class inside an annotation like `X`, `X | None`, `Optional[X]`, or None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_class(arg)
            if found:
                return found
    return None


def _list_item_class(annotation):
    """X for an annotation like `list[X]` or `list[X] | None` with X a BaseModel, else None."""
    candidates = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) \
        else (annotation,)
    for candidate in candidates:
        if typing.get_origin(candidate) is list:
            return _model_class(typing.get_args(candidate)[0])
    return None


def check_keys(model_cls, data, where=""):
    """Raise UserError on the first key that `model_cls` does not have, suggesting the nearest one."""
    if not isinstance(data, dict):
        return
    fields, moved = model_cls.model_fields, getattr(model_cls, "moved_to_params", {})
    for key, value in data.items():
        if key in moved:
            raise UserError(f"config: {where}{key} moved: write params: {{{moved[key]}: {json.dumps(value, default=str)}}}")
        if key not in fields:
            raise UserError(f"config: unknown key '{where}{key}'{did_you_mean(key, fields)}")
        sub = _model_class(fields[key].annotation)
        if sub is not None:
            check_keys(sub, value, f"{where}{key}.")
        item = _list_item_class(fields[key].annotation)
        if item is not None and isinstance(value, list):
            for i, entry in enumerate(value):
                check_keys(item, entry, f"{where}{key}[{i}].")


def set_path(data, dotted, value):
    keys = dotted.split(".")
    node = data
    for i, key in enumerate(keys):
        last = i == len(keys) - 1
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise UserError(f"--set {dotted}: '{key}' is not an index of a list of {len(node)}")
            key = int(key)
        elif not isinstance(node, dict):
            raise UserError(f"--set {dotted}: '{'.'.join(keys[:i])}' is not a section")
        if last:
            node[key] = value
        else:
            if isinstance(node, dict) and node.get(key) is None:
                node[key] = [] if key == "objectives" else {}
            node = node[key]


def one_line(error: ValidationError, prefix=""):
    first = error.errors()[0]
    where = ".".join([prefix] * bool(prefix) + [str(p) for p in first["loc"]])
    msg = first["msg"].removeprefix("Value error, ")
    got = first.get("input")
    shown = f" (got {got!r})" if first["type"] != "value_error" and not isinstance(got, (dict, list)) else ""
    return f"config: {where}: {msg}{shown}" if where else f"config: {msg}{shown}"


def read_yaml(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"config file {path}{where}: invalid YAML ({getattr(e, 'problem', e)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file {path}: top level must be a mapping of sections")
    return data
