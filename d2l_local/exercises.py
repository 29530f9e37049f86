"""Helpers of the exercise notebooks (06-10): one training run of a named net, preprocessing of
whole batches, and reading back committed results files.

`run_recipe` is `train_ch6` with the seed, the data and the preprocessing in one call, so that a
notebook and `tools/exercise_full_runs.py` train exactly the same way.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from d2l_local.data import load_data_fashion_mnist_fast
from d2l_local.results import committed_results_dir
from d2l_local.training import History, train_ch6

# Fashion-MNIST's training-set mean and standard deviation of the pixel values in [0, 1]
# (computed in 10_ex5_lenet_dropout_relu and checked there)
FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530


def normalize(X: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit standard deviation over the training set (the same for test images)."""
    return (X - FMNIST_MEAN) / FMNIST_STD


def augment(X: torch.Tensor, generator: torch.Generator, shift: int = 2) -> torch.Tensor:
    """Random horizontal flips and random shifts of up to `shift` pixels (zero padded)."""
    n, _, h, w = X.shape
    flip = torch.rand(n, generator=generator) < 0.5
    X = torch.where(flip.view(n, 1, 1, 1).to(X.device), X.flip(-1), X)
    padded = torch.nn.functional.pad(X, (shift, shift, shift, shift))
    dy, dx = torch.randint(0, 2 * shift + 1, (2,), generator=generator).tolist()  # one per batch
    return padded[:, :, dy:dy + h, dx:dx + w]


class Preprocessed:
    """Batches of `batches` passed through `fn(X)` (an iterable with `len()`, like a DataLoader)."""

    def __init__(self, batches, fn) -> None:
        self.batches, self.fn = batches, fn

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for X, y in self.batches:
            yield self.fn(X), y


PREPROCESSING = ("none", "normalize", "normalize+augment")


def run_recipe(build, *, batch_size: int, lr: float, num_epochs: int, device, seed: int = 0,
               resize=None, train_subset=None, test_subset=None, preprocessing: str = "none",
               momentum: float = 0.0, **train_kwargs) -> tuple[torch.nn.Module, History]:
    """Build a net with `build()` after seeding, train it with `train_ch6`, return (net, history).

    preprocessing: "none" (the book's), "normalize", or "normalize+augment" (training images only
    are augmented; test images are only normalised).
    """
    if preprocessing not in PREPROCESSING:
        raise ValueError(f"preprocessing={preprocessing!r}: choose one of {PREPROCESSING}")
    torch.manual_seed(seed)  # the initial weights and dropout masks
    net = build()
    train_iter, test_iter = load_data_fashion_mnist_fast(
        batch_size, resize=resize, device=device, seed=seed,
        train_subset=train_subset, test_subset=test_subset)
    if preprocessing != "none":
        test_iter = Preprocessed(test_iter, normalize)
        if preprocessing == "normalize":
            train_iter = Preprocessed(train_iter, normalize)
        else:
            gen = torch.Generator().manual_seed(seed)
            train_iter = Preprocessed(train_iter, lambda X: normalize(augment(X, gen)))
    history = train_ch6(net, train_iter, test_iter, num_epochs, lr, device, momentum=momentum,
                        **train_kwargs)
    return net, history


def load_results(pattern: str, root: Path | None = None) -> list[dict]:
    """The results files matching `pattern` (e.g. '07_ex2_small_images.*.full.*.json'), sorted; by
    default the course's committed ones (`results/`), whatever `$D2L_RESULTS_DIR` says."""
    root = Path(root) if root else committed_results_dir()
    return [json.loads(p.read_text()) for p in sorted(root.glob(pattern))]


# ---- exercise 3: memory of one training step ---------------------------------------------------

_PEAK_CHILD = r"""
import json, resource, sys
import psutil, torch
from d2l_local import models
name, batch, size, steps, threads, momentum = sys.argv[1:7]
batch, size, steps, momentum = int(batch), int(size), int(steps), float(momentum)
torch.set_num_threads(int(threads))
torch.manual_seed(0)
net = models.EXERCISE_MODELS[name]()
X, y = torch.rand(batch, 1, size, size), torch.randint(0, 10, (batch,))
opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=momentum)
loss = torch.nn.CrossEntropyLoss()
before = psutil.Process().memory_info().rss            # net and batch in memory, nothing trained yet
hwm_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
for _ in range(steps):
    opt.zero_grad()
    loss(net(X), y).backward()
    opt.step()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # the kernel's high-water mark
buffers = sum(s.get("momentum_buffer") is not None for s in opt.state.values())
print(json.dumps(dict(rss_before=before, peak_before=hwm_before, peak=peak,
                      rss_after=psutil.Process().memory_info().rss, momentum_buffers=buffers)))
"""


