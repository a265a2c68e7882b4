"""The seed papers' claims, each asked of every committed compare grid that can answer it (issue 25): one table per
claim, one row per comparison x setting x task, with the paired 95 % interval and Holm's verdict.

Nothing is trained: the script reads each grid's rows.json and resolved compare.yaml and writes
benchmarks/results/claims/ (claims.md, claims.json, provenance.json). Holm's family is every comparison of this
script that a grid answers on one task (about 20), on its primary metric: bits per byte across tokenizers, else CE.

    python benchmarks/claims.py
"""
import argparse
import json
from pathlib import Path

import yaml

from common import header, provenance, write_provenance
from lmdistill.compare.report import difference_text, holm_cells, paired_comparisons
from lmdistill.io import atomic_write_text

ROOT = Path(__file__).resolve().parent / "results"
SETTINGS = [("random 6x256 student", "methods"), ("random 6x256 student, controls at one commit", "methods-controls"),
            ("pretrained cut student", "pretrained-cut"),
            ("pretrained cross-tokenizer student", "pretrained-cross")]
CLAIMS = [
    ("Flex-KD: gradient-selected teacher directions, no projector, do as well as a learned projector",
     [("flexkd", "projection")]),
    ("Flex-KD: its selection is what helps; it beats other directions at the same k",
     [("flexkd", "pca"), ("flexkd", "random"), ("flexkd", "functional")]),
    ("DistillLens: the logit lens improves on its own KD base",
     [("distillens", "rkl"), ("distillens+ce", "kd-rkl")]),
    ("Survey: logit KD plus a feature term (`best`) beats every other method",
     [("best", "*")]),
]
CAVEATS = {"methods": "made before 3698070: its `random` control drew one subset and `projection` one initialisation "
                      "(seed 0's) for every seed, and it has no reverse-KL-alone method (`rkl`); `methods-controls` "
                      "asks those questions again at one commit"}


def questions(methods):
    """Every (claim index, method, reference) this grid's methods answer, `*` expanded to every other method."""
    out = []
    for index, (_, pairs) in enumerate(CLAIMS):
        for method, reference in pairs:
            refs = [m for m in methods if m != method] if reference == "*" else [reference]
            out += [(index, method, r) for r in refs if method in methods and r in methods]
    return out


def grid_answers(folder):
    """The paired differences of one grid, per task, with Holm over the task's questions; None if not run."""
    if not (folder / "rows.json").is_file():
        return None
    rows = json.loads((folder / "rows.json").read_text())
    compare = yaml.safe_load((folder / "compare.yaml").read_text())
    answers = []
    for task in compare["tasks"]:
        task_rows = [r for r in rows if r["task"] == task]
        primary = "bpb" if all("bpb" in r for r in task_rows) else "ce"
        present = {r["method"] for r in task_rows}
        claim_of = {(method, reference): index for index, method, reference
                    in questions([m for m in compare["methods"] if m in present])}
        found, family = paired_comparisons(task_rows, list(claim_of), [primary, "rougeL"], primary)
        kept = ("mean", "interval", "p", "n", "lower_in", "holm")
        answers += [{"claim": claim_of[(method, reference)], "method": method, "reference": reference, "task": task,
                     "metric": primary, **{k: d[primary][k] for k in kept}, "family": family,
                     "text": difference_text(d[primary]), "rougeL": d["rougeL"],
                     "rougeL_text": difference_text(d["rougeL"])}
                    for method, reference, d in found if d[primary] is not None and "holm" in d[primary]]
    return {"answers": answers, "not_applicable": compare.get("not_applicable") or {},
            "commits": sorted({r["commit"][:10] + ("" if r["clean"] else " (not clean)") for r in rows})}


