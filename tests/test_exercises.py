"""The exercise notebooks (06-10): nbgrader solutions and checks, student copies, full results.

tests/test_notebooks.py already runs every notebook (these included) in smoke, where a failing
check stops the run. Here: the checks alone, with the solution (pass), with nbgrader's placeholder
(fail with NotImplementedError) and with deliberately wrong answers (fail with a message); the
student copies are what `make student` writes, and hold no solution line.
"""

import json
import os
import subprocess

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import ROOT

EXERCISES = sorted((ROOT / "notebooks").glob("[0-9][0-9]_ex*.ipynb"))
STUDENT = ROOT / "student" / "notebooks"
NBGRADER = ROOT / ".venv" / "bin" / "nbgrader"

# a wrong answer for each solution cell, and the words its checks must answer with
WRONG = {
    "ex1_solution": ("""
def train_test_gap(epochs):
    return [e["test_acc"] - e["train_acc"] for e in epochs]

def best_epoch(epochs):
    return max(range(len(epochs)), key=lambda i: epochs[i]["test_acc"])
""", ["train_acc - test_acc", "the earliest"]),
    "ex2_solution": ("""
def my_net_28x28():
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 26 * 26, 10))
""", None),  # a valid design: its checks must pass (the next entry is a wrong one)
    "ex3_solution": ("""
def training_memory(net, batch_size, input_shape):
    rows = layer_table(net, input_shape)
    params = sum(r["params"] for r in rows)
    acts = sum(r["activations"] for r in rows)
    m = dict(params=4 * params, grads=4 * params, momentum=4 * params, activations=4 * acts)
    m["total"] = sum(m.values())
    return m
""", ["activations"]),
    "ex4_solution": ("""
def arithmetic_intensity(macs, params, in_values, out_values, batch_size):
    return macs * batch_size / (4 * (params + batch_size * (in_values + out_values)))
""", ["2 FLOP per multiply-add"]),
    "ex5_solution_net": ("""
def lenet_relu(p=0.2):
    return nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5, padding=2), nn.Sigmoid(), nn.AvgPool2d(2, 2),
        nn.Conv2d(6, 16, kernel_size=5), nn.ReLU(), nn.AvgPool2d(2, 2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Dropout(p), nn.Linear(120, 84), nn.ReLU(), nn.Dropout(p),
        nn.Linear(84, 10))
""", ["nn.Sigmoid"]),
    "ex5_solution_stats": ("""
def pixel_mean_std(images):
    x = images.double()
    return x.mean().item(), x.std().item()
""", ["divide by 255"]),
}
WRONG_NET_28 = ("""
def my_net_28x28():
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 26 * 26, 12))
""", ["(2, 10) class scores"])
WRONG_COST_28 = ("""
def my_net_28x28():
    return nn.Sequential(nn.Conv2d(1, 256, 3, padding=1), nn.ReLU(), nn.Conv2d(256, 256, 3, padding=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(256 * 28 * 28, 10))
""", ["fewer channels"])
WRONG_LIBRARY_28 = ("""
def my_net_28x28():
    return models.net_28x28_small()
""", ["design the layers yourself", "net_28x28_small"])


