"""Bad input as a student meets it: each gets an error that says what to do, and nothing is half-written."""

import gzip
import os
import shutil
import struct
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import d2l_local
from course_tools import settings
from d2l_local import data as data_mod
from d2l_local import training
from d2l_local.data import FILES, DataError, raw_dir
from d2l_local.training import BatchTooLargeError, LongRunError

TABLE = {"full": dict(batch_size=64), "quick": dict(batch_size=64), "smoke": dict(batch_size=64)}


@pytest.fixture(autouse=True)
def _no_setting_left_behind(monkeypatch):
    monkeypatch.setattr(training, "current_setting", None)
    monkeypatch.delenv("D2L_ALLOW_LONG", raising=False)


@pytest.fixture
def data_copy(tmp_path, monkeypatch):
    shutil.copytree(raw_dir(), raw_dir(tmp_path))
    monkeypatch.setenv("D2L_DATA_DIR", str(tmp_path))
    return raw_dir(tmp_path)


# ------------------------------------------------------------------ the data
def test_wrong_count_in_a_consistent_file(data_copy):
    """A well-formed idx file with one label too few: the count, not the size, gives it away."""
    path = data_copy / "t10k-labels-idx1-ubyte"
    raw = path.read_bytes()
    path.write_bytes(raw[:4] + struct.pack(">I", 9999) + raw[8:-1])
    with pytest.raises(DataError, match=r"9999 items, expected 10000.*python -m d2l_local.data"):
        d2l_local.load_data_fashion_mnist_fast(64)


@pytest.mark.parametrize("how", ["empty", "magic"])
def test_corrupt_header(data_copy, how):
    path = data_copy / "train-labels-idx1-ubyte"
    raw = bytearray(path.read_bytes())
    if how == "empty":
        path.write_bytes(b"")
    else:
        raw[2] = 0x12  # no idx file at all
        path.write_bytes(raw)
    with pytest.raises(DataError, match=r"(truncated|not an idx file).*python -m d2l_local.data"):
        d2l_local.load_data_fashion_mnist_fast(64)


def _gz_source(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in FILES:
        with gzip.open(src / f"{name}.gz", "wb") as f:
            f.write(b"x" * 100_000)
    return src


def test_decompressing_is_atomic(tmp_path, monkeypatch):
    """Interrupted in the middle of a file: no partial file appears under the data folder."""
    dest = tmp_path / "raw"
    calls = []

    def copy_then_fail(fin, fout):
        fout.write(fin.read(1000))
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C in the second file

    monkeypatch.setattr(data_mod.shutil, "copyfileobj", copy_then_fail)
    with pytest.raises(KeyboardInterrupt):
        data_mod._decompress_from(_gz_source(tmp_path), dest)
    # the first file is whole, the second absent; no temporary file left behind
    assert sorted(os.listdir(dest)) == [next(iter(FILES))]
    assert (dest / next(iter(FILES))).stat().st_size == 1000


def test_a_failed_download_leaves_nothing(tmp_path, monkeypatch):
    import torchvision

    def half_download(root, train, download):
        raw = raw_dir(root)
        raw.mkdir(parents=True, exist_ok=True)
        (raw / "train-images-idx3-ubyte").write_bytes(b"\0" * 1000)  # half-written
        raise ConnectionError("network is unreachable")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", half_download)
    assert data_mod._try_torchvision(tmp_path) is None
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------ settings and parameters
def test_unknown_setting_names_the_valid_ones(monkeypatch):
    monkeypatch.setenv("D2L_SETTING", "ful")
    with pytest.raises(ValueError, match=r"unknown setting 'ful' \(\$D2L_SETTING\); choose one of full"):
        settings.choose_setting(TABLE, {}, verbose=False)


@pytest.mark.notebooks
def test_misspelt_papermill_parameter_names_the_valid_ones(tmp_path):
    """Through papermill, as `make run -p ...` or a student's own call would inject it."""
    import nbformat
    import papermill as pm

    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("# Parameters\nsetting = None\nbatch_size = None",
                                  metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("from course_tools import choose_setting\n"
                                  f"SETTINGS = {TABLE!r}\n"
                                  "cfg = choose_setting(SETTINGS, globals())"),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    src = tmp_path / "nb.ipynb"
    nbformat.write(nb, src)
    with pytest.raises(pm.PapermillExecutionError, match=r"bach_size.*batch_size.*setting"):
        pm.execute_notebook(str(src), str(tmp_path / "out.ipynb"), kernel_name="python3",
                            parameters=dict(setting="smoke", bach_size=32), progress_bar=False)


# ------------------------------------------------------------------ `full` on a CPU
def _tiny():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))
    train_iter, test_iter = d2l_local.load_data_fashion_mnist_fast(64, train_subset=256, test_subset=128)
    return net, train_iter, test_iter


