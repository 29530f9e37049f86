"""Counting: `Timer`, `Accumulator`, `accuracy`, `evaluate_accuracy_gpu` (book names).

Counting is kept apart from showing (see `plotting.py`). The book's versions
call `float()` on every batch, a host-device sync point on a GPU; the
`*_count` helpers here return tensors so callers can sum on the device and
read the totals once.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import torch
from torch import nn


class Timer:
    """Record multiple running times (D2L 2.x, `d2l.Timer`)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.start()

    def start(self) -> None:
        self.tik = time.perf_counter()

    def stop(self) -> float:
        self.times.append(time.perf_counter() - self.tik)
        return self.times[-1]

    def avg(self) -> float:
        return sum(self.times) / len(self.times)

    def sum(self) -> float:
        return sum(self.times)

    def cumsum(self) -> list[float]:
        total, out = 0.0, []
        for t in self.times:
            total += t
            out.append(total)
        return out


class Accumulator:
    """Sum over n variables (`d2l.Accumulator`)."""

    def __init__(self, n: int) -> None:
        self.data = [0.0] * n

    def add(self, *args) -> None:
        self.data = [a + float(b) for a, b in zip(self.data, args, strict=True)]

    def reset(self) -> None:
        self.data = [0.0] * len(self.data)

    def __getitem__(self, idx: int) -> float:
        return self.data[idx]


def correct_count(y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Number of correct predictions, as a tensor on y's device (no sync)."""
    if y_hat.dim() > 1 and y_hat.shape[1] > 1:
        y_hat = y_hat.argmax(dim=1)
    return (y_hat.type(y.dtype) == y).type(y.dtype).sum()


def accuracy(y_hat: torch.Tensor, y: torch.Tensor) -> float:
    """Number of correct predictions, as a float (`d2l.accuracy`; the name is the book's)."""
    return float(correct_count(y_hat, y))


def evaluate_accuracy_gpu(
    net: nn.Module,
    data_iter: Iterable,
    device: torch.device | str | None = None,
    *,
    autocast_dtype: torch.dtype | None = None,
) -> float:
    """Accuracy of `net` on `data_iter` (`d2l.evaluate_accuracy_gpu`).

    Unlike the book's, it syncs once at the end instead of once per batch and
    puts `net` back into the mode it was in.
    """
    if device is None:
        device = next(iter(net.parameters())).device
    device = torch.device(device)
    was_training = net.training
    net.eval()
    correct = torch.zeros((), dtype=torch.int64, device=device)
    total = 0
    with torch.no_grad(), _autocast(device, autocast_dtype):
        for X, y in data_iter:
            X = [x.to(device) for x in X] if isinstance(X, list) else X.to(device)
            y = y.to(device)
            correct += correct_count(net(X), y)
            total += y.numel()
    net.train(was_training)
    if total == 0:
        raise ValueError("evaluate_accuracy_gpu: data_iter yielded no examples")
    return correct.item() / total


def _autocast(device: torch.device, dtype: torch.dtype | None):
    """Mixed precision when asked for, else a context that does nothing."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


class StepTimer:
    """Compute-only time of training steps, as the book counts it, without a sync per step.

    On the CPU each step is timed with `perf_counter` (the CPU runs
    synchronously). On CUDA, events are recorded around each step in the
    stream and read only at `total()`, which waits for the device once.
    """

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.seconds = 0.0
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []

    def start(self) -> None:
        if self.cuda:
            self._begin = torch.cuda.Event(enable_timing=True)
            self._begin.record(torch.cuda.current_stream(self.device))
        else:
            self._tik = time.perf_counter()

    def stop(self) -> None:
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record(torch.cuda.current_stream(self.device))
            self._events.append((self._begin, end))
        else:
            self.seconds += time.perf_counter() - self._tik

    def total(self) -> float:
        """Seconds measured so far (a sync point on CUDA)."""
        if self._events:
            self._events[-1][1].synchronize()
            self.seconds += sum(b.elapsed_time(e) for b, e in self._events) / 1000
            self._events.clear()
        return self.seconds
