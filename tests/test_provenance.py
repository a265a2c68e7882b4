"""The provenance record written beside every result: commit and clean/dirty tree, versions, machine, command, date.
Fast: no model is loaded."""
import subprocess

import pytest

from lmdistill import provenance


def git(root, *args):
    subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                   capture_output=True)


@pytest.fixture
def repo(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    git(tmp_path, "add", "code.py")
    git(tmp_path, "commit", "-q", "-m", "first")
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    return tmp_path, head.strip()


def test_clean_tree_is_clean(repo):
    root, head = repo
    state = provenance.git_state(root)
    assert state["commit"] == head and state["clean"] is True and state["changed"] == []
    assert provenance.commit_text(state) == f"{head[:10]} (clean)"


def test_modified_or_untracked_file_makes_the_tree_dirty(repo):
    root, head = repo
    (root / "code.py").write_text("x = 2\n")
    state = provenance.git_state(root)
    assert state["commit"] == head and state["clean"] is False and any("code.py" in c for c in state["changed"])
    git(root, "checkout", "-q", "code.py")
    (root / "new.py").write_text("")
    state = provenance.git_state(root)
    assert state["clean"] is False and "uncommitted changes: 1 paths" in provenance.commit_text(state)


def test_the_results_own_directory_does_not_count(repo, monkeypatch):
    root, _ = repo
    (root / "results" / "cells").mkdir(parents=True)
    (root / "results" / "cells" / "eval.json").write_text("{}")
    assert provenance.git_state(root)["clean"] is False
    assert provenance.git_state(root, exclude=[root / "results"])["clean"] is True
    monkeypatch.chdir(root)
    assert provenance.git_state(root, exclude=["results"])["clean"] is True
    (root / "code.py").write_text("x = 3\n")  # a code change still counts
    assert provenance.git_state(root, exclude=["results"])["clean"] is False


def test_outside_a_checkout_nothing_is_claimed(tmp_path):
    state = provenance.git_state(tmp_path)
    assert state["commit"] is None and state["clean"] is None
    assert provenance.commit_text(state).startswith("not recorded")


def test_record_has_every_field(monkeypatch):
    monkeypatch.setattr("sys.argv", ["benchmarks/x.py", "--steps", "3"])
    rec = provenance.record()
    assert set(rec) >= {"git", "versions", "machine", "kernels", "command", "date_utc"}
    assert set(rec["git"]) >= {"commit", "clean"}
    for name in ("torch", "transformers", "accelerate", "python"):
        assert rec["versions"][name], name
    assert "cpu_capability" in rec["kernels"] and "CPUs" in rec["machine"]
    monkeypatch.setenv("MKL_ENABLE_INSTRUCTIONS", "SSE4_2")  # a setting that moves the kernels is recorded
    assert provenance.record()["kernels"]["MKL_ENABLE_INSTRUCTIONS"] == "SSE4_2"
    assert rec["command"] == "benchmarks/x.py --steps 3"
    assert rec["date_utc"].endswith("Z")
    text = provenance.summary(rec)
    assert "commit" in text and rec["versions"]["torch"] in text and "benchmarks/x.py --steps 3" in text


def test_compare_cells_results_dir_from_the_environment(repo, monkeypatch):
    root, _ = repo
    (root / "grid").mkdir()
    (root / "grid" / "rows.json").write_text("[]")
    monkeypatch.setattr(provenance, "SOURCE_DIR", root)
    monkeypatch.setattr(provenance.git_state, "__defaults__", (root, ()))
    assert provenance.record()["git"]["clean"] is False
    monkeypatch.setenv(provenance.RESULTS_DIR_ENV, str(root / "grid"))
    assert provenance.record()["git"]["clean"] is True


def test_compare_report_says_which_commits_the_cells_came_from():
    from lmdistill.compare.report import commits_line
    rows = [{"commit": "a" * 40, "clean": True}, {"commit": "a" * 40, "clean": True}]
    assert commits_line(rows) == f"cells' code: commit {'a' * 10} (clean) (2 cells)"
    line = commits_line(rows + [{"commit": "b" * 40, "clean": False}, {}])
    assert line.startswith("cells' code came from 3 versions:") and "not recorded (1 cell)" in line
    assert f"{'b' * 10} (uncommitted changes) (1 cell)" in line
