"""`lmdistill compare`: methods x seeds (x tasks) over one teacher, student recipe and budget; paired by seed,
resumable cell by cell, the teacher computed once per task; a Markdown report with intervals and a plot."""
from lmdistill.compare.runner import run_compare

__all__ = ["run_compare"]
