"""The notebooks: executed with papermill in the smoke setting, and their committed form.

nbval (`pytest notebooks --nbval-lax`, in `make test`) re-runs them and
compares the cells marked `# NBVAL_CHECK_OUTPUT` with the committed outputs.
"""

import json
import math
import os

import nbformat
import papermill as pm
import pytest

from conftest import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
TRAINING = {"05_training_alexnet"}  # notebooks that must write a results file

pytestmark = pytest.mark.notebooks


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 5


@pytest.fixture(scope="module")
def smoke_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    old = {k: os.environ.get(k) for k in ("D2L_SETTING", "D2L_RESULTS_DIR", "D2L_PROGRESS")}
    # the kernel inherits these: smoke setting, results away from the committed ones
    os.environ.update(D2L_SETTING="smoke", D2L_RESULTS_DIR=str(out / "results"), D2L_PROGRESS="0")
    yield out
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _execute(path, out_dir, **parameters):
    return pm.execute_notebook(str(path), str(out_dir / path.name), parameters=parameters,
                               kernel_name="python3", cwd=str(path.parent), progress_bar=False)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_runs_in_smoke(path, smoke_dir):
    nb = _execute(path, smoke_dir, setting="smoke")
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "setting 'smoke'" in text  # choose_setting said what it runs
    if path.stem in TRAINING:
        [result] = (smoke_dir / "results").glob(f"{path.stem}.smoke.*.json")
        r = json.loads(result.read_text())
        assert r["setting"] == "smoke" and r["seed"] is not None and r["versions"]["torch"]
        assert all(math.isfinite(e["train_loss"]) for e in r["epochs"])
        assert 0 <= r["test_acc"] <= 1 and r["examples_per_sec"] > 0
    if path.stem == "05_training_alexnet":  # conv1's filters for 01; never the 187 MB weights in smoke
        assert list((smoke_dir / "results").glob("conv1_filters.smoke.*.npz"))
        assert not (smoke_dir / "results" / "weights" / "alexnet.smoke.pt").exists()
    if path.stem == "02_alexnet_architecture":  # the picture the README shows
        assert (smoke_dir / "results" / "architecture.png").stat().st_size > 10_000


def test_filters_notebook_shows_the_best_committed_filters():
    """01's committed outputs come from the best filters file in results/ (re-execute 01 after 05)."""
    from course_tools.filters import best_conv1_filters, course_results_dir

    nb = nbformat.read(ROOT / "notebooks" / "01_learning_representations.ipynb", as_version=4)
    text = json.dumps([c.outputs for c in nb.cells if c.cell_type == "code"])
    best = best_conv1_filters(course_results_dir())
    assert best is not None and best.name in text


def test_architecture_notebook_states_the_parameter_count(smoke_dir):
    nb = nbformat.read(smoke_dir / "02_alexnet_architecture.ipynb", as_version=4)
    text = json.dumps([c.outputs for c in nb.cells if c.cell_type == "code"])
    assert "46,764,746" in text or "46764746" in text


@pytest.mark.parametrize("parameters,says", [
    (dict(setting="smoke", bach_size=8), "bach_size"),
    (dict(setting="smok"), "choose one of full, quick, smoke"),
])
def test_bad_parameters_stop_with_a_clear_error(tmp_path, parameters, says):
    path = ROOT / "notebooks" / "02_alexnet_architecture.ipynb"
    with pytest.raises(pm.PapermillExecutionError, match=says):
        _execute(path, tmp_path, **parameters)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_form(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    first = code[0]
    assert "parameters" in first.metadata.get("tags", []) and first.source.startswith("# Parameters")
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    headings = [c.source for c in nb.cells if c.cell_type == "markdown"]
    assert any("## Summary" in h for h in headings)
    # the chapter's notebooks end with exercises; an exercise notebook with questions beyond its tasks
    assert any("## Exercises" in h or "## Further questions" in h for h in headings)
    # no papermill parameters cell from a maintainer's run: it would pin a reader's run to its values
    assert not [c for c in code if "injected-parameters" in c.metadata.get("tags", [])]
    # committed outputs are real: every code cell executed, in order, without errors
    counts = [c.execution_count for c in code]
    assert None not in counts and counts == sorted(counts), "re-execute the notebook (make run)"
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]


def test_a_readers_run_changes_no_committed_file():
    """`make run` (tools/run_notebooks.py) writes to build/ only: the notebooks, results/ and the
    notebooks' folder (where the kernels run) are as they were; no kernel socket is left there."""
    import subprocess
    import sys

    def state():
        listing = sorted(p.name for p in (ROOT / "notebooks").iterdir())
        status = subprocess.run(["git", "status", "--porcelain", "--", "notebooks", "results"], cwd=ROOT,
                                capture_output=True, text=True).stdout
        return listing, status

    before = state()
    env = {k: v for k, v in os.environ.items() if k != "D2L_RESULTS_DIR"}  # as a reader has it: unset
    run = subprocess.run([sys.executable, "tools/run_notebooks.py", "09", "--setting", "smoke"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert state() == before
    assert (ROOT / "build" / "run" / "smoke" / "09_ex4_compute_and_memory.ipynb").exists()


def test_a_plain_kernels_run_changes_no_tracked_file(tmp_path, monkeypatch):
    """A notebook run by a plain kernel (as JupyterLab, VS Code or papermill start it), with no
    $D2L_RESULTS_DIR: its results go to the reader's git-ignored runs/, and git sees no change."""
    import subprocess
    import time

    from course_tools.results import READER_RUNS

    def status():
        return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout

    monkeypatch.delenv("D2L_RESULTS_DIR", raising=False)
    monkeypatch.setenv("D2L_SETTING", "smoke")
    before, start = status(), time.time()
    _execute(ROOT / "notebooks" / "02_alexnet_architecture.ipynb", tmp_path)
    assert status() == before
    picture = READER_RUNS / "architecture.png"
    assert picture.exists() and picture.stat().st_mtime >= start - 1
