"""`train_ch6`: the book's training loop (D2L 6.6), with its faults fixed.

Same arguments, same printed lines (`training on cpu`, `loss 0.330, train acc
0.879, test acc 0.878`, `592.4 examples/sec on cuda:0`) and, by default, the
same numerics as `d2l.train_ch6` (Xavier init, plain SGD). What changes:

- it returns a `History` (per epoch: loss, train/test accuracy, times);
- it works with fewer than 5 batches per epoch (the book divides by `n // 5`);
- `init_weights=False` continues training a net instead of re-initialising it;
- metrics are summed on the device and read only at reporting points, so a
  GPU is not stopped once per batch; examples/sec is compute-only as the book
  counts it (CUDA events, no per-step sync) and, beside it, end to end;
- a tqdm progress bar (off with `progress=False` or `D2L_PROGRESS=0`);
- keyword-only options: momentum and weight decay, the precision (`"fp32"`,
  the book's; `"bf16"` autocast on a CPU or a CUDA GPU; `"auto"`: bf16 where
  the hardware computes it natively, see `device.native_bf16`; by default the
  chosen setting's, which is "auto" unless its table says otherwise, and
  fp32 when no setting was chosen, as in the book),
  channels-last memory format (by default on with bf16, off with fp32) and
  `torch.compile`. The defaults change nothing; bf16 changes the numerics,
  `momentum`/`weight_decay` the recipe. The precision and memory format are
  printed after the book's lines and kept in the `History`;
- before training, two checks that stop with an error saying what to do:
  the `full` setting on a machine without a CUDA GPU when it would take more
  than `LONG_MINUTES` here (unless `$D2L_ALLOW_LONG=1`), and a batch that does
  not fit in memory (estimated on a CPU; caught when CUDA runs out), with a
  batch size that fits;
- `checkpoint="file.pt"` saves the run after every epoch (atomically) and a
  later call with the same file resumes from the last finished epoch, to the
  same result as a run that was never stopped (see `checkpoint.py`).
"""

from __future__ import annotations

import copy
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from d2l_local import checkpoint as ckpt
from d2l_local.device import keep_freed_memory, precision_text, resolve_precision
from d2l_local.metrics import StepTimer, correct_count, evaluate_accuracy_gpu
from d2l_local.plotting import Animator

ALLOW_LONG_ENV = "D2L_ALLOW_LONG"
LONG_MINUTES = 10  # `full` without a CUDA GPU stops first when the estimate is longer


class LongRunError(RuntimeError):
    """The `full` setting would run for hours here; the message says how long and what to do."""


class BatchTooLargeError(MemoryError):
    """A training step at this batch size does not fit in the device's memory."""


@dataclass
class History:
    """What `train_ch6` measured. `examples_per_sec` is the book's figure (training steps only).

    `epochs[i]` holds that epoch's loss and accuracies, and the times since the start of
    training (`compute_seconds`, `wall_seconds`: cumulative, not per epoch).
    """

    device: str
    precision: str = "fp32"        # "fp32" or "bf16" (autocast)
    memory_format: str = "NCHW"    # or "channels_last"
    epochs: list[dict] = field(default_factory=list)
    num_examples: int = 0          # training examples processed, all epochs
    compute_seconds: float = 0.0   # inside training steps (the book's timer)
    eval_seconds: float = 0.0      # evaluating on test_iter, all epochs
    wall_seconds: float = 0.0      # the whole call: data, steps, evaluation, plotting
    curve: dict = field(default_factory=dict, repr=False)  # the live plot's points: X, Y per line
    figure: object = field(default=None, repr=False)

    @property
    def train_loss(self) -> float:
        return self.epochs[-1]["train_loss"]

    @property
    def train_acc(self) -> float:
        return self.epochs[-1]["train_acc"]

    @property
    def test_acc(self) -> float:
        return self.epochs[-1]["test_acc"]

    @property
    def examples_per_sec(self) -> float:
        return self.num_examples / self.compute_seconds

    @property
    def wall_examples_per_sec(self) -> float:
        return self.num_examples / self.wall_seconds

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("figure")
        d.update(train_loss=self.train_loss, train_acc=self.train_acc, test_acc=self.test_acc,
                 examples_per_sec=self.examples_per_sec,
                 wall_examples_per_sec=self.wall_examples_per_sec)
        return d


def init_weights_xavier(m: nn.Module) -> None:
    """The book's initialisation in `train_ch6`: Xavier-uniform weights of Linear and Conv2d."""
    if type(m) is nn.Linear or type(m) is nn.Conv2d:
        nn.init.xavier_uniform_(m.weight)


