"""The course as a student uses it: `make lab`, each chapter notebook, Run > Run All Cells, in Chromium.

Starts JupyterLab exactly as `make lab` does (headless here: no browser of its
own, a free localhost port, a token), with the kernels in the `smoke` setting,
and drives Debian's `chromium` with Playwright. For each chapter notebook it
checks that every cell ran and none shows an error, that the training plot is
one figure updated in place (not a pile of frames), that the tqdm bar renders,
and that JupyterLab opened without a news pop-up or other prompt. The kernels
have a student's environment (no $D2L_RESULTS_DIR), and at the end the test
checks that running the notebooks changed no tracked file and added no
untracked one (`git status --porcelain`): a student's runs go to the ignored
`runs/`. Screenshots go to build/browser/ (or $D2L_BROWSER_OUT).

Runs only when asked for (`make browser`, which installs chromium, or
D2L_BROWSER=1): it needs /usr/bin/chromium and takes a few minutes.
"""

import os
import re
import secrets
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHAPTER = ["01_learning_representations", "02_alexnet_architecture", "03_reading_the_data",
           "04_one_training_step", "05_training_alexnet", "06_ex1_more_epochs"]
OUT = Path(os.environ.get("D2L_BROWSER_OUT", ROOT / "build" / "browser"))
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run"]
START_S, OPEN_S, RUN_S = 120, 60, 240  # the time each step may take before the test fails

pytestmark = pytest.mark.skipif(
    os.environ.get("D2L_BROWSER") != "1" or not CHROMIUM.exists(),
    reason="the browser test runs with `make browser` (needs /usr/bin/chromium, D2L_BROWSER=1)")


GIT_STATUS_BEFORE: list[str] = []