def _choose(name):
    return settings.choose_setting(TABLE, {"setting": name}, verbose=False)


def test_full_on_a_cpu_stops_first_and_says_how_long(monkeypatch):
    monkeypatch.setattr(training, "estimate_train_seconds", lambda *a, **k: 5 * 3600.0)
    _choose("full")
    net, train_iter, test_iter = _tiny()
    before = [p.clone() for p in net.parameters()]
    with pytest.raises(LongRunError, match=r"about 5\.0 hours.*'quick'.*D2L_ALLOW_LONG=1") as err:
        d2l_local.train_ch6(net, train_iter, test_iter, 1, 0.1, "cpu", verbose=False, init_weights=False)
    assert "nothing was trained" in str(err.value)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
    monkeypatch.setenv("D2L_ALLOW_LONG", "1")  # asked for explicitly: it runs
    assert len(d2l_local.train_ch6(net, train_iter, test_iter, 1, 0.1, "cpu", verbose=False).epochs) == 1


def test_full_on_a_cpu_runs_when_it_is_short():
    _choose("full")  # the real estimate: a tiny net takes seconds, below the limit
    net, train_iter, test_iter = _tiny()
    assert d2l_local.train_ch6(net, train_iter, test_iter, 1, 0.1, "cpu", verbose=False).epochs


@pytest.mark.parametrize("name", ["quick", "smoke", None])
def test_quick_and_smoke_are_never_stopped_or_timed(monkeypatch, name):
    def fail(*a, **k):
        raise AssertionError("estimated although the setting is not full")

    monkeypatch.setattr(training, "estimate_train_seconds", fail)
    if name:
        _choose(name)
    net, train_iter, test_iter = _tiny()
    assert d2l_local.train_ch6(net, train_iter, test_iter, 1, 0.1, "cpu", verbose=False).epochs


# ------------------------------------------------------------------ a batch too large
def test_batch_too_large_for_free_memory_on_a_cpu(monkeypatch):
    import psutil

    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 222 * 222, 10))
    per_example, fixed = training.step_bytes(net, (1, 224, 224), "cpu")
    free = (fixed + 20 * per_example) / 0.8  # room for 20 examples after a 20% margin: suggests 16
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(available=free))
    train_iter, test_iter = d2l_local.load_data_fashion_mnist_fast(
        256, resize=224, train_subset=512, test_subset=64)
    with pytest.raises(BatchTooLargeError, match=r"batch_size=256 .*GiB.* try batch_size=16"):
        d2l_local.train_ch6(net, train_iter, test_iter, 1, 0.1, "cpu", verbose=False)
    train_iter, test_iter = d2l_local.load_data_fashion_mnist_fast(
        16, resize=224, train_subset=32, test_subset=16)
    assert d2l_local.train_ch6(net, train_iter, test_iter, 1, 0.1, "cpu", verbose=False).epochs


class FakeDeviceMemory(nn.Module):
    """Raises CUDA's out-of-memory error for batches above `limit`, as a small GPU would."""

    def __init__(self, limit):
        super().__init__()
        self.limit = limit

    def forward(self, X):
        if X.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 4 GiB")
        return X


def test_out_of_memory_during_training_suggests_a_size_that_fits():
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10), FakeDeviceMemory(limit=40))
    train_iter, test_iter = d2l_local.load_data_fashion_mnist_fast(256, train_subset=512, test_subset=64)
    with pytest.raises(BatchTooLargeError,
                       match=r"batch_size=256 does not fit in the memory of cpu: CUDA out of memory.*"
                             r"batch_size=32 fits"):
        d2l_local.train_ch6(net, train_iter, test_iter, 1, 0.1, "cpu", verbose=False)
    assert all(p.grad is None for p in net.parameters())


def test_other_runtime_errors_are_not_called_memory_errors():
    net = nn.Sequential(nn.Flatten(), nn.Linear(100, 10))  # wrong input size: a plain error
    train_iter, test_iter = d2l_local.load_data_fashion_mnist_fast(64, train_subset=64, test_subset=64)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied") as err:
        d2l_local.train_ch6(net, train_iter, test_iter, 1, 0.1, "cpu", verbose=False)
    assert not isinstance(err.value, BatchTooLargeError)