def progress_enabled(progress: bool | None) -> bool:
    if progress is not None:
        return progress
    return os.environ.get("D2L_PROGRESS", "1").lower() not in ("0", "false", "no", "off")


def accumulator_dtype(device: torch.device) -> torch.dtype:
    """Double precision for the loss sums, as the book's Accumulator; float32 on mps, which has no double."""
    return torch.float32 if device.type == "mps" else torch.float64


def _to_device(X: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    if channels_last and X.dim() == 4:
        return X.to(device, memory_format=torch.channels_last)
    return X.to(device)


def train_ch6(net: nn.Module, train_iter, test_iter, num_epochs: int, lr: float, device, *,
              init_weights: bool = True, momentum: float = 0.0, weight_decay: float = 0.0,
              animate: bool | None = None, progress: bool | None = None, verbose: bool = True,
              precision: str | None = None, channels_last: bool | None = None, bf16: bool = False,
              compile: bool = False, checkpoint: str | os.PathLike | None = None) -> History:
    """Train a model with a GPU (`d2l.train_ch6`); returns a `History`.

    animate: None shows the live plot in a notebook only; the figure is in `History.figure`.
    checkpoint: a file; the run is saved there after every epoch, and resumed from it if it
    exists (delete the file to start again).
    precision: "fp32" (the book's), "bf16" (autocast) or "auto" (bf16 where native); None: the
    chosen setting's (`choose_setting`), else "fp32". `bf16=True` is the same as precision="bf16".
    channels_last: None follows the precision (on with bf16).
    """
    device = torch.device(device)
    precision = run_precision("bf16" if bf16 else precision, device)
    if precision == "bf16" and device.type not in ("cpu", "cuda"):
        raise ValueError(f"bf16 autocast runs on a CPU or a CUDA GPU, not on {device}; "
                         "use precision='fp32'")
    if channels_last is None:
        channels_last = precision == "bf16"
    bf16 = precision == "bf16"
    if num_epochs < 1:
        raise ValueError(f"num_epochs={num_epochs}: train for at least one epoch")
    num_batches = len(train_iter)
    if num_batches == 0:
        raise ValueError("train_iter is empty: check the batch size and the subset size")
    config = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, num_batches=num_batches,
                  precision=precision)
    saved = _load_checkpoint(checkpoint, config, num_epochs) if checkpoint else None
    if init_weights and saved is None:
        net.apply(init_weights_xavier)
    if verbose:
        print("training on", device)
    net.to(device)
    if device.type == "cpu":
        keep_freed_memory()  # each step reuses the last one's pages (see its docstring)
    if channels_last:
        net.to(memory_format=torch.channels_last)
    model = torch.compile(net) if compile else net
    shape = batch_shape(train_iter)
    if shape is not None:
        _check_long_run(net, shape, train_iter, test_iter, num_epochs - (saved or {}).get("epoch", 0),
                        device, precision)
        if device.type in ("cpu", "mps"):  # unified memory; CUDA: caught below when it runs out
            _check_host_memory(net, shape, device)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum,
                                weight_decay=weight_decay)
    loss = nn.CrossEntropyLoss()
    # the book's xlim starts at 1 and so hides the first epoch's training points
    animator = Animator(xlabel="epoch", xlim=[0, num_epochs],
                        legend=["train loss", "train acc", "test acc"], display=animate)
    report_every = max(1, num_batches // 5)  # the book's `num_batches // 5` fails below 5 batches
    amp_dtype = torch.bfloat16 if bf16 else None
    sum_dtype = accumulator_dtype(device)
    history = History(device=str(device), precision=precision,
                      memory_format="channels_last" if channels_last else "NCHW")
    step_timer = StepTimer(device)
    start = time.perf_counter()
    first_epoch = 0
    if saved is not None:
        first_epoch = _resume(saved, net, optimizer, history, step_timer, animator, train_iter)
        start -= history.wall_seconds
        train_l, train_acc, test_acc = history.train_loss, history.train_acc, history.test_acc
        if verbose:
            print(f"resuming from {checkpoint}: {first_epoch} of {num_epochs} epochs done "
                  "(delete the file to start again)")

    from tqdm import tqdm

    bar = tqdm(total=(num_epochs - first_epoch) * num_batches, unit="batch",
               disable=not progress_enabled(progress), file=sys.stderr, mininterval=2.0,
               dynamic_ncols=True)
    out_of_memory = None
    try:
        for epoch in range(first_epoch, num_epochs):
            # on the device: sum of training loss, number correct; on the host: examples seen
            loss_sum = torch.zeros((), dtype=sum_dtype, device=device)
            correct = torch.zeros((), dtype=torch.int64, device=device)
            seen = 0
            net.train()
            bar.set_description(f"epoch {epoch + 1}/{num_epochs}")
            for i, (X, y) in enumerate(train_iter):
                step_timer.start()
                optimizer.zero_grad()
                X, y = _to_device(X, device, channels_last), y.to(device)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=bf16):
                    y_hat = model(X)
                    l = loss(y_hat, y)
                l.backward()
                optimizer.step()
                with torch.no_grad():
                    loss_sum += (l * X.shape[0]).to(sum_dtype)
                    correct += correct_count(y_hat, y)
                seen += X.shape[0]
                step_timer.stop()
                bar.update(1)
                if (i + 1) % report_every == 0 or i == num_batches - 1:
                    train_l = loss_sum.item() / seen  # a sync point, a few times per epoch
                    train_acc = correct.item() / seen
                    animator.add(epoch + (i + 1) / num_batches, (train_l, train_acc, None))
                    bar.set_postfix(loss=f"{train_l:.3f}", acc=f"{train_acc:.3f}", refresh=False)
            eval_start = time.perf_counter()
            test_acc = evaluate_accuracy_gpu(model, test_iter, device, autocast_dtype=amp_dtype)
            history.eval_seconds += time.perf_counter() - eval_start  # it synced to read the count
            animator.add(epoch + 1, (None, None, test_acc))
            history.num_examples += seen
            history.epochs.append(dict(epoch=epoch + 1, train_loss=train_l, train_acc=train_acc,
                                       test_acc=test_acc, compute_seconds=step_timer.total(),
                                       wall_seconds=time.perf_counter() - start))
            if checkpoint:
                history.compute_seconds = step_timer.total()
                history.wall_seconds = time.perf_counter() - start
                _save_checkpoint(checkpoint, config, net, optimizer, history, animator, train_iter)
    except (torch.cuda.OutOfMemoryError, RuntimeError) as e:
        if not is_out_of_memory(e):
            raise
        out_of_memory = str(e).strip().splitlines()[0]
    if out_of_memory is not None:  # here, after the except block has let go of its frames
        bar.close()
        X = y = y_hat = l = None  # noqa: F841 (free the failed step's tensors)
        optimizer.zero_grad(set_to_none=True)
        raise batch_too_large(out_of_memory, model, loss, shape, device, amp_dtype)
    bar.close()
    history.compute_seconds = step_timer.total()
    history.wall_seconds = time.perf_counter() - start
    history.figure = animator.fig
    history.curve = dict(X=animator.X, Y=animator.Y)
    if verbose:
        print(f"loss {train_l:.3f}, train acc {train_acc:.3f}, test acc {test_acc:.3f}")
        print(f"{history.examples_per_sec:.1f} examples/sec on {device}")
        print(f"precision: {precision_text(precision, channels_last)}")
    return history


