"""`make handout` (tools/handout.py): the folder and archive students get hold the student notebooks,
the helper package, the set-up files and the data step, and nothing that answers an exercise: no
solution line, no hidden test, no rubric, no instructor notebook, no instructor design."""

import filecmp
import os
import re
import subprocess
import sys
import tarfile

import nbformat
import pytest

from conftest import ROOT

STUDENT = ROOT / "student" / "notebooks"
INSTRUCTOR = sorted((ROOT / "notebooks").glob("[0-9][0-9]_ex*.ipynb"))
SOLUTION_NAMES = ("net_28x28_small", "lenet_relu_dropout", "alexnet_small", "instructor_solutions")


@pytest.fixture(scope="module")
def handout(tmp_path_factory):
    dest = tmp_path_factory.mktemp("handout")
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "handout.py"), "--dest", str(dest)],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    return dest / "alexnet-exercises", dest / "alexnet-exercises.tar.gz"


def files_in(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_handout_holds_the_student_notebooks_helpers_set_up_and_data_step(handout):
    folder, archive = handout
    files = files_in(folder)
    notebooks = [f for f in files if f.endswith(".ipynb")]
    assert notebooks == [f"notebooks/{p.name}" for p in sorted(STUDENT.glob("*.ipynb"))]
    assert len(notebooks) == 5
    for name in notebooks:
        assert filecmp.cmp(folder / name, STUDENT / name.split("/")[1], shallow=False), name
    for needed in ["Makefile", "README.md", "requirements.txt", "pyproject.toml", "environment.yml",
                   "jupyter/overrides.json", "tools/get_data.py", "data/README.md", "d2l_local/__init__.py",
                   "d2l_local/training.py", "course_tools/__init__.py", "course_tools/exercises.py",
                   "course_tools/doctor.py"]:
        assert needed in files, needed
    assert [f for f in files if f.startswith("tools/")] == ["tools/get_data.py"]
    assert not [f for f in files if f.startswith(("tests/", "student/")) or "__pycache__" in f]
    with tarfile.open(archive) as tar:
        members = sorted(m.name.removeprefix("alexnet-exercises/") for m in tar.getmembers() if m.isfile())
    assert members == files


def test_handout_has_the_results_its_notebooks_read(handout):
    folder, _ = handout
    pattern = re.compile(r"""load_results\(\s*["']([^"']+)["']\s*,\s*committed_results_dir\(\)""")
    patterns = {m for p in STUDENT.glob("*.ipynb") for c in nbformat.read(p, as_version=4).cells
                for m in pattern.findall(c.source)}
    assert patterns, "the student notebooks read the course's results"
    for glob in patterns:
        assert sorted(p.name for p in (folder / "results").glob(glob)) == \
            sorted(p.name for p in (ROOT / "results").glob(glob)), glob
    read = {p.name for glob in patterns for p in (folder / "results").glob(glob)}
    assert {p.name for p in (folder / "results").iterdir()} == read  # nothing else from results/


def instructor_only():
    """Lines no student may see: the instructor notebooks' solution regions, hidden tests and rubrics
    (lines that also stand in the student copies excepted), and the instructor designs' layers."""
    from test_exercises import instructor_only_lines

    lines = set()
    for path in INSTRUCTOR:
        lines |= instructor_only_lines(nbformat.read(path, as_version=4))
    course = (ROOT / "course_tools" / "models.py").read_text()
    for line in (ROOT / "tools" / "instructor_solutions.py").read_text().splitlines():
        s = line.strip()
        if s.startswith("nn.") and s not in course:  # a layer of a design that is not the course's
            lines.add(s)
    # the helper packages' own lines are the course's, whoever else writes them too ("return 0")
    sources = [*(ROOT / "d2l_local").glob("*.py"), *(ROOT / "course_tools").glob("*.py")]
    package = {line.strip() for p in sources for line in p.read_text().splitlines()}
    return lines - package


def test_handout_holds_no_solution_no_hidden_test_and_no_instructor_notebook(handout):
    folder, _ = handout
    forbidden = instructor_only()
    assert len(forbidden) > 50  # the check has something to find
    for name in files_in(folder):
        path = folder / name
        assert not any(re.search(rf"(?<!\w){s}(?!\w)", name) for s in SOLUTION_NAMES), name
        if path.suffix in (".npz", ".png", ".gz"):
            continue
        text = path.read_text()
        if path.suffix == ".ipynb":
            nb = nbformat.read(path, as_version=4)
            assert not any(c.get("outputs") for c in nb.cells), f"{name}: outputs of a run"
            text = "\n".join(c.source for c in nb.cells)
        for marker in ("BEGIN SOLUTION", "END SOLUTION", "HIDDEN TESTS", "MARK SCHEME", "**Rubric"):
            assert marker not in text, f"{name}: {marker!r}"
        if not name.startswith("results/"):  # a run's record names the builder it trained, no more
            named = [n for n in SOLUTION_NAMES if re.search(rf"(?<!\w){n}(?!\w)", text)]
            assert not named, f"{name} names the instructor's designs {named}"
        leaked = [line for line in forbidden if line in text]
        assert not leaked, f"{name} holds instructor-only lines: {leaked[:5]}"


def test_handout_imports_its_own_helpers_and_finds_its_data(handout):
    """The hand-out's packages are the ones students import (from the hand-out, not the course); it reads
    the hand-out's results/ and writes the student's runs to runs/, and holds no exercise design."""
    folder, _ = handout
    code = f"""
import importlib, pkgutil, sys
sys.path.insert(0, {str(folder)!r})
import course_tools
import d2l_local
from course_tools import models, results
from d2l_local import data
for package in (d2l_local, course_tools):
    assert package.__file__.startswith({str(folder)!r}), package.__file__
assert results.REPOSITORY.name == "alexnet-exercises"
assert results.committed_results_dir() == results.REPOSITORY / "results"
assert results.results_dir().name == "runs" and data.data_dir().parent.name == "alexnet-exercises"
names = set()
for package in (d2l_local, course_tools):
    for m in pkgutil.iter_modules(package.__path__):
        names |= set(dir(importlib.import_module(package.__name__ + "." + m.name)))
print(sorted(names & set({SOLUTION_NAMES!r})))
"""
    env = {k: v for k, v in os.environ.items() if k not in ("D2L_RESULTS_DIR", "D2L_DATA_DIR")}
    out = subprocess.run([sys.executable, "-c", code], cwd=folder, env=env, capture_output=True, text=True,
                         check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", out.stdout


def test_handout_makefile_sets_up_like_the_course_and_opens_the_student_notebooks(handout):
    folder, _ = handout
    course, ours = (ROOT / "Makefile").read_text(), (folder / "Makefile").read_text()

    def recipe(text, target):
        block = re.search(rf"^{re.escape(target)}:.*?\n((?:\t.*\n)+)", text, re.M)
        assert block, target
        return block.group(1)

    for target in ("$(STAMP)", "$(LAB_OVERRIDES)"):
        assert recipe(ours, target) == recipe(course, target), target
    dry = subprocess.run(["make", "-n", "lab", "check"], cwd=folder, capture_output=True, text=True,
                         check=False)
    assert dry.returncode == 0, dry.stderr
    assert "jupyter lab --ServerApp.root_dir=notebooks" in dry.stdout
    assert "nbgrader validate --Execute.timeout=900 --Execute.iopub_timeout=60 notebooks/*_ex*.ipynb" \
        in dry.stdout
