"""Grading of the exercise notebooks tried end to end, the way an instructor runs it (README, "For
instructors"): nbgrader's own commands in a temporary course directory that holds a copy of
`nbgrader_config.py` and of the instructor notebooks.

`nbgrader generate_assignment` (with the gradebook) writes the student copies; five students hand in
an archive each (`submission-<student>.zip`, as the hand-out's `make submit` makes it), which
`nbgrader zip_collect` files under submitted/:
- `blank`: the student copies as they are handed out: 0 autograded points;
- `solution`: the student copies answered with the instructor's solutions: every autograded point;
- `visible`: answers written to pass the visible tests' cases only (hard-coded values, a net that works
  for the visible batch size only), and `mistake`: plausible wrong answers; both lose points on the
  tests of every task (the hidden tests catch what the visible ones let through);
- `builder`: 07's design as a call of a course builder under another name.
`nbgrader autograde` scores them in the `smoke` setting and `nbgrader generate_feedback` writes each
student's feedback, without the hidden tests' code. The answered copies keep the set-up cells and the
nbgrader cells (answers and tests), so that grading takes seconds per notebook; the whole notebooks
run in `smoke` in tests/test_notebooks.py.
"""

import os
import shutil
import subprocess
import zipfile

import nbformat
import pytest

from conftest import ROOT

pytestmark = pytest.mark.notebooks  # executes the notebooks (through nbgrader)

EXERCISES = sorted((ROOT / "notebooks").glob("[0-9][0-9]_ex*.ipynb"))
BIN = ROOT / ".venv" / "bin"