def _save_checkpoint(path, config, net, optimizer, history, animator, train_iter) -> None:
    ckpt.save(path, config=config, epoch=len(history.epochs),
              net=net.state_dict(), optimizer=optimizer.state_dict(),
              history={k: v for k, v in asdict(history).items() if k != "figure"},
              plot=dict(X=animator.X, Y=animator.Y), rng=ckpt.rng_state(train_iter))


def _load_checkpoint(path, config: dict, num_epochs: int) -> dict | None:
    if not os.path.exists(path):
        return None
    saved = ckpt.load(path)
    differ = {k: (saved["config"].get(k), v) for k, v in config.items() if saved["config"].get(k) != v}
    if differ:
        raise ckpt.CheckpointError(
            f"checkpoint {path} was written by a run with other values: "
            + ", ".join(f"{k} {old} there, {new} now" for k, (old, new) in differ.items())
            + ". Use the same values to resume, or delete the file (or choose another) to start again.")
    if saved["epoch"] > num_epochs:
        raise ckpt.CheckpointError(
            f"checkpoint {path} has {saved['epoch']} epochs done, more than num_epochs={num_epochs}. "
            "Ask for at least as many epochs, or delete the file to start again.")
    return saved


def _resume(saved: dict, net, optimizer, history: History, step_timer: StepTimer, animator,
            train_iter) -> int:
    """Put the saved state back; returns the number of finished epochs."""
    try:
        net.load_state_dict(saved["net"])
    except RuntimeError as e:
        raise ckpt.CheckpointError(f"the checkpoint holds another net's weights ({e}). Delete the file "
                                   "(or choose another) to train this net from the start.") from None
    optimizer.load_state_dict(saved["optimizer"])
    for key, value in saved["history"].items():
        if key not in ("device", "precision", "memory_format"):
            setattr(history, key, value)
    step_timer.seconds = history.compute_seconds
    animator.X, animator.Y = saved["plot"]["X"], saved["plot"]["Y"]
    if animator.X:
        animator.add(saved["epoch"], (None,) * len(animator.X))  # redraw the points so far
    ckpt.set_rng_state(saved["rng"], train_iter)
    return saved["epoch"]