def measured_peak_memory(model: str, batch_size: int, *, size: int = 224, steps: int = 2,
                         momentum: float = 0.9, device=None) -> dict:
    """Peak memory of `steps` training steps (SGD, `momentum` 0.0: plain) of `EXERCISE_MODELS[model]`.

    On a GPU: `torch.cuda.max_memory_allocated` in this process. On a CPU: a fresh Python process per
    call, so that one batch size's memory cannot hide in another's; psutil reads its resident memory
    before training, and the kernel's high-water mark (`ru_maxrss`; psutil has no peak on Linux)
    gives the peak. Returns bytes: `before`, `peak`, and `step` = peak - before; and
    `momentum_buffers`, how many momentum buffers the optimiser held (0 with plain SGD).
    """
    import subprocess
    import sys

    from d2l_local import models

    device = torch.device(device or "cpu")
    if model not in models.EXERCISE_MODELS:
        raise ValueError(f"model={model!r}: choose one of {sorted(models.EXERCISE_MODELS)}")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum={momentum!r}: use 0.0 (plain SGD) up to below 1.0, e.g. 0.9")
    if device.type == "cuda":
        torch.manual_seed(0)
        net = models.EXERCISE_MODELS[model]().to(device)
        X = torch.rand(batch_size, 1, size, size, device=device)
        y = torch.randint(0, 10, (batch_size,), device=device)
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=momentum)
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        for _ in range(steps):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(X), y).backward()
            opt.step()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        buffers = sum(s.get("momentum_buffer") is not None for s in opt.state.values())
        del net, X, y, opt
        torch.cuda.empty_cache()
        return dict(before=before, peak=peak, step=peak - before, momentum_buffers=buffers,
                    how="torch.cuda.max_memory_allocated")
    out = subprocess.run([sys.executable, "-c", _PEAK_CHILD, model, str(batch_size), str(size),
                          str(steps), str(torch.get_num_threads()), str(momentum)],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"the measuring process failed:\n{out.stderr[-2000:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return dict(before=r["rss_before"], peak=r["peak"], step=r["peak"] - r["rss_before"],
                momentum_buffers=r["momentum_buffers"],
                how="peak resident memory of a fresh process (ru_maxrss) minus psutil's RSS before training")


# ---- exercise 4: the machine's roofline -------------------------------------------------------

def copy_bandwidth(device, *, mbytes: int = 256, repeats: int = 5) -> float:
    """Measured memory bandwidth in GB/s: a copy of a large fp32 tensor (reads and writes counted)."""
    import time

    from d2l_local.device import synchronize

    device = torch.device(device)
    n = mbytes * 2**20 // 4
    src = torch.rand(n, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)  # warm-up: the pages are touched
    synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        dst.copy_(src)
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n * 4 / best / 1e9


def layer_times(net: torch.nn.Sequential, input_shape, device, *, repeats: int = 3) -> list[float]:
    """Seconds of each layer's forward pass on a batch of `input_shape` (best of `repeats`)."""
    import time

    from d2l_local.device import synchronize

    device = torch.device(device)
    net = net.to(device).eval()
    X = torch.rand(*input_shape, device=device)
    times = []
    with torch.no_grad():
        for layer in net:
            layer(X)  # warm-up
            synchronize(device)
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                out = layer(X)
                synchronize(device)
                best = min(best, time.perf_counter() - start)
            times.append(best)
            X = out
    return times


# ---- plots --------------------------------------------------------------------------------------

def plot_history(ax, history: History | dict, title: str, *, mark_epoch: int | None = None,
                 mark_label: str | None = None) -> None:
    """Training loss, training and test accuracy per epoch of one run (a History or a results record).

    mark_epoch: draw a dotted vertical line there, named `mark_label` in the legend.
    """
    from matplotlib.ticker import MaxNLocator

    epochs = history.epochs if isinstance(history, History) else history["epochs"]
    x = [e["epoch"] for e in epochs]
    ax.plot(x, [e["train_loss"] for e in epochs], "C0.-", label="train loss")
    ax.plot(x, [e["train_acc"] for e in epochs], "C1.--", label="train acc")
    ax.plot(x, [e["test_acc"] for e in epochs], "C2.-.", label="test acc")
    if mark_epoch:
        ax.axvline(mark_epoch, color="gray", lw=0.8, ls=":", label=mark_label or f"epoch {mark_epoch}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss / accuracy")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
