"""Shared by the dataset builders: whitespace, the split into train/dev/test, the JSON Lines files."""

import json
import os
import random
import re
import tempfile


def collapse_ws(text):
    return re.sub(r"\s+", " ", text).strip()


def write_atomic(path, data):
    """Write bytes to path via a temp file in the same directory + os.replace."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def jsonl_bytes(records):
    lines = [json.dumps({"prompt": r["prompt"], "response": r["response"]}, ensure_ascii=False)
             for r in records]
    return ("\n".join(lines) + "\n").encode("utf-8")


def split_by_group(records, sizes, seed):
    """
    Shuffle and split records into test/dev/train. Records with the same r["group"] (the
    same definition, the same email body, the same subject line) always land in the same
    split, so nothing leaks from train into dev/test. Test and dev are filled to their size.
    """
    groups = {}
    for r in sorted(records, key=lambda r: (r["prompt"], r["response"])):
        groups.setdefault(r["group"], []).append(r)
    order = sorted(groups)
    random.Random(seed).shuffle(order)
    splits = {"train": [], "dev": [], "test": []}
    for k in order:
        group = groups[k]
        for name in ("test", "dev"):
            if len(splits[name]) + len(group) <= sizes[name]:
                splits[name].extend(group)
                break
        else:
            splits["train"].extend(group)
    for name in splits:  # a group's records are adjacent; shuffle within each split
        random.Random(f"{seed}-{name}").shuffle(splits[name])
    return splits