# The setting a notebook chose (an object with `.name` and `.precision`), set by the course's
# `choose_setting`: train_ch6 takes its precision from it and checks the length of a `full` run.
# None (a plain script): the book's fp32 and no check.
current_setting = None


def run_precision(precision: str | None, device) -> str:
    """'fp32' or 'bf16' for a run: as given ('auto' resolved for the device), else (None) the chosen
    setting's, else 'fp32' (the book's) when no setting was chosen."""
    if precision is None:
        return current_setting.precision if current_setting is not None else "fp32"
    return resolve_precision(precision, device)


def estimate_train_seconds(net: nn.Module, input_shape, device, *, num_train: int,
                           num_test: int, num_epochs: int, steps: int = 2,
                           precision: str | None = None) -> float:
    """Seconds a run of `num_epochs` over `num_train`/`num_test` examples would take here.

    Times `steps` real training steps (and as many evaluation batches) of a
    copy of `net` on a synthetic batch of `input_shape` (batch, C, H, W),
    after one warm-up step, in the run's precision (see `run_precision`: bf16 autocast and
    channels_last, or fp32); the net and the global RNG are left untouched.
    """
    device = torch.device(device)
    if device.type == "cpu":
        keep_freed_memory()  # time the steps as train_ch6 will run them
    batch = input_shape[0]
    bf16 = run_precision(precision, device) == "bf16"
    fmt = torch.channels_last if bf16 and len(input_shape) == 4 else torch.contiguous_format
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), \
            torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        model = copy.deepcopy(net).to(device, memory_format=fmt)
        X = torch.rand(*input_shape, device=device).contiguous(memory_format=fmt)
        y = torch.randint(0, 10, (batch,), device=device)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        loss = nn.CrossEntropyLoss()

        def train_step():
            optimizer.zero_grad()
            loss(model(X), y).backward()
            optimizer.step()

        def timed(fn) -> float:
            fn()  # warm-up
            timer = StepTimer(device)
            for _ in range(steps):
                timer.start()
                fn()
                timer.stop()
            return timer.total() / steps

        model.train()
        train_s = timed(train_step)
        model.eval()
        with torch.no_grad():
            eval_s = timed(lambda: model(X))
    return num_epochs * (num_train / batch * train_s + num_test / batch * eval_s)


# ------------------------------------------------ checks before a run: its length, its memory
def batch_shape(data_iter) -> tuple | None:
    """(batch, C, H, W) of a training batch, read without drawing one (the RNG is untouched)."""
    batch = getattr(data_iter, "batch_size", None)
    try:
        if hasattr(data_iter, "example_shape"):  # ours: FashionMNISTBatches
            return (batch, *data_iter.example_shape)
        dataset = getattr(data_iter, "dataset", None)  # a DataLoader
        if batch and dataset is not None and len(dataset):
            return (batch, *dataset[0][0].shape)
    except Exception:  # an unusual data set: no checks rather than a wrong one
        return None
    return None


def _num_examples(data_iter, batch: int) -> int:
    for n in (lambda: len(data_iter.dataset), lambda: len(data_iter.labels)):
        try:
            return n()
        except (AttributeError, TypeError):
            pass
    return len(data_iter) * batch


def _duration(seconds: float) -> str:
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} minutes"
    return f"{seconds / 3600:.1f} hours"


def long_run_allowed() -> bool:
    return os.environ.get(ALLOW_LONG_ENV, "").lower() in ("1", "true", "yes", "on")


