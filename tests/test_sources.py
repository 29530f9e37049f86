"""Every source tag a notebook uses is defined in that notebook, with the source's published title.

The notebooks cite their sources by short tags in brackets (`[Exercise notes]`, `[CPU notes]`, ...),
in prose, table headers and figure labels. A reader has no seed files and may open one notebook
alone, so each notebook that uses a tag defines it itself: a markdown line, at the tag's first use or
in the notebook's Sources cell, of the form

    - **[Exercise notes]**: 《动手学深度学习 Pytorch版》 7.1 深度卷积神经网络(AlexNet), ...

that is the tag, a colon, and the source's published title (the titles of the course brief's
"How to cite the sources"). A tag the table below does not know needs a colon and a description of
at least a few words. The test reports, per notebook, the tags used and not defined.
"""

import json
import re

import pytest

from conftest import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

# tag: the published title, as at the top of each source (a reader can search for it)
TITLES = {
    "Exercise notes": "《动手学深度学习 Pytorch版》 7.1 深度卷积神经网络(AlexNet)",
    "AlexNet class post": "【pytorch图像分类】AlexNet网络结构",
    "CPU notes": "6.1 深度卷积神经网络（AlexNet）",
    "Training-flow post": "深度卷积神经网络的整体运行流程(以alexnet为例)",
    "AlexNet explainer": "一文读懂现代卷积神经网络—深度卷积神经网络(AlexNet)",
}
# a tag: a capitalised name in square brackets, not a markdown link's text ("[D2L](https://...)")
TAG = re.compile(r"\[([A-Z][A-Za-z0-9 .'-]*)\](?!\()")


def _texts(nb: dict) -> tuple[list[str], list[str]]:
    """(markdown cells, everything a reader sees: every cell's source and its text outputs)."""
    markdown, seen = [], []
    for cell in nb["cells"]:
        source = "".join(cell["source"])
        seen.append(source)
        if cell["cell_type"] == "markdown":
            markdown.append(source)
        for out in cell.get("outputs") or []:
            text = out.get("text") or out.get("data", {}).get("text/plain") or ""
            seen.append("".join(text))
    return markdown, seen


def tags_used(nb: dict) -> set[str]:
    return {m.group(1) for text in _texts(nb)[1] for m in TAG.finditer(text)}


def is_defined(tag: str, markdown: list[str]) -> bool:
    """A markdown line has `[tag]`, then a colon, then the published title (or a few words)."""
    pattern = re.compile(r"\[" + re.escape(tag) + r"\]\**\s*[:：]\s*(.+)")
    for line in "\n".join(markdown).splitlines():
        m = pattern.search(line)
        if m and (TITLES[tag] in m.group(1) if tag in TITLES else len(m.group(1).split()) >= 3):
            return True
    return False


def undefined_tags(nb: dict) -> list[str]:
    markdown, _ = _texts(nb)
    return sorted(t for t in tags_used(nb) if not is_defined(t, markdown))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_tag_a_notebook_uses_is_defined_there(path):
    nb = json.loads(path.read_text())
    missing = undefined_tags(nb)
    assert not missing, (
        f"{path.name} uses {missing} without defining them: add to its Sources cell (or at first use) "
        f"a markdown line '- **[tag]**: <published title>, ...' (titles: {[TITLES.get(t) for t in missing]})")


def _nb(*cells: tuple[str, str]) -> dict:
    return {"cells": [{"cell_type": kind, "source": [text], "outputs": [] if kind == "code" else None}
                      for kind, text in cells]}


def test_the_check_finds_undefined_tags_in_prose_code_and_outputs():
    used_in_code = _nb(("markdown", "# A notebook"), ("code", 'print("0.878 in [Exercise notes]")'))
    assert undefined_tags(used_in_code) == ["Exercise notes"]
    in_output = {"cells": [{"cell_type": "code", "source": ["print(x)"],
                            "outputs": [{"output_type": "stream", "text": ["20.6 in [CPU notes]\n"]}]}]}
    assert undefined_tags(in_output) == ["CPU notes"]
    # a definition needs the published title, not just the tag
    wrong_title = _nb(("markdown", "[CPU notes] say 20.6.\n\n- **[CPU notes]**: some CPU notes"))
    assert undefined_tags(wrong_title) == ["CPU notes"]
    right = _nb(("markdown", "[CPU notes] say 20.6.\n\n- **[CPU notes]**: 6.1 深度卷积神经网络（AlexNet）, "
                             "study notes, 2024-04-22"))
    assert undefined_tags(right) == []
    # a tag the table does not know: a colon and a few words
    assert undefined_tags(_nb(("markdown", "see [New post]"))) == ["New post"]
    assert undefined_tags(_nb(("markdown", "see [New post]\n\n[New post]: a blog post, 2025"))) == []
    # links and lower-case indexing are not tags
    assert undefined_tags(_nb(("markdown", "[D2L](https://d2l.ai)"), ("code", "rows[0]; d['x']"))) == []


def test_the_titles_are_the_sources_own():
    """The table's titles are the first lines of the sources (where the seed files are at hand)."""
    seeds = ROOT.parent / "shared" / "seeds"
    if not seeds.is_dir():
        pytest.skip("the source files are not beside this checkout")
    heads = " ".join(p.read_text(encoding="utf-8")[:300] for p in seeds.glob("*.txt"))
    assert [t for t, title in TITLES.items() if title not in heads] == []