def grade(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


def read(path):
    return nbformat.read(path, as_version=4)


def solution_lines(nb) -> set[str]:
    """Lines between the markers that appear nowhere else in the instructor notebook."""
    inside, outside = set(), set()
    for cell in nb.cells:
        keep = False
        for line in cell.source.splitlines():
            s = line.strip()
            if s == "### BEGIN SOLUTION":
                keep = True
            elif s == "### END SOLUTION":
                keep = False
            elif s:
                (inside if keep else outside).add(s)
    return {s for s in inside - outside if len(s) > 6}


def test_every_exercise_has_solutions_and_checks():
    assert [p.stem[:2] for p in EXERCISES] == ["06", "07", "08", "09", "10"]
    for path in EXERCISES:
        nb = read(path)
        solutions = [c for c in nb.cells if grade(c).get("solution")]
        checks = [c for c in nb.cells if grade(c).get("grade")]
        assert solutions and checks, path.name
        assert all("### BEGIN SOLUTION" in c.source and "### END SOLUTION" in c.source for c in solutions)
        assert all(grade(c)["points"] > 0 and grade(c)["locked"] for c in checks)
        assert all(c.cell_type == "code" and "assert" in c.source for c in checks)
        ids = [grade(c)["grade_id"] for c in nb.cells if grade(c)]
        assert len(ids) == len(set(ids)), f"{path.name}: grade_ids must be unique"


@pytest.mark.parametrize("path", EXERCISES, ids=lambda p: p.stem)
def test_student_copy_holds_no_solution(path):
    student = read(STUDENT / path.name)
    text = "\n".join(c.source for c in student.cells)
    assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text
    leaked = [line for line in solution_lines(read(path)) if line in text]
    assert not leaked, f"solution lines in the student copy of {path.name}: {leaked}"
    answers = [c for c in student.cells if grade(c).get("solution")]
    assert answers and all("raise NotImplementedError()" in c.source for c in answers)
    # outputs cleared, checks kept word for word
    assert all(not c.outputs and c.execution_count is None for c in student.cells if c.cell_type == "code")
    checks = [c.source for c in read(path).cells if grade(c).get("grade")]
    assert checks == [c.source for c in student.cells if grade(c).get("grade")]


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


def _checks_only(nb, replace: dict | None = None):
    """The notebook reduced to its set-up cells (parameters, imports, settings), its solution cells
    (optionally replaced) and its check cells."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    first = next(i for i, c in enumerate(code) if grade(c))
    keep = code[:first]  # parameters, imports and settings come before the first nbgrader cell
    for cell in code[first:]:
        g = grade(cell)
        if g.get("solution") or g.get("grade"):
            cell = nbformat.from_dict(json.loads(json.dumps(cell)))
            if replace and g.get("grade_id") in replace:
                cell.source = replace[g["grade_id"]]
            keep.append(cell)
    out = nbformat.v4.new_notebook(metadata=nb.metadata)
    out.cells = keep
    return out


def _execute(nb):
    env = {"D2L_SETTING": "smoke", "D2L_PROGRESS": "0", "MPLBACKEND": "Agg"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        NotebookClient(nb, kernel_name="python3", allow_errors=True, timeout=300,
                       resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return {grade(c).get("grade_id", f"cell{i}"): [o for o in c.outputs if o.output_type == "error"]
            for i, c in enumerate(nb.cells)}


@pytest.mark.notebooks
@pytest.mark.parametrize("path", EXERCISES, ids=lambda p: p.stem)
def test_checks_pass_with_the_solution_and_fail_in_the_student_copy(path):
    errors = _execute(_checks_only(read(path)))
    assert not any(errors.values()), {k: v[0]["evalue"] for k, v in errors.items() if v}
    student = _execute(_checks_only(read(STUDENT / path.name)))
    checks = [grade(c)["grade_id"] for c in read(path).cells if grade(c).get("grade")]
    for gid in checks:
        assert student[gid] and student[gid][0]["ename"] == "NotImplementedError", \
            f"{gid} must fail in the student copy while the answer is nbgrader's placeholder"


@pytest.mark.notebooks
@pytest.mark.parametrize("path", EXERCISES, ids=lambda p: p.stem)
def test_checks_reject_wrong_answers_with_a_message(path):
    nb = read(path)
    ids = [grade(c)["grade_id"] for c in nb.cells if grade(c).get("solution")]
    cases = [({gid: WRONG[gid][0]}, WRONG[gid][1]) for gid in ids]
    if "ex2_solution" in ids:
        cases += [({"ex2_solution": WRONG_NET_28[0]}, WRONG_NET_28[1]),
                  ({"ex2_solution": WRONG_COST_28[0]}, WRONG_COST_28[1]),
                  ({"ex2_solution": WRONG_LIBRARY_28[0]}, WRONG_LIBRARY_28[1])]
    for replace, says in cases:
        errors = _execute(_checks_only(nb, replace))
        failed = [e for gid, errs in errors.items() for e in errs]
        if says is None:  # a different but valid answer passes
            assert not failed, [e["evalue"] for e in failed]
            continue
        assert failed and all(e["ename"] == "AssertionError" for e in failed), \
            [(e["ename"], e["evalue"]) for e in failed]
        messages = " ".join(e["evalue"] for e in failed)
        assert all(word in messages for word in says), messages


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
    assert "| 0, 2 | 0.400, 0.400 | 0.850, 0.850 | 0.810, 0.830 | 2,000 | 2.0 |" \
        in rows["ex. 1: LeNet, 15 epochs"]
    assert "| 0, 2 | 0.550, 0.550 | 0.725, 0.725 | 0.625, 0.625 |  |  |" \
        in rows["ex. 1: LeNet, epoch 10 of 15"]
    assert "(not run)" in rows["ex. 5: LeNet (sigmoid)"]
    with pytest.raises(ValueError, match="markers"):
        tool.readme_with_table("no markers here")
