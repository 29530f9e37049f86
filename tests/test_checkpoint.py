"""Checkpoints: an interrupted run resumes to the same result; same seed, same metrics; atomic files."""

import os

import pytest
import torch
from torch import nn

import d2l_local
from d2l_local import checkpoint as ckpt
from d2l_local.checkpoint import CheckpointError, atomic_write


def _net():
    # dropout: the RNG state must be carried over for the resumed run to match
    return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(6 * 14 * 14, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 10))


def _data(loader="fast"):
    if loader == "fast":  # its own shuffling generator
        return d2l_local.load_data_fashion_mnist_fast(64, train_subset=384, test_subset=128, seed=5)
    # the book's DataLoader: shuffles from the global RNG
    return d2l_local.load_data_fashion_mnist(64, train_subset=384, test_subset=128, num_workers=0)


class Interrupt(Exception):
    pass


class StopAfter:
    """Wraps a training iterable; raises (a kernel restart, Ctrl-C) after `n` batches in all."""

    def __init__(self, data_iter, n):
        self.data_iter, self.left = data_iter, n

    def __len__(self):
        return len(self.data_iter)

    def __getattr__(self, name):  # the data's generator, for the checkpoint
        return getattr(self.data_iter, name)

    def __iter__(self):
        for batch in self.data_iter:
            if self.left == 0:
                raise Interrupt
            self.left -= 1
            yield batch


def _train(train_iter, test_iter, num_epochs=2, **kw):
    torch.manual_seed(11)
    net = _net()
    h = d2l_local.train_ch6(net, train_iter, test_iter, num_epochs, 0.2, "cpu", verbose=False,
                            momentum=0.5, **kw)
    return net, h


def _same(a, b):
    (net_a, h_a), (net_b, h_b) = a, b
    for (name, pa), pb in zip(net_a.state_dict().items(), net_b.state_dict().values()):
        assert torch.equal(pa, pb), name
    keys = ("epoch", "train_loss", "train_acc", "test_acc")
    assert [[e[k] for k in keys] for e in h_a.epochs] == [[e[k] for k in keys] for e in h_b.epochs]


@pytest.mark.parametrize("loader", ["fast", "torchvision"])
def test_interrupted_run_resumes_to_the_same_result(tmp_path, loader):
    path = tmp_path / "run.pt"
    straight = _train(*_data(loader))
    train_iter, test_iter = _data(loader)
    with pytest.raises(Interrupt):  # stopped in the middle of epoch 2 of 2
        _train(StopAfter(train_iter, len(train_iter) + 3), test_iter, checkpoint=path)
    saved = ckpt.load(path)
    assert saved["epoch"] == 1
    time_before_stop = saved["history"]["compute_seconds"]
    assert not [p for p in tmp_path.iterdir() if p.name != "run.pt"]  # no temporary files left
    # a new kernel: fresh data objects, a fresh net (other initial weights), other RNG states
    torch.manual_seed(999)
    train_iter, test_iter = _data(loader)
    next(iter(train_iter))
    resumed = _train(train_iter, test_iter, checkpoint=path)
    _same(straight, resumed)
    assert len(resumed[1].epochs) == 2 and resumed[1].num_examples == 2 * 384
    # the time of the epoch done before the stop is kept and the second epoch's is added to it
    assert resumed[1].epochs[0]["compute_seconds"] == time_before_stop
    assert resumed[1].compute_seconds > time_before_stop
    # finished: calling again trains nothing and returns the same history
    again = _train(*_data(loader), checkpoint=path)
    _same(straight, again)


def test_more_epochs_continue_from_the_checkpoint(tmp_path):
    path = tmp_path / "run.pt"
    _train(*_data(), num_epochs=1, checkpoint=path)
    three = _train(*_data(), num_epochs=3, checkpoint=path)
    assert [e["epoch"] for e in three[1].epochs] == [1, 2, 3]
    _same(_train(*_data(), num_epochs=3), three)


def test_same_seed_same_metrics_twice():
    first, second = _train(*_data()), _train(*_data())
    _same(first, second)
    assert first[1].test_acc > 0.3  # it learnt something


def test_a_checkpoint_of_another_run_is_refused(tmp_path):
    path = tmp_path / "run.pt"
    _train(*_data(), num_epochs=2, checkpoint=path)
    train_iter, test_iter = _data()
    with pytest.raises(CheckpointError, match="lr 0.2 there, 0.5 now.*delete the file"):
        d2l_local.train_ch6(_net(), train_iter, test_iter, 2, 0.5, "cpu", verbose=False,
                            momentum=0.5, checkpoint=path)
    other = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    with pytest.raises(CheckpointError, match="another net"):
        d2l_local.train_ch6(other, train_iter, test_iter, 2, 0.2, "cpu", verbose=False,
                            momentum=0.5, checkpoint=path)
    with pytest.raises(CheckpointError, match="2 epochs done, more than num_epochs=1"):
        _train(train_iter, test_iter, num_epochs=1, checkpoint=path)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="Delete it"):
        _train(train_iter, test_iter, checkpoint=path)


def test_atomic_write_leaves_the_old_file_on_error(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(path) as f:
            f.write(b"half of the new")
            raise KeyboardInterrupt
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["f.bin"]
    with atomic_write(path) as f:
        f.write(b"new")
    assert path.read_bytes() == b"new" and os.listdir(tmp_path) == ["f.bin"]
