"""`make run`: execute every notebook headlessly with papermill and print what each measured.

    python tools/run_notebooks.py                      # this hardware's default setting
    python tools/run_notebooks.py --setting smoke      # any of full, quick, smoke
    python tools/run_notebooks.py 05_training_alexnet  # some notebooks only
    python tools/run_notebooks.py --in-place           # refresh the committed outputs
    python tools/run_notebooks.py 05 -p num_epochs=15  # override a notebook parameter

Executed copies go to build/run/<setting>/ and their results files to build/run/<setting>/results/,
so a reader's run changes no committed file; --in-place (for maintainers) writes the notebooks back
into notebooks/ and the results into results/.
A parameter the notebook does not declare (`-p bach_size=64`) is an error, not a warning.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import papermill as pm
from traitlets.config import Config

from course_tools.results import BOOK, results_dir
from course_tools.settings import SETTING_ENV, setting_name
from d2l_local.device import try_gpu

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
COMMITTED_RESULTS = ROOT / "results"
# Kernels talk to papermill over local sockets (IPC) instead of TCP: same behaviour, and no
# "[IPKernelApp] WARNING | Kernel is running over TCP without encryption" line per notebook,
# which a reader can do nothing about (both ends are this machine's processes).
# The sockets are files: they go to a temporary folder of this run, not into notebooks/ (the kernel's
# working directory, where jupyter_client would put them), and go away with it.
IPC_DIR = tempfile.TemporaryDirectory(prefix="d2l-kernels-")
KERNEL_CONFIG = Config({"KernelManager": {"transport": "ipc", "ip": str(Path(IPC_DIR.name) / "kernel-ipc")}})
# papermill does not show the kernel's stderr, and a bar would leave hundreds of frames in the
# saved notebooks; the live plot (one figure, updated in place) shows the progress there
os.environ.setdefault("D2L_PROGRESS", "0")


def notebooks(names: list[str]) -> list[Path]:
    found = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if not names:
        return found
    chosen = [p for p in found if any(p.stem.startswith(n.removesuffix(".ipynb")) for n in names)]
    if len(chosen) < len(names):
        sys.exit(f"no such notebook among {[p.stem for p in found]}: {names}")
    return chosen


def parse_parameter(text: str) -> tuple[str, object]:
    key, eq, value = text.partition("=")
    if not eq or not key:
        sys.exit(f"-p {text!r}: write NAME=VALUE, e.g. -p num_epochs=15")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def check_parameters(path: Path, parameters: dict) -> None:
    declared = set(pm.inspect_notebook(str(path)))
    unknown = sorted(set(parameters) - declared)
    if unknown:
        sys.exit(f"{path.name} takes no parameter {unknown}; it takes {sorted(declared)}")


def result_rows(stem: str, since: float) -> list[dict]:
    rows = []
    for f in sorted(results_dir().glob(f"{stem}.*.json")):
        if f.stat().st_mtime >= since:
            rows.append(json.loads(f.read_text()))
    return rows


def metrics_line(label: str, r: dict) -> str:
    return (f"   {label:<10} loss {r['train_loss']:.3f}, train acc {r['train_acc']:.3f}, "
            f"test acc {r['test_acc']:.3f}, {r['examples_per_sec']:.1f} examples/sec "
            f"({r['wall_examples_per_sec']:.1f} end to end) on {r['device']}, "
            f"{r['num_examples']} training examples")


def committed_reference(r: dict) -> dict | None:
    """The course's committed result of the same notebook, setting and device kind, if any."""
    path = COMMITTED_RESULTS / f"{r['notebook']}.{r['setting']}.{r['device_name']}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def report(stem: str, setting: str, seconds: float, rows: list[dict]) -> None:
    print(f"\n== {stem}  (setting {setting}, {try_gpu()}, {seconds:.0f} s)")
    for r in rows:
        if "train_loss" not in r:  # not one training run (e.g. notebook 11's comparison of recipes)
            print(f"   results of setting {r.get('setting')} on {r.get('device')} written "
                  f"({', '.join(k for k in r if isinstance(r[k], (list, dict)))})")
            continue
        print(metrics_line("this run", r))
        reference = committed_reference(r) if {"notebook", "device_name"} <= set(r) else None
        if reference is not None and reference.get("date") != r.get("date"):
            print(metrics_line("committed", reference) + f"  [results/, {reference.get('date', '')[:10]}]")
        book = BOOK.get(stem)
        if book:
            print(f"   the book   loss {book['train_loss']:.3f}, train acc {book['train_acc']:.3f}, "
                  f"test acc {book['test_acc']:.3f}, {book['examples_per_sec']:.1f} examples/sec"
                  f"  [{book['where']}]")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help="notebook name prefixes (default: all)")
    ap.add_argument("--setting", choices=["full", "quick", "smoke"], default=None)
    ap.add_argument("-p", "--parameter", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--in-place", action="store_true", help="write outputs back into notebooks/")
    args = ap.parse_args()

    setting, source = setting_name(args.setting)
    if setting == "smoke":  # smoke runs prove nothing worth keeping beside the real results
        os.environ.setdefault("D2L_RESULTS_DIR", str(ROOT / "build" / "smoke-results"))
    parameters = dict(parse_parameter(p) for p in args.parameter)
    if args.setting and args.in_place:
        # through the environment, as nbval's kernels get it: a committed notebook holds no injected
        # parameters cell, which would pin every reader's run to this setting
        os.environ[SETTING_ENV] = args.setting
    elif args.setting:
        parameters["setting"] = args.setting
    out_dir = NOTEBOOKS if args.in_place else ROOT / "build" / "run" / setting
    out_dir.mkdir(parents=True, exist_ok=True)
    # a reader's run leaves the committed results/ alone; --in-place (maintainers) refreshes them
    os.environ.setdefault("D2L_RESULTS_DIR", str(COMMITTED_RESULTS if args.in_place
                                                  else out_dir / "results"))
    paths = notebooks(args.names)
    for path in paths:
        check_parameters(path, parameters)
    print(f"running {len(paths)} notebooks in setting {setting!r} ({source}) on {try_gpu()}; "
          f"executed copies in {out_dir.relative_to(ROOT)}/")
    summary = []
    for path in paths:
        start = time.time()
        print(f"-- {path.name} ...", flush=True)
        pm.execute_notebook(str(path), str(out_dir / path.name), parameters=parameters,
                            kernel_name="python3", cwd=str(NOTEBOOKS), progress_bar=False,
                            config=KERNEL_CONFIG)
        summary.append((path.stem, time.time() - start, result_rows(path.stem, start)))
    for stem, seconds, rows in summary:
        report(stem, setting, seconds, rows)
    total = sum(s for _, s, _ in summary)
    print(f"\nall {len(summary)} notebooks ran in {total / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