def _git_status() -> str:
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab():
    """`make lab` on a free port with a token; the kernels run in `smoke`. Yields the base URL."""
    OUT.mkdir(parents=True, exist_ok=True)
    port, token = _free_port(), secrets.token_hex(16)
    # the test's own user settings: no autosave, so running the cells never rewrites the
    # committed notebooks; its own workspaces, so a student's open tabs are left alone
    settings = OUT / "user-settings" / "@jupyterlab" / "docmanager-extension"
    settings.mkdir(parents=True, exist_ok=True)
    (settings / "plugin.jupyterlab-settings").write_text('{"autosave": false}')
    # every cell in the page (JupyterLab otherwise leaves cells out of view unrendered)
    tracker = settings.parent / "notebook-extension"
    tracker.mkdir(exist_ok=True)
    (tracker / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    env = {**os.environ, "D2L_SETTING": "smoke",
           "JUPYTERLAB_SETTINGS_DIR": str(OUT / "user-settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(OUT / "workspaces")}
    # as on a student's machine: inline plots, a bar, results wherever d2l_local puts them
    for key in ("MPLBACKEND", "D2L_PROGRESS", "D2L_RESULTS_DIR"):
        env.pop(key, None)
    GIT_STATUS_BEFORE.append(_git_status())
    args = f"--no-browser --ServerApp.ip=127.0.0.1 --ServerApp.port={port} " \
           f"--ServerApp.port_retries=0 --IdentityProvider.token={token}"
    log = open(OUT / "lab.log", "w")
    proc = subprocess.Popen(["make", "--no-print-directory", "lab", f"LAB_ARGS={args}"], cwd=ROOT,
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_S
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not start in {START_S} s; see {OUT / 'lab.log'}")
                time.sleep(1)
        yield base, token
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        yield b
        b.close()


# Counts every new or replaced output (a figure update replaces the node) per cell, from page start.
WATCH_OUTPUTS = """
window.__outputs = [];
new MutationObserver(records => {
  for (const r of records) for (const n of r.addedNodes) {
    if (n.nodeType !== 1) continue;
    const cell = n.closest && n.closest('.jp-CodeCell');
    if (!cell) continue;
    // a new output, or new content inside one (an update in place re-renders the image inside it)
    const holder = n.closest('[data-mime-type]') || n.querySelector('[data-mime-type]');
    const mime = holder && holder.getAttribute('data-mime-type');
    if (mime) window.__outputs.push([Array.from(cell.parentNode.children).indexOf(cell), mime]);
  }
}).observe(document, {childList: true, subtree: true});
"""

# The state of every code cell: its prompt, its source, its outputs.
CELLS = """
() => Array.from(document.querySelectorAll('.jp-Notebook .jp-CodeCell')).map(cell => ({
  index: Array.from(cell.parentNode.children).indexOf(cell),
  prompt: (cell.querySelector('.jp-InputPrompt') || {}).textContent || '',
  source: (cell.querySelector('.cm-content') || {}).textContent || '',
  outputs: Array.from(cell.querySelectorAll('.jp-OutputArea-output')).map(o => ({
    mime: o.getAttribute('data-mime-type') ||
          ((o.querySelector('[data-mime-type]') || {getAttribute: () => ''}).getAttribute('data-mime-type')),
    error: o.querySelector('.ansi-red-fg') !== null && /Error|Exception|Interrupt/.test(o.textContent),
    text: o.textContent.slice(0, 4000)}))
}))
"""

# Run All marks every code cell `[*]` at once; a cell's prompt gets its number when it has run
PROMPTS = """() => Array.from(document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt'))
  .map(p => p.textContent.trim())"""
KERNEL_IDLE = """() => Array.from(document.querySelectorAll('.jp-StatusBar-TextItem'))
  .some(s => / \\| Idle$/.test(s.textContent.trim()) && !s.textContent.includes('No Kernel'))"""
QUEUED = f"() => ({PROMPTS})().some(t => t.includes('*'))"
FINISHED = f"() => !({PROMPTS})().some(t => t.includes('*'))"


@pytest.mark.parametrize("name", CHAPTER)
def test_notebook_runs_in_jupyterlab(lab, browser, name):
    base, token = lab
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.add_init_script(WATCH_OUTPUTS)
    try:
        # a workspace of its own: JupyterLab would otherwise reopen the notebooks opened before
        _run_all(page, f"{base}/lab/workspaces/{name}/tree/{name}.ipynb?reset&token={token}", name)
    finally:
        page.close()


def _shot(page, name, what):
    page.screenshot(path=str(OUT / f"{name}.{what}.png"))


def _run_all(page, url, name):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.goto(url, timeout=OPEN_S * 1000)
    page.wait_for_selector(".jp-NotebookPanel .jp-Notebook .jp-CodeCell", timeout=OPEN_S * 1000)
    # the kernel is connected and ready: the status bar names it and says Idle. (The toolbar's
    # indicator says idle before a kernel is attached too; Run All at that moment opens JupyterLab's
    # "Select Kernel" dialog, which is what happened on a cold fresh clone, where 01's kernel is slow.)
    page.wait_for_function(KERNEL_IDLE, timeout=OPEN_S * 1000, polling=250)
    _shot(page, name, "0-opened")
    # nothing a newcomer cannot act on: no news toast, no dialog
    toasts = page.locator(".Toastify__toast").all_inner_texts()
    assert not [t for t in toasts if re.search(r"news|update", t, re.I)], toasts
    assert page.locator(".jp-Dialog").count() == 0, page.locator(".jp-Dialog").all_inner_texts()
    # Run > Run All Cells, through the menu as a student does
    started = time.monotonic()
    for attempt in range(2):  # a click while the page is still settling can miss the menu
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        try:
            page.wait_for_function(QUEUED, timeout=OPEN_S * 1000 // 2, polling=100)
            break
        except PlaywrightTimeout:
            _shot(page, name, f"run-all-missed-{attempt}")
            if attempt:
                raise
    page.wait_for_function(FINISHED, timeout=RUN_S * 1000, polling=500)
    seconds = time.monotonic() - started
    cells = page.evaluate(CELLS)
    (OUT / f"{name}.seconds.txt").write_text(f"{seconds:.1f}\n")
    _shot(page, name, "1-end")

    # JupyterLab shows a traceback as stderr text (data-mime-type vnd.jupyter.stderr), in red
    errors = [(c["index"], o["text"][-800:]) for c in cells for o in c["outputs"]
              if o["error"] or "Traceback (most recent call last)" in o["text"]]
    assert not errors, f"{name}: cells with errors: {errors}"
    not_run = [(c["index"], c["prompt"], c["source"][:60]) for c in cells
               if not re.search(r"\[\d+\]", c["prompt"])]
    assert not not_run, f"{name}: cells not run: {not_run}"

    training = [c for c in cells if re.search(r"\btrain_ch6\(", c["source"])]
    if name == "05_training_alexnet":
        assert training, "05 has no cell calling train_ch6"
    for cell in training:
        page.locator(".jp-Notebook .jp-CodeCell").nth(
            [c["index"] for c in cells].index(cell["index"])).scroll_into_view_if_needed()
        _shot(page, name, f"2-training-cell-{cell['index']}")
        figures = [o for o in cell["outputs"] if o["mime"] and o["mime"].startswith("image/")]
        assert len(figures) == 1, f"{name}: the training cell shows {len(figures)} figures, not one"
        updates = [m for i, m in page.evaluate("window.__outputs")
                   if i == cell["index"] and m.startswith("image/")]
        assert len(updates) >= 2, f"{name}: the training plot was drawn {len(updates)} time(s), not updated"
        bar = " ".join(o["text"] for o in cell["outputs"])
        assert re.search(r"epoch \d+/\d+: 100%\|.*\| (\d+)/\1 ", bar), \
            f"{name}: no finished tqdm bar in the training cell's output: {bar[:300]!r}"


def test_a_students_runs_change_no_tracked_file(lab):
    """After Run All in every notebook above, with no $D2L_RESULTS_DIR: git sees no change."""
    assert GIT_STATUS_BEFORE, "the lab fixture did not start"
    assert _git_status() == GIT_STATUS_BEFORE[0]
