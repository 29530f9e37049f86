"""Helpers of the exercise notebooks (06-10): one training run of a named net, preprocessing of
whole batches, and reading back committed results files.

`run_recipe` is `train_ch6` with the seed, the data and the preprocessing in one call, so that a
notebook and `tools/exercise_full_runs.py` train exactly the same way.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from course_tools.results import committed_results_dir
from d2l_local.data import load_data_fashion_mnist_fast
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


def dead_relus(net: torch.nn.Sequential, X: torch.Tensor) -> dict[str, float]:
    """For each ReLU of `net` (by its index in the Sequential, e.g. 'relu@1'): the share of its units
    that output 0 for every image of `X` (a conv ReLU's unit is a channel, at every position).

    A unit that is 0 for every input passes no gradient back: it is dead for this data. Evaluated
    in eval mode (no dropout) without gradients; the net's mode is restored.
    """
    was_training = net.training
    net.eval()
    out, h = {}, X
    with torch.no_grad():
        for i, layer in enumerate(net):
            h = layer(h)
            if isinstance(layer, torch.nn.ReLU):
                alive = (h > 0).flatten(2).any(-1) if h.dim() > 2 else (h > 0)  # (N, units)
                out[f"relu@{i}"] = 1.0 - alive.any(0).float().mean().item()
    net.train(was_training)
    return out


def load_results(pattern: str, root: Path | None = None) -> list[dict]:
    """The results files matching `pattern` (e.g. '07_ex2_small_images.*.full.*.json'), sorted; by
    default the course's committed ones (`results/`), whatever `$D2L_RESULTS_DIR` says."""
    root = Path(root) if root else committed_results_dir()
    return [json.loads(p.read_text()) for p in sorted(root.glob(pattern))]


# ---- exercise 3: memory of one training step ---------------------------------------------------

_PEAK_CHILD = r"""
import json, resource, sys
import psutil, torch
from course_tools import models
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

    from course_tools import models

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
        how = (f"was killed by signal {-out.returncode} (out of memory? try a smaller batch)"
               if out.returncode < 0 else f"exited with status {out.returncode}")
        raise RuntimeError(f"the measuring process (batch {batch_size}) {how}:\n{out.stderr[-2000:]}")
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


# ---- grading a design (exercise 2): what it costs, whether it learns, whose code it calls ------

def count_macs(net: torch.nn.Module, input_shape) -> int:
    """Multiply-adds of one forward pass on a batch of `input_shape`, divided by the batch size:
    every convolution and linear layer inside `net` counts, however deeply nested (forward hooks)."""
    from course_tools.analysis import macs

    total, hooks = [0], []
    for m in net.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            hooks.append(m.register_forward_hook(
                lambda layer, _, out: total.__setitem__(0, total[0] + macs(layer, out))))
    was_training = net.training
    try:
        net.eval()
        with torch.no_grad():
            net(torch.zeros(input_shape))
    finally:
        for h in hooks:
            h.remove()
        net.train(was_training)
    return total[0]


def short_run_accuracy(build, *, seed: int = 0, train_start: int = 0, train_images: int = 6000,
                       test_start: int = 0, test_images: int = 2000, epochs: int = 1,
                       batch_size: int = 64, lr: float = 2e-3) -> dict:
    """Train `build()` for a few seconds and return its test accuracy (and the seconds it took).

    A check that a 28x28 design learns, the same on every machine: fp32 on the CPU, Adam (which
    trains a fresh deep net in one short pass better than plain SGD), `train_images` training images
    from `train_start` on, `test_images` test images from `test_start` on, seeded by `seed`.
    """
    import time

    from d2l_local.data import fashion_mnist_tensors

    t = fashion_mnist_tensors()
    X = t["train-images-idx3-ubyte"][train_start:train_start + train_images].float().div(255).unsqueeze(1)
    y = t["train-labels-idx1-ubyte"][train_start:train_start + train_images].long()
    X_test = t["t10k-images-idx3-ubyte"][test_start:test_start + test_images].float().div(255).unsqueeze(1)
    y_test = t["t10k-labels-idx1-ubyte"][test_start:test_start + test_images].long()
    if len(y) < train_images or len(y_test) < test_images:
        raise ValueError(f"{train_images} training images from {train_start} and {test_images} test "
                         f"images from {test_start} do not fit in 60,000 / 10,000")
    threads = torch.get_num_threads()
    # one thread: a net this small gains nothing from more, the run is the same on any number of
    # cores, and it does not crawl when the cores are shared with other jobs
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            net = build()
            optimizer = torch.optim.Adam(net.parameters(), lr=lr)
            order = torch.Generator().manual_seed(seed)
            start = time.perf_counter()
            net.train()
            for _ in range(epochs):
                perm = torch.randperm(len(y), generator=order)
                for i in range(0, len(y), batch_size):
                    idx = perm[i:i + batch_size]
                    optimizer.zero_grad()
                    torch.nn.functional.cross_entropy(net(X[idx]), y[idx]).backward()
                    optimizer.step()
            net.eval()
            with torch.no_grad():
                correct = sum((net(X_test[i:i + 500]).argmax(1) == y_test[i:i + 500]).sum().item()
                              for i in range(0, len(y_test), 500))
    finally:
        torch.set_num_threads(threads)
    return dict(test_acc=correct / len(y_test), seconds=time.perf_counter() - start)


def _filled(cell) -> bool:
    try:
        cell.cell_contents  # noqa: B018 (an empty closure cell raises ValueError)
    except ValueError:
        return False
    return True


COURSE_PACKAGES = ("d2l_local", "course_tools")


def course_code_used(fn) -> list[str]:
    """The names of the course's objects (of `d2l_local`, `course_tools` or a package itself) that
    function `fn` uses, directly or through other functions of its notebook: how a check tells a
    design written layer by layer from a call of one of the course's builders, under any name."""
    import inspect
    import types

    found, seen, todo = set(), set(), [fn]
    while todo:
        f = todo.pop()
        code = getattr(f, "__code__", None)
        if code is None or code in seen:
            continue
        seen.add(code)
        codes = [code] + [c for c in code.co_consts if isinstance(c, types.CodeType)]
        names = {n for c in codes for n in c.co_names}
        strings = {c for c in code.co_consts if isinstance(c, str)}
        for package in COURSE_PACKAGES:
            if any(package in n for n in names | strings):
                found.add(package)
        scope = dict(f.__globals__)
        scope.update({name: cell.cell_contents for name, cell in
                      zip(code.co_freevars, getattr(f, "__closure__", None) or ()) if _filled(cell)})
        names |= set(code.co_freevars)
        for name in names:
            obj = scope.get(name)
            module = inspect.getmodule(obj) if obj is not None else None
            if isinstance(obj, types.ModuleType):
                module = obj
            if module is not None and module.__name__.split(".")[0] in COURSE_PACKAGES:
                found.add(name)
            elif inspect.isfunction(obj):
                todo.append(obj)
    return sorted(found)


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


def label_points(ax, xs, ys, names, *, fontsize: int = 7, dx: float = 8, step: float = 9) -> None:
    """Name each point (x, y) of `ax` with a label to its right, moved down as far as needed so that
    labels near each other do not overlap; a thin line joins a moved label to its point. Call it after
    the axes' scales and limits are set."""
    placed = []  # (x, y) in display pixels of the labels placed so far
    trans, inverse = ax.transData, ax.transData.inverted()
    order = sorted(range(len(names)), key=lambda i: -trans.transform((xs[i], ys[i]))[1])
    for i in order:
        px, py = trans.transform((xs[i], ys[i]))
        ty = py
        while any(abs(px - qx) < 60 and abs(ty - qy) < step for qx, qy in placed):
            ty -= step
        placed.append((px, ty))
        ax.annotate(names[i], (xs[i], ys[i]), xytext=inverse.transform((px + dx, ty - step / 3)),
                    fontsize=fontsize, textcoords="data",
                    arrowprops=dict(arrowstyle="-", lw=0.4, color="gray") if ty != py else None)
