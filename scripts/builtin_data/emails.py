"""SpamAssassin emails (the npm package's raw .txt files) -> spam and email-subject records."""

import email
import email.header
import email.policy
import html
import os
import quopri
import random
import re

from .common import collapse_ws

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


def truncate_words(text, limit=MAX_BODY_CHARS):
    """Cut text to at most `limit` chars, at a word boundary when there is one nearby."""
    if len(text) <= limit:
        return text
    cut = text[:limit + 1]  # +1: if the char after the limit is a space, cut there
    space = cut.rfind(" ")
    if space >= limit // 2:
        return cut[:space].rstrip()
    return text[:limit].rstrip()  # one enormous token (URL, base64 junk): hard cut


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
