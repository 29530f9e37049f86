"""Shared fixtures: the checked data set, the real `d2l` package as the oracle, quiet settings."""

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent

# no progress bars in test logs, no windows
os.environ.setdefault("D2L_PROGRESS", "0")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def fmnist():
    from d2l_local.data import fashion_mnist_tensors

    return fashion_mnist_tensors()


@pytest.fixture(scope="session")
def d2l():
    """The book's package (d2l 1.0.3), the oracle for d2l_local."""
    from d2l import torch as d2l

    return d2l


@pytest.fixture
def book_cwd(tmp_path, monkeypatch):
    """d2l hard-codes root='../data': give it a working directory where that is our data/."""
    from d2l_local import data_dir

    (tmp_path / "data").symlink_to(data_dir())
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _no_chosen_setting(monkeypatch):
    """Each test starts with no setting chosen (train_ch6 then uses the book's fp32), whatever an
    earlier test in the same worker chose."""
    from d2l_local import training

    monkeypatch.setattr(training, "current_setting", None)


@pytest.fixture(autouse=True)
def _no_ipython_shell(monkeypatch):
    """Each test runs as a script: no IPython shell, whatever an earlier test left behind (the real
    d2l's plotting creates IPython's global shell, which made `choose_setting` read a cell history
    that has no parameters cell and ignore a `setting` passed to it). Tests of notebook behaviour
    fake a shell themselves."""
    monkeypatch.setattr("IPython.get_ipython", lambda: None)
