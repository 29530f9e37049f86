"""Sphinx + MyST-NB: the course as a website, built by `make site` from the committed notebooks.

    sphinx-build -b html -c site . build/site     # what `make site` runs, from the repository root

The source folder is the repository itself, so the README (the front page) and the notebooks keep
the links and image paths they have on GitHub and in JupyterLab; only README.md, README.zh-CN.md
and notebooks/NN_*.ipynb are read. The notebooks are shown with the outputs they were committed
with: nothing is executed. The pages need nothing from the network: MathJax is served from the
site itself (the jupyter-server-mathjax package's copy).
"""

import shutil
from pathlib import Path

import jupyter_server_mathjax

ROOT = Path(__file__).resolve().parent.parent

project = "AlexNet, D2L 7.1 (zh) / 8.1 (en)"
author = "the course's authors"
copyright = "the course's authors; Dive into Deep Learning by A. Zhang, Z. C. Lipton, M. Li, A. J. Smola"

extensions = ["myst_nb"]
root_doc = "README"
include_patterns = ["README.md", "README.zh-CN.md", "notebooks/[0-9][0-9]_*.ipynb"]
# the walk of the source folder skips these (the environment alone holds tens of thousands of files)
exclude_patterns = [".venv", ".git", "build", "data", "runs", "student", "results", "tests", "tools",
                    "d2l_local", "course_tools", "jupyter", "site", "**/.ipynb_checkpoints"]

nb_execution_mode = "off"  # the committed outputs, as executed; never re-run here
nb_merge_streams = True    # a cell's printed lines as one block
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
suppress_warnings = ["myst.header", "mystnb.unknown_mime_type"]

html_theme = "sphinx_book_theme"
html_title = "AlexNet: D2L 7.1 / 8.1, a course you can run"
html_theme_options = {"show_toc_level": 2, "home_page_in_toc": True, "use_download_button": True}
html_sourcelink_suffix = ""  # the download button gives the .ipynb itself
MATHJAX = Path(jupyter_server_mathjax.__file__).parent / "static"
mathjax_path = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"  # MathJax 2.7, its own config
myst_update_mathjax = False
mathjax3_config = None
mathjax2_config = {"tex2jax": {"inlineMath": [["\\(", "\\)"]], "displayMath": [["\\[", "\\]"]],
                               "processEscapes": True, "ignoreClass": "document",
                               "processClass": "math|output_area"},
                   # the package ships the STIX-Web fonts only
                   "HTML-CSS": {"availableFonts": ["STIX-Web"], "preferredFont": "STIX-Web",
                                "webFont": "STIX-Web", "imageFont": None}}

# the reading order, as the README's tables give it: the chapter, the exercises, the 2012 network
PARTS = {
    "The chapter (D2L zh 7.1 / en 8.1)": ["01_learning_representations", "02_alexnet_architecture",
                                          "03_reading_the_data", "04_one_training_step",
                                          "05_training_alexnet"],
    "The exercises": ["06_ex1_more_epochs", "07_ex2_small_images", "08_ex3_batch_size",
                      "09_ex4_compute_and_memory", "10_ex5_lenet_dropout_relu"],
    "Beyond the chapter": ["11_original_alexnet"],
}
missing = [n for names in PARTS.values() for n in names if not (ROOT / "notebooks" / f"{n}.ipynb").exists()]
found = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
if missing or len(found) != sum(map(len, PARTS.values())):
    raise RuntimeError(f"site/conf.py's PARTS do not match notebooks/: {found}; listed but missing {missing}")


def _toctree(app, docname, source):
    """The front page (the README) gets the table of contents; the Chinese README is a page apart."""
    if docname == root_doc:
        for caption, names in PARTS.items():
            entries = "\n".join(f"notebooks/{n}" for n in names)
            source[0] += f"\n\n```{{toctree}}\n:caption: {caption}\n:hidden:\n\n{entries}\n```\n"
    elif docname == "README.zh-CN":
        source[0] = "---\norphan: true\n---\n" + source[0]


def _finish(app, exception):
    """MathJax beside the pages, and index.html leading to the front page."""
    if exception is None and app.builder.format == "html":
        out = Path(app.outdir)
        shutil.copytree(MATHJAX, out / "_static" / "mathjax", dirs_exist_ok=True)
        (out / "index.html").write_text('<!DOCTYPE html><html><head><meta charset="utf-8">'
                                        '<meta http-equiv="refresh" content="0; url=README.html">'
                                        '<title>AlexNet course</title></head>'
                                        '<body><a href="README.html">The course</a></body></html>\n')


def setup(app):
    app.connect("source-read", _toctree)
    app.connect("build-finished", _finish)
