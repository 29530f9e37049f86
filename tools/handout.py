"""`make handout`: the exercises as students get them, a folder and a .tar.gz archive.

    python tools/handout.py                 # build/handout/alexnet-exercises/ and .tar.gz
    python tools/handout.py --dest DIR      # somewhere else

What goes in: the student copies of the exercise notebooks (`student/notebooks/`, written by
`make student`), the helper packages `d2l_local` and `course_tools`, the set-up files
(requirements.txt, pyproject.toml, environment.yml, JupyterLab's settings), the data step
(`tools/get_data.py`, `data/README.md`), the
course's results files that the student notebooks read (the patterns they pass to `load_results` with
`committed_results_dir()`), and the hand-out's own Makefile and README (`student/Makefile`,
`student/README.md`). What stays out: the instructor notebooks, `tools/instructor_solutions.py` and the
other maintainers' tools, the tests, `nbgrader_config.py` and every other results file.
tests/test_handout.py checks that it holds no solution line and no hidden test.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tarfile
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
NAME = "alexnet-exercises"
FILES = ["requirements.txt", "pyproject.toml", "environment.yml", "jupyter/overrides.json",
         "tools/get_data.py", "data/README.md"]
PACKAGES = ["d2l_local", "course_tools"]  # the book's helpers, the course's tools
FROM_STUDENT = {"student/Makefile": "Makefile", "student/README.md": "README.md"}
RESULTS_PATTERN = re.compile(r"""load_results\(\s*["']([^"']+)["']\s*,\s*committed_results_dir\(\)""")


def student_notebooks() -> list[Path]:
    return sorted((ROOT / "student" / "notebooks").glob("[0-9][0-9]_ex*.ipynb"))


def results_read_by(notebooks: list[Path]) -> list[Path]:
    """The committed results files the notebooks read (`load_results(pattern, committed_results_dir())`)."""
    patterns = {m for nb in notebooks for cell in nbformat.read(nb, as_version=4).cells
                if cell.cell_type == "code" for m in RESULTS_PATTERN.findall(cell.source)}
    return sorted({p for pattern in patterns for p in (ROOT / "results").glob(pattern)})


def build(dest: Path) -> tuple[Path, Path]:
    """Write `dest/alexnet-exercises/` and `dest/alexnet-exercises.tar.gz`; return both paths."""
    notebooks = student_notebooks()
    if [p.name[:2] for p in notebooks] != ["06", "07", "08", "09", "10"]:
        sys.exit(f"student/notebooks/ holds {[p.name for p in notebooks]}: run `make student` first")
    folder = dest / NAME
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "notebooks").mkdir(parents=True)
    for nb in notebooks:
        shutil.copy2(nb, folder / "notebooks" / nb.name)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, folder / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    copies = {name: name for name in FILES} | FROM_STUDENT | {
        str(p.relative_to(ROOT)): str(p.relative_to(ROOT)) for p in results_read_by(notebooks)}
    for src, rel in copies.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / src, folder / rel)
    archive = dest / f"{NAME}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=NAME)
    return folder, archive


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dest", type=Path, default=ROOT / "build" / "handout")
    args = ap.parse_args()
    folder, archive = build(args.dest.resolve())
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    print(f"{folder} ({len(files)} files, {sum(p.stat().st_size for p in files) / 1e6:.1f} MB)")
    print(f"{archive} ({archive.stat().st_size / 1e6:.1f} MB): give students this archive")
    return 0


if __name__ == "__main__":
    sys.exit(main())
