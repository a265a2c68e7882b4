"""Evaluation metrics and baselines on known inputs, and sampled generation with seeds."""
import pytest

from lmdistill.eval.report import metrics_table
from lmdistill.eval.scores import accuracy, baselines, constant_baseline, normalise_label, rouge_l, score


def test_rouge_l_known_values():
    assert rouge_l(["the cat sat"], ["the cat sat"]) == pytest.approx(100.0)
    assert rouge_l(["dog"], ["the cat sat"]) == 0.0
    # LCS "the cat" = 2 of 3 reference and 2 of 2 prediction tokens: F = 2PR/(P+R) = 0.8
    assert rouge_l(["the cat"], ["the cat sat"]) == pytest.approx(80.0)
    assert rouge_l(["running dogs"], ["run dog"]) == pytest.approx(100.0)  # Porter stemmer


def test_accuracy_normalises_answers():
    assert normalise_label(" Spam.\nbecause") == "spam"
    assert accuracy(["Spam.", "ham", "ham!"], ["spam", "spam", "ham"]) == pytest.approx(200 / 3)


def test_constant_baseline():
    assert constant_baseline(["ham", "spam", "ham"]) == "ham"
    unique = ["a plant of the genus x", "a plant of the genus y", "an animal with fur"]
    assert constant_baseline(unique) == "a plant of the"


def test_baselines_and_classification_scores():
    rows = baselines(["ham", "ham", "spam"], ["is this spam?", "hello"], ["ham", "spam"], "classification")
    assert rows["constant"][0] == ["ham", "ham"] and rows["echo"][0] == ["is this spam?", "hello"]
    metrics = score(rows["constant"][0], ["ham", "spam"], "classification")
    assert metrics["accuracy"] == 50.0 and "rougeL" in metrics


def test_report_table_shows_std_and_missing_values():
    table = metrics_table({"student": {"ce": 1.23456, "rougeL": 10.0, "rougeL_std": 1.5}, "echo": {"rougeL": 3.0}})
    assert "| student | 1.235 | 10.0 ± 1.5 |" in table and "| echo | - | 3.0 |" in table


def test_report_samples_show_each_generations_scores():
    from lmdistill.eval.report import render_report
    result = {"split": "test", "examples": 1, "response_tokens": 3, "task": "generation",
              "metrics": {"student": {"ce": 1.0, "gen_bpb": 2.5, "loops": 100.0}},
              "samples": [{"prompt": "p", "reference": "r", "student": "a a a", "student_loops": True,
                           "student_gen_bpb": 0.123, "teacher": "t", "teacher_loops": False, "teacher_gen_bpb": None},
                          {"prompt": "p", "reference": "r", "student": "old", "teacher": ""}]}  # an older run's
    report = render_report(result, {})
    assert "  - student: 'a a a' (teacher: 0.123 bits/byte, loops)" in report
    assert "  - teacher: 't'\n" in report and "  - student: 'old'\n" in report
    assert "| student | 1.000 | 2.500 | 100 |" in report
