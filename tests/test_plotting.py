"""`Animator`: live in a notebook, one final figure when executed headlessly, silent in scripts."""

import subprocess
import sys
import textwrap

import nbformat
from nbclient import NotebookClient

from conftest import ROOT

ANIMATE = textwrap.dedent("""
    from d2l_local import Animator
    animator = Animator(xlabel="epoch", xlim=[1, 5], legend=["a", "b"])
    for epoch in range(1, 6):
        animator.add(epoch, (1 / epoch, epoch / 5))
""")


def test_headless_notebook_keeps_exactly_one_figure(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(ANIMATE), nbformat.v4.new_code_cell("print('done')")]
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = nb.cells[0].outputs
    assert len(outputs) == 1, [o.output_type for o in outputs]
    assert outputs[0].output_type == "display_data"
    svg = outputs[0].data["image/svg+xml"]
    assert svg.count("<svg") == 1
    assert nb.cells[1].outputs[0].text == "done\n"


def test_script_prints_nothing_and_saves_the_figure(tmp_path):
    code = ANIMATE + f"animator.savefig({str(tmp_path / 'curve.png')!r})\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "" and out.stderr == ""
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
