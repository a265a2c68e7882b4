"""benchmarks/step_report.py: a time target is judged on the total time over the same steps and the per-round
ratios, not on the ratio of two medians that may come from batches of different length."""
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import step_report  # noqa: E402


def _timing(rounds):
    return {"rounds_s": rounds, "median_s": statistics.median(rounds)}


def test_ratios_of_total_time_per_round_and_of_medians():
    floor, mode = _timing([2.0, 4.0, 6.0]), _timing([2.2, 4.8, 6.6])
    total, paired, medians = step_report.time_ratios(mode, floor)
    assert abs(total - 13.6 / 12.0) < 1e-12
    assert abs(paired - 1.1) < 1e-12  # median of 1.1, 1.2, 1.1
    assert abs(medians - 4.8 / 4.0) < 1e-12


def test_a_target_is_met_on_total_time_and_per_round_even_when_the_medians_fall_on_other_batches():
    # batches a, b, c, d, a: the mode costs about 1.2x on each, but b and c are close in length and the noise of
    # one round puts the floor's median on b (3.0) and the mode's on c (3.8)
    floor, mode = _timing([1.0, 3.0, 3.2, 5.0, 1.0]), _timing([1.2, 3.9, 3.8, 6.0, 1.2])
    times = {"mode": mode, "floor": floor}
    total, paired, medians = step_report.time_ratios(mode, floor)
    assert medians > 1.25 and total < 1.25 and paired < 1.25
    assert step_report.time_ratio_line(times, "mode", "floor", 1.25).endswith("| yes |")


def test_a_target_is_missed_when_either_total_time_or_the_per_round_ratio_exceeds_it():
    # per round 1.1, 1.1, 1.5: the median round is within, the total (dominated by the long batch) is not
    floor, mode = _timing([1.0, 1.0, 10.0]), _timing([1.1, 1.1, 15.0])
    line = step_report.time_ratio_line({"mode": mode, "floor": floor}, "mode", "floor", 1.25)
    assert line.endswith("| **no** |")
    # per round 1.3 on two of three: the total (dominated by the cheap long batch) is within, per round is not
    floor, mode = _timing([1.0, 1.0, 10.0]), _timing([1.3, 1.3, 10.0])
    total, paired, _ = step_report.time_ratios(mode, floor)
    assert total < 1.25 < paired
    assert step_report.time_ratio_line({"mode": mode, "floor": floor}, "mode", "floor", 1.25).endswith("| **no** |")
    assert step_report.time_ratio_line({"mode": mode, "floor": floor}, "mode", "floor", None).endswith("|  |")


def test_memory_rows_have_as_many_cells_as_the_time_ratio_table():
    header = "| ratio | of total time | per round | of medians | target | met |"
    memory = {m: {"peak_rss_gib": 5.0, "step_increase_gib": 0.5} for m in ("kd", "lens", "x-uld", "x-floor")}
    rows = step_report.memory_lines(memory)
    assert len(rows) == 3 and all(row.count("|") == header.count("|") for row in rows)
    floor = _timing([1.0, 2.0])
    assert step_report.time_ratio_line({"a": floor, "b": floor}, "a", "b", 1.1).count("|") == header.count("|")
