"""The environment: conda and pip agree; importing d2l_local has no side effects."""

import re
import subprocess
import sys

import yaml

from conftest import ROOT


def _requirements() -> list[str]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [ln.split("#")[0].strip() for ln in lines if ln.split("#")[0].strip()]


def test_environment_yml_matches_requirements():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert sorted(pip) == sorted(_requirements())
    assert "python=3.11" in env["dependencies"]


def test_requirements_use_ranges_not_pins():
    pinned = [r for r in _requirements() if re.search(r"==", r)]
    assert pinned == []


def test_import_prints_nothing_and_changes_no_global_state():
    code = """
import matplotlib, torch, sys
rc = dict(matplotlib.rcParams)
state = (torch.backends.cudnn.benchmark, torch.get_default_dtype(), torch.get_num_threads())
import d2l_local
assert dict(matplotlib.rcParams) == rc, "rcParams changed"
assert (torch.backends.cudnn.benchmark, torch.get_default_dtype(), torch.get_num_threads()) == state
assert "matplotlib.pyplot" not in sys.modules, "pyplot imported (global figure state)"
assert "d2l" not in sys.modules
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "" and out.stderr == ""


def test_d2l_local_imports_nothing_of_course_tools():
    """d2l_local holds the book's helpers alone: importing every module of it loads no course tool."""
    import subprocess
    import sys

    code = ("import importlib, pkgutil, sys, d2l_local\n"
            "for m in pkgutil.iter_modules(d2l_local.__path__):\n"
            "    importlib.import_module('d2l_local.' + m.name)\n"
            "print(sorted(n for n in sys.modules if n.split('.')[0] == 'course_tools'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