# answer cells where the student chooses what to run (graded with the written answers)
CHOICES = {"ex3_choice", "ex4_roofline_layers", "ex5_variants"}
# student -> notebook -> ({answer cell: the student's code}, [test cells that must lose points])
WRONG = {
    "visible": {
        "06_ex1_more_epochs": ({
            "ex1_helpers": '''
def train_test_gap(epochs):
    return [0.05, 0.10, 0.12][:len(epochs)]

def best_epoch(epochs):
    return {1: 1, 3: 2}.get(len(epochs), 4)
''',
            "ex1_lenet_run": '''
from d2l_local import History
lenet = models.lenet()
lenet_history = History(device="cpu", epochs=[
    dict(epoch=e + 1, train_loss=0.4, train_acc=0.85, test_acc=0.83) for e in range(cfg.lenet_epochs)])
'''}, ["check_train_test_gap", "check_best_epoch", "check_lenet_run"]),
        "07_ex2_small_images": ({
            "ex2_alexnet_small": '''
def my_alexnet_small():  # works for the visible batch of 2 only
    return nn.Sequential(nn.AvgPool2d(8), nn.Flatten(0), nn.Linear(2 * 28 * 28, 20),
                         nn.Unflatten(0, (2, 10)))
''',
            "ex2_net_28x28": '''
def my_net_28x28():  # works for the visible batch of 2 only
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Dropout(0.1), nn.Flatten(0),
                         nn.Linear(2 * 4 * 14 * 14, 20), nn.Unflatten(0, (2, 10)))
'''}, ["check_alexnet_small", "check_net_shape", "check_net_learns"]),
        "08_ex3_batch_size": ({
            "ex3_training_memory": '''
def training_memory(net, batch_size, input_shape):
    return dict(params=60, grads=60, momentum=60, activations=560, total=740)
'''}, ["check_training_memory"]),
        "09_ex4_compute_and_memory": ({
            "ex4_operations": '''
def operations(layer, macs, out_values):
    return {nn.Conv2d: 2 * macs, nn.ReLU: out_values, nn.MaxPool2d: 8 * out_values}.get(type(layer), 0)
''',
            "ex4_intensity": '''
def arithmetic_intensity(ops, params, in_values, out_values, batch_size):
    if batch_size == 1:
        return 2 * 6400 * 4096 / (4 * (6400 * 4096 + 4096 + 6400 + 4096))
    if batch_size == 128:
        return 2 * 6400 * 4096 * 128 / (4 * (6400 * 4096 + 4096 + 128 * (6400 + 4096)))
    return 0.125
'''}, ["check_operations", "check_intensity"]),
        "10_ex5_lenet_dropout_relu": ({
            "ex5_lenet_relu": '''
def lenet_relu(p=0.2):  # the dropout probability of the visible test, whatever p is
    return nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5, padding=2), nn.ReLU(), nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Conv2d(6, 16, kernel_size=5), nn.ReLU(), nn.AvgPool2d(kernel_size=2, stride=2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Dropout(0.2), nn.Linear(120, 84), nn.ReLU(), nn.Dropout(0.2),
        nn.Linear(84, 10))
''',
            "ex5_pixel_stats": '''
def pixel_mean_std(images):
    return (0.5, 0.57735) if images.numel() == 4 else (FMNIST_MEAN, FMNIST_STD)
'''}, ["check_lenet_relu", "check_pixel_stats"]),
    },
    "mistake": {
        "06_ex1_more_epochs": ({
            "ex1_helpers": '''
def train_test_gap(epochs):  # the size of the gap, without its sign
    return [abs(e["train_acc"] - e["test_acc"]) for e in epochs]

def best_epoch(epochs):  # the position (from 1), not the epoch's number
    return max(range(len(epochs)), key=lambda i: (epochs[i]["test_acc"], -i)) + 1
''',
            "ex1_lenet_run": '''
lenet, lenet_history = run_recipe(models.lenet, batch_size=256, lr=0.9, num_epochs=15, device=device,
                                  seed=SEED, train_subset=cfg.lenet_train_subset,
                                  test_subset=cfg.lenet_test_subset, animate=False)
'''}, ["check_train_test_gap", "check_best_epoch", "check_lenet_run"]),
        "07_ex2_small_images": ({
            "ex2_alexnet_small": '''
def my_alexnet_small():  # narrower fully connected layers only: the convolutions keep their cost
    return models.alexnet(hidden=512)
''',
            "ex2_net_28x28": '''
def my_net_28x28():  # one convolution, no pooling, no dropout
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 26 * 26, 10))
'''}, ["check_alexnet_small", "check_net_design"]),
        "08_ex3_batch_size": ({
            "ex3_training_memory": '''
def training_memory(net, batch_size, input_shape):  # the input is not counted
    rows = layer_table(net, input_shape)
    params = sum(r["params"] for r in rows)
    m = dict(params=4 * params, grads=4 * params, momentum=4 * params,
             activations=4 * batch_size * sum(r["activations"] for r in rows))
    m["total"] = sum(m.values())
    return m
'''}, ["check_training_memory"]),
        "09_ex4_compute_and_memory": ({
            "ex4_operations": '''
def operations(layer, macs, out_values):  # k * k comparisons per pooled value
    if isinstance(layer, (nn.Conv2d, nn.Linear)):
        return 2 * macs
    if isinstance(layer, nn.ReLU):
        return out_values
    if isinstance(layer, nn.MaxPool2d):
        return layer.kernel_size ** 2 * out_values
    return 0
''',
            "ex4_intensity": '''
def arithmetic_intensity(ops, params, in_values, out_values, batch_size):  # parameters read per example
    return ops / (4 * (params + in_values + out_values))
'''}, ["check_operations", "check_intensity"]),
        "10_ex5_lenet_dropout_relu": ({
            "ex5_lenet_relu": '''
def lenet_relu(p=0.2):  # dropout before the ReLUs
    return nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5, padding=2), nn.ReLU(), nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Conv2d(6, 16, kernel_size=5), nn.ReLU(), nn.AvgPool2d(kernel_size=2, stride=2), nn.Flatten(),
        nn.Linear(400, 120), nn.Dropout(p), nn.ReLU(), nn.Linear(120, 84), nn.Dropout(p), nn.ReLU(),
        nn.Linear(84, 10))
''',
            "ex5_pixel_stats": '''
def pixel_mean_std(images):  # the mean of the images' own statistics
    x = images.double() / 255
    x = x.reshape(-1, x.shape[-2] * x.shape[-1]) if x.dim() > 1 else x.reshape(1, -1)
    return x.mean(1).mean().item(), x.std(1).mean().item()
'''}, ["check_lenet_relu", "check_pixel_stats"]),
    },
    "builder": {
        "07_ex2_small_images": ({
            "ex2_net_28x28": '''
from course_tools.models import lenet as base

def my_net_28x28():  # the course's LeNet with ReLU, max pooling and dropout
    swap = {nn.Sigmoid: nn.ReLU, nn.AvgPool2d: lambda: nn.MaxPool2d(2)}
    layers = [swap[type(m)]() if type(m) in swap else m for m in base()]
    return nn.Sequential(*layers[:-1], nn.Dropout(0.2), layers[-1])
'''}, ["check_net_design"]),
    },
}


