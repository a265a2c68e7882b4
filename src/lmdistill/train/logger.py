"""Metrics to JSONL (one record per line) and TensorBoard, from the main process only."""
import json
from pathlib import Path


class MetricsLogger:
    def __init__(self, run_dir, enabled=True):
        self.enabled = enabled
        if not enabled:
            return
        self.file = open(Path(run_dir) / "metrics.jsonl", "a", encoding="utf-8")
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))
        except ImportError:
            self.tb = None

    def log(self, step, kind, values):
        if not self.enabled:
            return
        self.file.write(json.dumps({"step": step, "kind": kind, **values}) + "\n")
        self.file.flush()
        if self.tb is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    self.tb.add_scalar(f"{kind}/{key}", value, step)

    def close(self):
        if self.enabled:
            self.file.close()
            if self.tb is not None:
                self.tb.close()
