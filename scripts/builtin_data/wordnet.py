"""WordNet 3.0 (Debian's wordnet-base dict files) -> define-word records."""

import os
import re

from .common import collapse_ws


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
