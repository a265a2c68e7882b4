"""ROUGE-L, classification accuracy, and the trivial baselines every score is reported beside."""
import re
import string
from collections import Counter


def rouge_l(predictions, references):
    """Mean ROUGE-L F (rouge-score, Porter stemmer) x 100."""
    from rouge_score import rouge_scorer
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    scores = [scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references)]
    return 100 * sum(scores) / len(scores)


def normalise_label(text):
    """First word, lower-cased, punctuation stripped: 'Spam.' and 'spam' are the same answer."""
    words = text.strip().lower().split()
    return words[0].strip(string.punctuation) if words else ""


def accuracy(predictions, references):
    hits = sum(normalise_label(p) == normalise_label(r) for p, r in zip(predictions, references))
    return 100 * hits / len(references)


def constant_baseline(train_responses):
    """The most common training response; when all are unique, the most common 4-word opening."""
    text, count = Counter(train_responses).most_common(1)[0]
    if count > 1:
        return text
    openings = Counter(" ".join(re.findall(r"\S+", r)[:4]) for r in train_responses)
    return openings.most_common(1)[0][0]


def baselines(train_responses, prompts, references, task):
    """{name: (prediction list, description)} for the constant and echo baselines."""
    constant = constant_baseline(train_responses)
    return {
        "constant": ([constant] * len(references), f"always answers {constant!r}"),
        "echo": (list(prompts), "repeats the prompt"),
    }


def score(predictions, references, task):
    metrics = {"rougeL": rouge_l(predictions, references)}
    if task == "classification":
        metrics["accuracy"] = accuracy(predictions, references)
    return metrics