def _check_long_run(net, shape, train_iter, test_iter, num_epochs: int, device,
                    precision: str = "fp32") -> None:
    """The `full` setting without a CUDA GPU: estimate first, stop if it is long and not asked for."""
    cfg = current_setting
    if cfg is None or cfg.name != "full" or device.type == "cuda" or num_epochs < 1:
        return
    if long_run_allowed():
        return
    probe = (min(shape[0], 16), *shape[1:])  # seconds, not minutes, on a CPU; time scales with batch
    seconds = estimate_train_seconds(net, probe, device, steps=1, num_epochs=num_epochs,
                                     precision=precision,
                                     num_train=_num_examples(train_iter, shape[0]),
                                     num_test=_num_examples(test_iter, shape[0]))
    if seconds <= LONG_MINUTES * 60:
        return
    raise LongRunError(
        f"the 'full' setting (the book's) would train for about {_duration(seconds)} on this "
        f"machine's {device} (estimated from timed training steps); nothing was trained. "
        "For a run in minutes, use the 'quick' setting: setting = \"quick\" in the parameters cell, "
        "or D2L_SETTING=quick. To run 'full' here anyway, set "
        f"{ALLOW_LONG_ENV}=1: run `%env {ALLOW_LONG_ENV}=1` in a cell and run this cell again, or "
        f"start with `{ALLOW_LONG_ENV}=1 .venv/bin/python tools/run_notebooks.py --setting full` "
        f"(or `{ALLOW_LONG_ENV}=1 make lab`).")


def step_bytes(net: nn.Module, example_shape, device) -> tuple[int, int]:
    """(bytes per example, fixed bytes) of a training step, estimated from one forward pass.

    Per example: every layer's output, kept for the backward pass, and its gradient (x2).
    Fixed: the parameters, their gradients and the optimizer's momentum (x3).
    """
    sizes = []

    def hook(module, inputs, output):
        if isinstance(output, torch.Tensor):
            sizes.append(output.numel() * output.element_size())

    leaves = [m for m in net.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    was_training = net.training
    try:
        net.eval()
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            net(torch.zeros(1, *example_shape, device=device))
    finally:
        net.train(was_training)
        for h in handles:
            h.remove()
    per_example = 2 * sum(sizes) + 4 * math.prod(example_shape)
    fixed = 3 * sum(p.numel() * p.element_size() for p in net.parameters())
    return per_example, fixed


def _largest_power_of_two(limit: float) -> int:
    return 2 ** int(math.log2(limit)) if limit >= 1 else 0


def _check_host_memory(net, shape, device) -> None:
    """On a CPU (or Apple's unified memory): refuse a batch that cannot fit in the free memory."""
    try:
        import psutil
    except ImportError:
        return
    per_example, fixed = step_bytes(net, shape[1:], device)
    available = psutil.virtual_memory().available
    need = fixed + per_example * shape[0]
    if need <= available:
        return
    fits = _largest_power_of_two((0.8 * available - fixed) / per_example)
    gib = 2**30
    advice = (f"try batch_size={fits} (or set batch_size in the parameters cell)" if fits else
              "even one example does not fit: close other programs or use a smaller net or resize")
    raise BatchTooLargeError(
        f"batch_size={shape[0]} of {tuple(shape[1:])} images needs about {need / gib:.1f} GiB for a "
        f"training step of this net (estimated), but only {available / gib:.1f} GiB of memory is free; "
        f"{advice}.")


def is_out_of_memory(e: BaseException) -> bool:
    text = str(e).lower()
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in text or \
        "can't allocate memory" in text


def _step_fits(model, loss, shape, device, amp_dtype) -> bool:
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            X = torch.rand(*shape, device=device)
            y = torch.zeros(shape[0], dtype=torch.long, device=device)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                l = loss(model(X), y)
            l.backward()
        return True
    except (torch.cuda.OutOfMemoryError, RuntimeError) as e:
        if not is_out_of_memory(e):
            raise
        return False
    finally:
        for p in model.parameters():
            p.grad = None
        if device.type == "cuda":
            torch.cuda.empty_cache()


def batch_too_large(message: str, model, loss, shape, device, amp_dtype) -> BatchTooLargeError:
    """The error for a step that ran out of memory, with a batch size that was tried and fits."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    fits = None
    if shape is not None:
        size = shape[0] // 2
        while size >= 1 and fits is None:
            if _step_fits(model, loss, (size, *shape[1:]), device, amp_dtype):
                fits = size
            size //= 2
    where = f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else str(device)
    advice = (f"batch_size={fits} fits (a training step was tried); set it in the parameters cell"
              if fits else "no smaller batch fits either: use a smaller net or smaller images")
    size_text = f"batch_size={shape[0]}" if shape is not None else "this batch size"
    return BatchTooLargeError(f"{size_text} does not fit in the memory of {where}: {message}. {advice}.")
