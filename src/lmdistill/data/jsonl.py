"""Read instruction records `{"prompt": str, "response": str}` from JSONL, with line-numbered errors."""
import json
from pathlib import Path

from lmdistill.errors import UserError


def read_records(path):
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data file not found: {path}")
    records = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            where = f"{path} line {number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise UserError(f"{where}: not valid UTF-8; re-encode the file as UTF-8") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(record, dict):
                raise UserError(f"{where}: expected an object with 'prompt' and 'response'")
            for key in ("prompt", "response"):
                if key not in record:
                    raise UserError(f"{where}: missing '{key}' (each record needs 'prompt' and 'response')")
                if not isinstance(record[key], str):
                    raise UserError(f"{where}: '{key}' must be a string, got {type(record[key]).__name__}")
            if not record["response"].strip():
                raise UserError(f"{where}: empty 'response'; remove the record or give it a response")
            records.append({"prompt": record["prompt"], "response": record["response"]})
    if not records:
        raise UserError(f"{path}: no records; the file is empty")
    return records