def claim_table(index, grids):
    lines = ["| setting | task | comparison | metric | difference (95 % CI) | p | Holm p | Holm verdict at 5 % "
             "| ROUGE-L difference (95 % CI) |", "|---|---|---|---|---|---|---|---|---|"]
    for label, name in SETTINGS:
        grid = grids[name]
        if grid is None:
            lines.append(f"| {label} | - | (grid `{name}` not run yet) | | | | | | |")
            continue
        mine = [d for d in grid["answers"] if d["claim"] == index]
        for d in mine:
            p, adjusted, verdict = holm_cells(d)
            lines.append(f"| {label} | {d['task']} | {d['method']} − {d['reference']} | {d['metric']} | {d['text']} "
                         f"| {p} | {adjusted} ({d['family']}) | {verdict} | {d['rougeL_text']} |")
        missing = {m for m, _ in CLAIMS[index][1]} & set(grid["not_applicable"])
        for method in sorted(missing):
            lines.append(f"| {label} | - | {method}: not applicable | | | | | | |")
        if not mine and not missing:
            lines.append(f"| {label} | - | (the grid has none of these methods) | | | | | | |")
    return "\n".join(lines)


def excludes_zero(d):
    return d is not None and d["interval"] is not None and (d["interval"][0] > 0 or d["interval"][1] < 0)


def separation_table(grids):
    """Per setting and task: of the comparisons answered, how many the primary metric's raw 95 % interval separates
    (excludes 0), how many Holm resolves, and how many ROUGE-L's raw interval separates."""
    lines = ["| setting | task | comparisons | primary metric: interval excludes 0 | Holm-resolved "
             "| ROUGE-L: interval excludes 0 |", "|---|---|---|---|---|---|"]
    for label, name in SETTINGS:
        answers = (grids[name] or {}).get("answers", [])
        for task in sorted({d["task"] for d in answers}):
            mine = [d for d in answers if d["task"] == task]
            rouge = [d for d in mine if d["rougeL"] is not None]
            rouge_text = f"{sum(excludes_zero(d['rougeL']) for d in rouge)} of {len(rouge)}" if rouge else "-"
            resolved = sum(holm_cells(d)[2] != "not resolved" for d in mine)
            lines.append(f"| {label} | {task} | {len(mine)} | {mine[0]['metric']}: "
                         f"{sum(excludes_zero(d) for d in mine)} | {resolved} | {rouge_text} |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default=str(ROOT), help="the folder holding each grid's results folder")
    p.add_argument("--out", default=str(ROOT / "claims"))
    args = p.parse_args()
    out = Path(args.out)
    record = provenance(out)
    grids = {name: grid_answers(Path(args.results) / name) for _, name in SETTINGS}
    parts = [header("The seed papers' claims, per setting", record) +
             "Each row pairs two methods of one compare grid seed by seed (negative = the first is lower, i.e. "
             "better). p: two-sided paired t-test; Holm p: adjusted over all of this file's comparisons that the "
             "grid answers on that task (the count in brackets). Grids and the commits their cells ran at:", ""]
    for label, name in SETTINGS:
        grid = grids[name]
        state = "not run yet" if grid is None else "cells at " + ", ".join(grid["commits"])
        caveat = f"; {CAVEATS[name]}" if name in CAVEATS and grid is not None else ""
        parts.append(f"- {label}: `benchmarks/results/{name}/` ({state}{caveat})")
    for index, (claim, _) in enumerate(CLAIMS):
        parts += ["", f"## {claim}", "", claim_table(index, grids)]
    parts += ["", "## Does ROUGE-L separate the methods?", "",
              "The same comparisons on ROUGE-L of greedy generations (the papers' metric) beside the primary metric: "
              "how many of each task's comparisons each one's raw paired 95 % interval separates.", "",
              separation_table(grids)]
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "claims.md", "\n".join(parts) + "\n")
    atomic_write_text(out / "claims.json", json.dumps(grids, indent=1) + "\n")
    write_provenance(out / "provenance.json", record)
    print(f"wrote {out}/claims.md")


if __name__ == "__main__":
    main()