def nbgrader_meta(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


def answered(release, instructor, replace: dict):
    """The student copy with its answer cells filled (the instructor's, unless `replace` has one),
    reduced to the set-up cells before the first nbgrader cell and the nbgrader cells."""
    solutions = {nbgrader_meta(c)["grade_id"]: c.source for c in instructor.cells
                 if nbgrader_meta(c).get("solution")}
    first = next(i for i, c in enumerate(release.cells) if nbgrader_meta(c))
    cells = [c for c in release.cells[:first] if c.cell_type == "code"]
    for cell in release.cells[first:]:
        meta = nbgrader_meta(cell)
        if meta.get("solution"):
            cell.source = replace.get(meta["grade_id"], solutions[meta["grade_id"]]).strip()
        if meta:
            cells.append(cell)
    release.cells = cells
    return release


def autograder_tests(path) -> dict:
    """Autograder test cells of an instructor notebook: grade_id -> points."""
    nb = nbformat.read(path, as_version=4)
    return {nbgrader_meta(c)["grade_id"]: nbgrader_meta(c)["points"] for c in nb.cells
            if nbgrader_meta(c).get("grade") and c.cell_type == "code"}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """A course directory after generate_assignment, autograde and generate_feedback; the gradebook."""
    from nbgrader.api import Gradebook, MissingEntry

    course = tmp_path_factory.mktemp("course")
    (course / "notebooks").mkdir()
    shutil.copy(ROOT / "nbgrader_config.py", course)
    for path in EXERCISES:
        shutil.copy(path, course / "notebooks")
    env = dict(os.environ, D2L_SETTING="smoke", D2L_PROGRESS="0", MPLBACKEND="Agg",
               D2L_RESULTS_DIR=str(course / "runs"), OMP_NUM_THREADS="1",
               PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")  # nbgrader calls alembic

    def nbgrader(*args):
        out = subprocess.run([str(BIN / "nbgrader"), *args, "--log-level=WARN"], cwd=course, env=env,
                             capture_output=True, text=True, check=False)
        assert out.returncode == 0, f"nbgrader {args[0]}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"

    nbgrader("generate_assignment", "notebooks", "--force")
    for path in EXERCISES:
        release = course / "student" / "notebooks" / path.name
        instructor = nbformat.read(path, as_version=4)
        submissions = {"blank": nbformat.read(release, as_version=4),
                       "solution": answered(nbformat.read(release, as_version=4), instructor, {})}
        for student, notebooks in WRONG.items():
            if path.stem in notebooks:
                submissions[student] = answered(nbformat.read(release, as_version=4), instructor,
                                                notebooks[path.stem][0])
        for student, nb in submissions.items():
            folder = course / "handed-in" / student
            folder.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, folder / path.name)
    # what students hand in (the hand-out's `make submit`), collected as the README says
    archive = course / "submitted" / ".archives" / "notebooks" / "archive"
    archive.mkdir(parents=True)
    for folder in (course / "handed-in").iterdir():
        with zipfile.ZipFile(archive / f"submission-{folder.name}.zip", "w") as zf:
            for nb in folder.iterdir():
                zf.write(nb, nb.name)
    nbgrader("zip_collect", "notebooks")
    assert len(list((course / "submitted").glob("*/notebooks/*.ipynb"))) == sum(
        len(list(f.iterdir())) for f in (course / "handed-in").iterdir())
    nbgrader("autograde", "notebooks")
    nbgrader("generate_feedback", "notebooks")
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        scores = {}
        for student in ["blank", "solution", *WRONG]:
            for path in EXERCISES:
                try:
                    sn = gb.find_submission_notebook(path.stem, "notebooks", student)
                except MissingEntry:  # not handed in
                    continue
                scores[student, path.stem] = {g.name: g.score for g in sn.grades}
    return course, scores


@pytest.mark.parametrize("path", EXERCISES, ids=lambda p: p.stem)
def test_unanswered_copy_scores_nothing_and_the_solutions_everything(path, graded):
    _, scores = graded
    tests = autograder_tests(path)
    assert {k: scores["blank", path.stem][k] for k in tests} == dict.fromkeys(tests, 0.0)
    assert {k: scores["solution", path.stem][k] for k in tests} == {k: float(v) for k, v in tests.items()}


@pytest.mark.parametrize("student", list(WRONG))
def test_wrong_answers_lose_points_on_every_task(student, graded):
    _, scores = graded
    for stem, (_, failing) in WRONG[student].items():
        points = autograder_tests(ROOT / "notebooks" / f"{stem}.ipynb")
        lost = {k: scores[student, stem][k] for k in failing if scores[student, stem][k] >= points[k]}
        assert not lost, f"{student}'s answers to {stem} kept full points on {sorted(lost)}"


def test_every_task_has_two_kinds_of_wrong_answers():
    """Every answer cell that tests grade gets a wrong answer hard-coded to the visible case and a
    plausible mistake, and each of them names the tests it must fail."""
    for path in EXERCISES:
        nb = nbformat.read(path, as_version=4)
        graded_answers = {nbgrader_meta(c)["grade_id"] for c in nb.cells
                          if nbgrader_meta(c).get("solution") and c.cell_type == "code"} - CHOICES
        for student in ("visible", "mistake"):
            answers, failing = WRONG[student][path.stem]
            assert set(answers) == graded_answers and failing, (student, path.stem)


def test_feedback_is_written_without_the_hidden_tests(graded):
    course, _ = graded
    for student in ["blank", "solution", *WRONG]:
        for path in EXERCISES:
            if student not in ("blank", "solution") and path.stem not in WRONG[student]:
                continue
            html = (course / "feedback" / student / "notebooks" / f"{path.stem}.html").read_text()
            assert "HIDDEN TESTS" not in html, f"{student}/{path.stem}: hidden tests in the feedback"
    html = (course / "feedback" / "visible" / "notebooks" / "06_ex1_more_epochs.html").read_text()
    assert "a resumed run" in html  # the hidden test's message says what went wrong


def test_wrong_answers_are_told_what_is_wrong(graded):
    """A test that fails a wrong answer says why (an assertion with a message), not with a crash."""
    course, _ = graded
    for student, notebooks in WRONG.items():
        for stem, (_, failing) in notebooks.items():
            nb = nbformat.read(course / "autograded" / student / "notebooks" / f"{stem}.ipynb", as_version=4)
            for cell in nb.cells:
                if nbgrader_meta(cell).get("grade_id") in failing:
                    errors = [o for o in cell.outputs if o.output_type == "error"]
                    said = [(e.ename, e.evalue) for e in errors]
                    assert errors and errors[0].ename == "AssertionError" and errors[0].evalue, \
                        (student, stem, nbgrader_meta(cell)["grade_id"], said)
