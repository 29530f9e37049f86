"""The exercise notebooks (06-10): nbgrader cells, points, student copies, full results.

tests/test_notebooks.py runs every notebook (these included) in smoke, where a failing check stops
the run; tests/test_grading.py grades them with nbgrader (blank, solved and wrong answers). Here: every
notebook has answer cells, tests with hidden tests, and written answers with points, and its opening
table states those points; the student copies are what `make student` writes, and hold no solution,
no rubric and no hidden test.
"""

import json
import re
import subprocess
import sys

import nbformat
import pytest

from conftest import ROOT

EXERCISES = sorted((ROOT / "notebooks").glob("[0-9][0-9]_ex*.ipynb"))
STUDENT = ROOT / "student" / "notebooks"
NBGRADER = ROOT / ".venv" / "bin" / "nbgrader"


def grade(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


def read(path):
    return nbformat.read(path, as_version=4)


def instructor_only_lines(nb) -> set[str]:
    """Lines of the instructor notebook that no student may see: inside solution regions, inside
    hidden tests, and the whole text of the written answers (their rubrics), unless the same line
    also stands outside them."""
    inside, outside = set(), set()
    for cell in nb.cells:
        written = cell.cell_type == "markdown" and grade(cell).get("solution")
        hidden = False
        for line in cell.source.splitlines():
            s = line.strip()
            if s in ("### BEGIN SOLUTION", "### BEGIN HIDDEN TESTS"):
                hidden = True
            elif s in ("### END SOLUTION", "### END HIDDEN TESTS"):
                hidden = False
            elif s:
                (inside if hidden or written else outside).add(s)
    return {s for s in inside - outside if len(s) > 6}


def stated_points(nb) -> tuple[int, int, int]:
    """(all, autograded, written) from the opening table's Points row."""
    m = re.search(r"\*\*Points\*\* \| (\d+) in all\. Autograded, (\d+): .*? Written answers, (\d+):",
                  nb.cells[0].source)
    assert m, "the first cell's table needs a Points row: N in all. Autograded, A: ... Written answers, W:"
    return tuple(int(x) for x in m.groups())


def test_every_exercise_has_answers_tests_and_written_answers():
    assert [p.stem[:2] for p in EXERCISES] == ["06", "07", "08", "09", "10"]
    for path in EXERCISES:
        nb = read(path)
        code_answers = [c for c in nb.cells if grade(c).get("solution") and c.cell_type == "code"]
        tests = [c for c in nb.cells if grade(c).get("grade") and c.cell_type == "code"]
        written = [c for c in nb.cells if grade(c).get("solution") and c.cell_type == "markdown"]
        assert code_answers and tests and len(written) >= 2, path.name
        assert all("### BEGIN SOLUTION" in c.source and "### END SOLUTION" in c.source for c in code_answers)
        assert all(grade(c)["points"] > 0 and grade(c)["locked"] for c in tests)
        assert all("assert" in c.source for c in tests)
        # every autograded test has hidden tests on inputs the student does not see
        unhidden = [grade(c)["grade_id"] for c in tests
                    if "### BEGIN HIDDEN TESTS" not in c.source or "### END HIDDEN TESTS" not in c.source]
        assert not unhidden, f"{path.name}: tests without hidden tests: {unhidden}"
        # written answers: points, a rubric for the instructor, no marker (the whole cell is replaced)
        assert all(grade(c)["grade"] and grade(c)["points"] > 0 and c.source.startswith("**Rubric")
                   for c in written), path.name
        ids = [grade(c)["grade_id"] for c in nb.cells if grade(c)]
        assert len(ids) == len(set(ids)), f"{path.name}: grade_ids must be unique"
        auto = sum(grade(c)["points"] for c in tests)
        manual = sum(grade(c)["points"] for c in written)
        assert stated_points(nb) == (auto + manual, auto, manual), path.name


@pytest.mark.parametrize("path", EXERCISES, ids=lambda p: p.stem)
def test_student_copy_holds_no_solution(path):
    student = read(STUDENT / path.name)
    text = "\n".join(c.source for c in student.cells)
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "HIDDEN TESTS", "Rubric", "worked answer",
                   "instructor's design", "What the measurements say"):
        assert marker not in text, f"student copy of {path.name}: {marker!r}"
    leaked = [line for line in instructor_only_lines(read(path)) if line in text]
    assert not leaked, f"instructor-only lines in the student copy of {path.name}: {leaked}"
    answers = [c for c in student.cells if grade(c).get("solution")]
    assert all("raise NotImplementedError()" in c.source for c in answers if c.cell_type == "code")
    assert all(c.source == "YOUR ANSWER HERE" for c in answers if c.cell_type == "markdown")
    # outputs cleared; the visible part of every test kept word for word
    assert all(not c.outputs and c.execution_count is None for c in student.cells if c.cell_type == "code")
    visible = [c.source.split("### BEGIN HIDDEN TESTS")[0].rstrip() for c in read(path).cells
               if grade(c).get("grade") and c.cell_type == "code"]
    released = [c.source.rstrip() for c in student.cells if grade(c).get("grade") and c.cell_type == "code"]
    assert visible == released


