"""Run a compare grid: per task, the teacher's cache and reference rows once; then each unfinished cell in its
own process (so its wall time and peak memory are its own); then the report."""
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from lmdistill import provenance
from lmdistill.compare.grid import cells
from lmdistill.compare.report import write_report
from lmdistill.compare.schema import load_compare
from lmdistill.config import save_config
from lmdistill.config_keys import read_yaml
from lmdistill.errors import UserError
from lmdistill.io import atomic_write_json, atomic_write_text


def is_done(cell):
    """A cell counts as finished when it wrote eval.json under exactly this cell's config. The saved config is
    compared as written, not re-read through the schema: a default that changed since means a different run."""
    run_dir = cell.run_dir
    if not (run_dir / "eval.json").is_file() or not (run_dir / "config.yaml").is_file():
        return False
    try:
        return read_yaml(run_dir / "config.yaml") == cell.config.model_dump(mode="json")
    except UserError:
        return False


def reference_key(config):
    """What the reference rows (teacher, trivial baselines) depend on."""
    dumped = config.model_dump(mode="json")
    dumped["eval"].pop("baselines")  # whether a cell repeats them, not what they are
    return {key: dumped[key] for key in ("teacher", "data", "eval")}


def prepare_task(compare, task, task_cells, log=print):
    """Build (or check) the task's teacher cache with every method's teacher layers, and evaluate the teacher and
    the trivial baselines once. Returns the reference record. No student is built: what each method needs from the
    teacher is read from its config (build.planned_objectives)."""
    from lmdistill.build import teacher_parts
    root = Path(compare.run_dir)
    first = task_cells[0].config
    ref_path = root / "reference" / f"{task}.json"
    reference = json.loads(ref_path.read_text()) if ref_path.is_file() else None
    if reference is not None and reference.get("key") != reference_key(first):
        reference = None
    cached = [cell for cell in task_cells if cell.config.teacher_cache is not None]  # not attention methods
    if reference is not None and not cached:
        return reference
    parts = teacher_parts(first, splits=("train", first.eval.split))
    if cached:
        build_task_cache(compare, task, parts, cached, log)
    if reference is None:
        reference = reference_record(task, parts, root, log)
        atomic_write_json(ref_path, reference)
    del parts
    gc.collect()
    return reference


def build_task_cache(compare, task, parts, cached, log=print):
    """The task's teacher cache, holding every cached method's teacher layers (one seed's cells name them all)."""
    from lmdistill.build import planned_objectives
    from lmdistill.objectives.needs import union
    from lmdistill.teachers.cache import load_or_build
    objectives = [o for cell in cached if cell.seed == cached[0].seed
                  for o in planned_objectives(cell.config, parts.teacher.config)]
    teacher_needs = union(o.needs() for o in objectives).teacher
    layers = list(teacher_needs.hidden) if teacher_needs is not None else []
    started = time.time()
    cross = parts.cross_tokenizer  # then the cache holds the teacher's own encoding, bound to the student tokenizer
    cache = load_or_build(cached[0].config.teacher_cache.dir, parts.teacher, parts.teacher_tokenizer or parts.tokenizer,
                          parts.teacher_examples("train"), len(parts.teacher_tokenizer) if cross else parts.vocab_size,
                          layers, compare.cache, log=log, student_tokenizer=parts.tokenizer if cross else None)
    size = sum(f["bytes"] for f in cache.manifest["files"].values())
    log(f"{task}: teacher cache ready in {time.time() - started:.0f} s ({size / 2**20:.0f} MiB)")


def reference_record(task, parts, root, log=print):
    """The teacher's held-out CE (and generation scores) and the trivial baselines': every cell's reference rows."""
    from lmdistill.eval.run import held_out, reference_rows
    from lmdistill.eval.teacher_forced import teacher_forced
    from lmdistill.teachers import ResponseLM
    first = parts.config  # the task's first cell: teacher, data and eval are the same in all of them
    split = first.eval.split
    log(f"{task}: evaluating the teacher and the trivial baselines on {split}")
    examples = held_out(parts, split)
    paired = parts.splits[split].paired  # a teacher with another tokenizer: its own encoding, and bits per byte
    vocab = len(parts.teacher_tokenizer) if paired is not None else parts.vocab_size
    forced = teacher_forced(ResponseLM(parts.teacher, vocab), None, parts.teacher_examples(split)[:len(examples)],
                            first.eval.batch_size, parts.teacher_pad_id, paired=paired, side=0)
    rows = {"teacher": {"ce": forced["ce"], **({"bpb": forced["bpb"]} if paired is not None else {})}}
    if first.eval.generate:
        generated, _ = reference_rows(parts, parts.teacher, split, log=log)
        rows["teacher"].update(generated.pop("teacher"))
        rows.update(generated)
    return {"key": reference_key(first), "split": split, "examples": len(examples),
            "response_tokens": forced["tokens"], "task_kind": parts.task, "rows": rows,
            "provenance": provenance.record(exclude=[root])}


