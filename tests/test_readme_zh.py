"""README.zh-CN.md stays in step with README.md: the same commands, every notebook, the same sources."""

import re

from conftest import ROOT

ZH = (ROOT / "README.zh-CN.md").read_text()
EN = (ROOT / "README.md").read_text()
NOTEBOOKS = {p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")}


def command_lines(text: str) -> list[str]:
    """The commands of the 'two commands' block (`    make ...`), without their comments (each
    README writes those in its own language)."""
    return [line.split("#")[0].strip() for line in text.splitlines() if re.match(r"^    make \w+", line)]


def test_the_commands_are_the_english_readmes():
    zh, en = command_lines(ZH), command_lines(EN)
    assert zh, "README.zh-CN.md shows no `make` command block"
    assert set(zh) <= set(en), f"commands not in README.md: {sorted(set(zh) - set(en))}"
    assert {c.split()[1] for c in en} <= {c.split()[1] for c in zh}, "a README.md command is missing"


def test_every_make_target_named_exists():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z-]+):", makefile, flags=re.M))
    named = set(re.findall(r"`make (\w+)`", ZH)) | {c.split()[1] for c in command_lines(ZH)}
    assert named and named <= targets, f"no such make target: {sorted(named - targets)}"


def test_the_notebook_table_lists_every_notebook():
    listed = set(re.findall(r"`(\d\d_[a-z0-9_]+)`", ZH))
    assert listed == NOTEBOOKS, (f"missing: {sorted(NOTEBOOKS - listed)}, "
                                 f"unknown: {sorted(listed - NOTEBOOKS)}")


def test_the_sources_have_the_english_short_names():
    names = re.findall(r"^- \*\*(.+?)\*\*", EN.split("## Sources", 1)[1], flags=re.M)
    assert names, "README.md has no Sources list"
    for name in names:
        assert f"**{name}**" in ZH, f"README.zh-CN.md lacks the source {name}"


def test_the_readmes_link_each_other():
    assert "README.zh-CN.md" in EN and "README.md" in ZH