def test_student_copies_are_in_step(tmp_path):
    """`make student` (nbgrader generate_assignment) writes exactly the committed copies."""
    out = subprocess.run([str(NBGRADER), "generate_assignment", "notebooks", "--no-db", "--force",
                          "--log-level=WARN", f"--CourseDirectory.release_directory={tmp_path}"],
                         cwd=ROOT, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    fresh = sorted(p.name for p in (tmp_path / "notebooks").glob("*.ipynb"))
    assert fresh == sorted(p.name for p in STUDENT.glob("*.ipynb")) == [p.name for p in EXERCISES]
    for name in fresh:
        assert read(tmp_path / "notebooks" / name) == read(STUDENT / name), \
            f"student/notebooks/{name} is out of step with notebooks/{name}: run `make student`"


FULL_RUNS = ["06_ex1_more_epochs.ex1-lenet-15ep.seed0", "06_ex1_more_epochs.ex1-lenet-15ep.seed1",
             "06_ex1_more_epochs.ex1-lenet-15ep.seed2", "10_ex5_lenet_dropout_relu.ex5-lenet.seed0",
             "10_ex5_lenet_dropout_relu.ex5-lenet-relu-dropout.seed0",
             "10_ex5_lenet_dropout_relu.ex5-lenet-relu-dropout-normalize.seed0",
             "10_ex5_lenet_dropout_relu.ex5-lenet-relu-dropout-augment.seed0"]


@pytest.mark.parametrize("run", FULL_RUNS)
def test_full_results_are_committed_with_the_cpu_named(run):
    [path] = (ROOT / "results").glob(f"{run}.full.*.json")
    r = json.loads(path.read_text())
    assert r["setting"] == "full" and r["cpu_model"] and r["setting_values"]["train_subset"] is None
    assert r["num_examples"] == 60000 * r["setting_values"]["num_epochs"]
    assert len(r["epochs"]) == r["setting_values"]["num_epochs"]


def _full_runs_tool():
    import importlib.util

    path = ROOT / "tools" / "exercise_full_runs.py"
    if str(ROOT / "tools") not in sys.path:  # it imports tools/instructor_solutions.py
        sys.path.insert(0, str(ROOT / "tools"))
    spec = importlib.util.spec_from_file_location("exercise_full_runs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_full_results_table_matches_the_results_files():
    """The README's table of `full` runs is the one the committed results files give."""
    tool = _full_runs_tool()
    readme = (ROOT / "README.md").read_text()
    assert readme == tool.readme_with_table(readme), \
        "README.md's full-results table is out of step: python tools/exercise_full_runs.py --table --write"


def test_full_results_table_reads_every_seed(tmp_path):
    """One value per seed, a run with no results file says so, and the epoch rows read the curve."""
    tool = _full_runs_tool()
    epochs = [dict(train_loss=1.0 - e / 20, train_acc=0.5 + e / 40, test_acc=0.4 + e / 40) for e in range(15)]
    for seed, acc in [(0, 0.81), (2, 0.83)]:
        run = dict(seed=seed, train_loss=0.4, train_acc=0.85, test_acc=acc, wall_seconds=120.0,
                   examples_per_sec=1000.0 * (seed + 1), epochs=epochs)
        (tmp_path / tool.results_path(f"ex1-lenet-15ep.seed{seed}").name).write_text(json.dumps(run))
    rows = {line.split(" | ")[0].lstrip("| "): line for line in tool.results_table(tmp_path).splitlines()}
    assert "| 0, 2 | fp32 | 0.400, 0.400 | 0.850, 0.850 | 0.810, 0.830 | 2,000 | 2.0 |" \
        in rows["ex. 1: LeNet, 15 epochs"]
    assert "| 0, 2 | fp32 | 0.550, 0.550 | 0.725, 0.725 | 0.625, 0.625 |  |  |" \
        in rows["ex. 1: LeNet, epoch 10 of 15"]
    assert "(not run)" in rows["ex. 5: LeNet (sigmoid)"]
    with pytest.raises(ValueError, match="markers"):
        tool.readme_with_table("no markers here")


def test_seed_runs_of_exercise_5_are_committed_with_the_dead_units():
    """tools/exercise_seeds.py's runs (10 reads them): the book's length in fp32, the processor named,
    the dead ReLU units counted after training."""
    if str(ROOT / "tools") not in sys.path:
        sys.path.insert(0, str(ROOT / "tools"))
    import exercise_seeds

    relus = {"relu@1", "relu@4", "relu@8", "relu@11"}
    for run in exercise_seeds.all_runs():
        [path] = (ROOT / "results").glob(f"10_ex5_lenet_dropout_relu.spread-{run}.full.*.json")
        r = json.loads(path.read_text())
        assert r["setting"] == "full" and r["precision"] == "fp32" and r["cpu_model"], run
        assert r["num_examples"] == 10 * 60000 and len(r["epochs"]) == 10, run
        assert set(r["dead_relus"]) == (set() if r["model"] == "lenet" else relus), run
        assert all(0.0 <= v <= 1.0 for v in r["dead_relus"].values()), run