def run_cell(cell, log=print):
    """Train and evaluate one cell with `lmdistill train` in a child process; its output goes to train.log."""
    cell.run_dir.mkdir(parents=True, exist_ok=True)
    config_path = cell.run_dir.parent / f"seed{cell.seed}.yaml"
    save_config(cell.config, config_path)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false",
           # the grid's run_dir (cells/TASK/METHOD/seedN is grid.cells' layout): its files are not code changes
           provenance.RESULTS_DIR_ENV: str(cell.run_dir.parents[3].resolve())}
    started = time.time()
    with open(cell.run_dir.parent / f"seed{cell.seed}.log", "w") as out:
        code = subprocess.call([sys.executable, "-m", "lmdistill", "train", str(config_path), "--overwrite"],
                               stdout=out, stderr=subprocess.STDOUT, env=env)
    return code, time.time() - started


ROW_METRICS = ("bpb", "ce", "kl", "rougeL", "accuracy", "gen_bpb", "gen_nll", "distinct1", "distinct2", "loops")


def scores_text(row):
    """A finished cell's line in the progress log: its primary metric, beside its student's level before training."""
    if "bpb" in row:
        return f"bits/byte {row['bpb']:.4f} (before training {row['bpb_before']:.4f}), CE {row['ce']:.3f}"
    before = f" (before training {row['ce_before']:.3f})" if "ce_before" in row else ""
    return f"CE {row['ce']:.3f}{before}, KL {row.get('kl', float('nan')):.3f}"


def cell_row(cell):
    result = json.loads((cell.run_dir / "eval.json").read_text())
    student = result["metrics"]["student"]
    before = result["metrics"].get("student before training", {})  # a pretrained student's own level
    git = result.get("provenance", {}).get("git", {})
    row = {"task": cell.task, "method": cell.method, "seed": cell.seed, "steps": cell.config.train.steps,
           **{k: student[k] for k in ROW_METRICS if k in student},
           **{f"{k}_before": before[k] for k in ("bpb", "ce") if k in before},
           **{f"sampled_{k}": v for k, v in result["metrics"].get("student (sampled)", {}).items() if k in ROW_METRICS},
           **result.get("resources", {}), "commit": git.get("commit"), "clean": git.get("clean")}
    curves = {"train": [], "dev": []}
    for line in (cell.run_dir / "metrics.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if entry["kind"] == "train":
            curves["train"].append((entry["step"], entry["loss"]))
        elif entry["kind"] == "dev":
            curves["dev"].append((entry["step"], entry["ce"]))
    return row, curves


def run_compare(path, quick=False, report_only=False, online=False, log=print, overrides=(), run_dir=None):
    started = time.time()
    compare = load_compare(path, quick, overrides, run_dir)
    if online and compare.teacher != "online":
        compare.teacher = "online"
        compare.run_dir = compare.run_dir.rstrip("/") + "-online"  # the cached grid's results stay as they are
    grid = cells(compare)  # every cell's config is validated before anything runs
    root = Path(compare.run_dir)
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / "compare.yaml", _dump(compare))
    references = {}
    failed, trained = [], 0
    todo = [c for c in grid if not is_done(c)]
    log(f"compare: {len(grid)} cells ({len(compare.tasks)} tasks x {len(compare.methods)} methods x "
        f"{len(compare.seeds)} seeds), {len(grid) - len(todo)} already finished -> {root}")
    for task in compare.tasks:
        task_cells = [c for c in grid if c.task == task]
        if report_only:
            ref_path = root / "reference" / f"{task}.json"
            references[task] = json.loads(ref_path.read_text()) if ref_path.is_file() else None
            continue
        references[task] = prepare_task(compare, task, task_cells, log)
        for cell in [c for c in task_cells if c in todo]:
            code, seconds = run_cell(cell, log)
            where = f"{cell.task} / {cell.method} / seed {cell.seed}"
            if code != 0 or not is_done(cell):
                failed.append(where)
                log(f"[{grid.index(cell) + 1}/{len(grid)}] {where}: FAILED (exit {code}), see "
                    f"{cell.run_dir.parent / f'seed{cell.seed}.log'}")
                continue
            trained += 1
            row, _ = cell_row(cell)
            log(f"[{grid.index(cell) + 1}/{len(grid)}] {where}: {scores_text(row)} ({seconds:.0f} s)")
    finished = [c for c in grid if is_done(c)]
    rows, curves = [], {}
    for cell in finished:
        row, curve = cell_row(cell)
        rows.append(row)
        curves[(cell.task, cell.method, cell.seed)] = curve
    atomic_write_json(root / "rows.json", rows)
    # this invocation's own provenance (the report's code, versions, machine, command, date); each cell's is in its
    # eval.json and its commit in rows.json
    invocation = provenance.record(exclude=[root])
    atomic_write_json(root / "provenance.json", invocation)
    uncached = [m for m in compare.methods if compare.teacher == "cache"
                and any(c.method == m and c.config.teacher_cache is None for c in grid)]
    report = write_report(compare, rows, curves, references, root, online=uncached, provenance=invocation,
                          run_note=f"this invocation: {time.time() - started:.0f} s wall; {trained} cells trained, "
                                   f"{len(finished) - trained} found finished, {len(failed)} failed")
    log(report)
    if failed:
        raise UserError(f"{len(failed)} of {len(grid)} cells failed ({'; '.join(failed[:3])}); their logs are "
                        f"beside their run directories; rerun the same command to retry only those")
    return rows


def _dump(compare):
    import yaml
    return yaml.safe_dump(compare.model_dump(mode="json"), sort_keys=False)
