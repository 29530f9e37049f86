"""`make bench`: the d2l pipeline, d2l_local's default path and the compute ceiling, on one machine.

For each model (the book's AlexNet at 224x224, the 28x28 net of exercise 2) it times
  (a) the `d2l` package's own pipeline: `d2l.load_data_fashion_mnist` + `d2l.train_ch6`;
  (b) d2l_local's default path: `load_data_fashion_mnist_fast` + `d2l_local.train_ch6`;
  (c) the compute ceiling: the same model's training step on a synthetic batch already on the
      device (no data, no metrics, no evaluation);
and a large fp32 matrix multiply as the machine's reference rate. It prints examples/sec end to
end (loader construction, data, steps, metrics, evaluation, plotting) and compute-only (the
book's count: inside the training steps), the ratios b/a and b/c, and the FLOP/s achieved
(6 x multiply-adds per training example: forward 1x, backward 2x) against the matmul rate.
Results go to results/bench-<device>.json with the device and versions.

On a CPU it runs a few steps per epoch (about 5 minutes on 2 cores); on a GPU, full epochs
of the book's settings, plus the book's full 10-epoch AlexNet run through path (b) with
channels_last and bf16 autocast (the only numerics-changing option, said so in the output).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import itertools
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

import d2l_local
from d2l_local import models
from d2l_local.analysis import layer_table
from d2l_local.device import device_name, matmul_gflops, synchronize
from d2l_local.results import results_dir, versions

ROOT = Path(__file__).resolve().parent.parent


class FirstBatches:
    """The first `n` batches of a loader, a fresh iterator (and fresh workers) each epoch."""

    def __init__(self, loader, n: int | None) -> None:
        self.loader, self.n = loader, n

    def __len__(self) -> int:
        return len(self.loader) if self.n is None else min(self.n, len(self.loader))

    def __iter__(self):
        return itertools.islice(iter(self.loader), len(self))


@contextlib.contextmanager
def book_cwd():
    """d2l reads root='../data': run from a folder whose ../data is this repository's data/."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "data").symlink_to(d2l_local.data_dir())
        (Path(tmp) / "work").mkdir()
        old = os.getcwd()
        os.chdir(Path(tmp) / "work")
        try:
            yield
        finally:
            os.chdir(old)


def run_d2l(spec, cfg, device) -> dict:
    from d2l import torch as d2l

    start = time.perf_counter()
    with book_cwd():
        train_iter, test_iter = d2l.load_data_fashion_mnist(cfg["batch_size"], resize=spec["resize"])
    train_iter = FirstBatches(train_iter, cfg["train_batches"])
    test_iter = FirstBatches(test_iter, cfg["test_batches"])
    torch.manual_seed(0)
    net = spec["build"]()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):  # it prints `<Figure ...>` per point outside Jupyter
        d2l.train_ch6(net, train_iter, test_iter, cfg["num_epochs"], spec["lr"], device)
    wall = time.perf_counter() - start
    examples = len(train_iter) * cfg["batch_size"] * cfg["num_epochs"]
    compute = float(re.search(r"([\d.]+) examples/sec", out.getvalue()).group(1))
    acc = re.search(r"test acc ([\d.]+)", out.getvalue()).group(1)
    return dict(end_to_end=examples / wall, compute_only=compute, examples=examples,
                seconds=wall, test_acc=float(acc))


def run_local(spec, cfg, device, **options) -> dict:
    start = time.perf_counter()
    bs = cfg["batch_size"]
    train_n = None if cfg["train_batches"] is None else cfg["train_batches"] * bs
    test_n = None if cfg["test_batches"] is None else cfg["test_batches"] * bs
    train_iter, test_iter = d2l_local.load_data_fashion_mnist_fast(
        bs, resize=spec["resize"], device=device, train_subset=train_n, test_subset=test_n)
    torch.manual_seed(0)
    h = d2l_local.train_ch6(spec["build"](), train_iter, test_iter, cfg["num_epochs"], spec["lr"],
                            device, verbose=False, animate=False, progress=False, **options)
    wall = time.perf_counter() - start
    return dict(end_to_end=h.num_examples / wall, compute_only=h.examples_per_sec,
                training_loop=h.num_examples / (wall - h.eval_seconds),
                examples=h.num_examples, seconds=wall, eval_seconds=h.eval_seconds,
                test_acc=h.test_acc)


def run_ceiling(spec, cfg, device, steps: int) -> dict:
    torch.manual_seed(0)
    net = spec["build"]().to(device)
    size = spec["resize"] or 28
    X = torch.rand(cfg["batch_size"], 1, size, size, device=device)
    y = torch.randint(0, 10, (cfg["batch_size"],), device=device)
    optimizer = torch.optim.SGD(net.parameters(), lr=spec["lr"])
    loss = nn.CrossEntropyLoss()

    def step():
        optimizer.zero_grad()
        loss(net(X), y).backward()
        optimizer.step()

    step()  # warm-up: kernels chosen, memory allocated
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    seconds = time.perf_counter() - start
    return dict(compute_only=steps * cfg["batch_size"] / seconds, seconds=seconds)


SPECS = {
    "alexnet": dict(build=models.alexnet, resize=224, lr=0.01),
    "net_28x28": dict(build=models.net_28x28, resize=None, lr=0.01),
}


def plan(device: torch.device, quick: bool) -> dict:
    """Batches per epoch and epochs: a few steps on a CPU, the book's full epochs on a GPU."""
    if device.type == "cuda" and not quick:
        full = dict(batch_size=128, train_batches=None, test_batches=None, num_epochs=1)
        return {"alexnet": full, "net_28x28": full}
    return {"alexnet": dict(batch_size=128, train_batches=6, test_batches=1, num_epochs=2),
            "net_28x28": dict(batch_size=128, train_batches=40, test_batches=2, num_epochs=2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None, help="default: try_gpu()")
    ap.add_argument("--models", nargs="*", default=list(SPECS), choices=list(SPECS))
    ap.add_argument("--quick", action="store_true", help="CPU-sized runs even on a GPU")
    args = ap.parse_args()
    # a maintainer's tool: it refreshes the course's committed results/ unless told otherwise
    os.environ.setdefault("D2L_RESULTS_DIR", str(Path(__file__).resolve().parent.parent / "results"))
    device = torch.device(args.device) if args.device else d2l_local.try_gpu()
    gemm = matmul_gflops(device)
    print(f"device {device} ({device_name(device)}), {torch.get_num_threads()} CPU threads, "
          f"torch {torch.__version__}; fp32 matmul: {gemm:.1f} GFLOP/s")
    record = dict(device=str(device), device_name=device_name(device), versions=versions(),
                  cpu_threads=torch.get_num_threads(), cpu_count=os.cpu_count(),
                  date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  gemm_gflops=gemm, models={},
                  # on CUDA, cuDNN convolutions may use TF32 while the matmul rate above is strict fp32
                  cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
                  matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32)
    for name in args.models:
        spec, cfg = SPECS[name], plan(device, args.quick)[name]
        size = spec["resize"] or 28
        macs = sum(r["macs"] for r in layer_table(spec["build"](), (1, 1, size, size)))
        steps = 3 * (cfg["train_batches"] or 100)
        run_ceiling(spec, cfg, device, 2)  # warm-up shared by all three runs
        a = run_d2l(spec, cfg, device)
        b = run_local(spec, cfg, device)
        b_cl = run_local(spec, cfg, device, channels_last=True)  # an option, same numerics up to rounding
        c = run_ceiling(spec, cfg, device, steps)
        achieved = 6 * macs * b["compute_only"] / 1e9
        entry = dict(plan=cfg, macs_per_example=macs,
                     d2l_end_to_end_examples_per_s=a["end_to_end"],
                     d2l_compute_only_examples_per_s=a["compute_only"],
                     local_end_to_end_examples_per_s=b["end_to_end"],
                     local_compute_only_examples_per_s=b["compute_only"],
                     compute_ceiling_examples_per_s=c["compute_only"],
                     ratio_local_over_d2l=b["end_to_end"] / a["end_to_end"],
                     ratio_local_over_ceiling=b["end_to_end"] / c["compute_only"],
                     # data + steps + metrics, without the evaluation the ceiling does not do
                     local_training_loop_examples_per_s=b["training_loop"],
                     ratio_local_training_loop_over_ceiling=b["training_loop"] / c["compute_only"],
                     local_channels_last_end_to_end_examples_per_s=b_cl["end_to_end"],
                     ratio_local_channels_last_over_d2l=b_cl["end_to_end"] / a["end_to_end"],
                     gemm_gflops=gemm, achieved_gflops=achieved,
                     ceiling_gflops=6 * macs * c["compute_only"] / 1e9,
                     d2l=a, local=b, local_channels_last=b_cl, ceiling=c)
        if device.type == "cuda" and name == "alexnet" and not args.quick:
            # the book's full run (10 epochs, all data) through (b), with the fast options on
            book = dict(cfg, num_epochs=10)
            entry["local_full_10_epochs"] = run_local(spec, book, device, channels_last=True, bf16=True)
            entry["local_full_10_epochs"]["options"] = "channels_last=True, bf16=True"
        record["models"][name] = entry
        print(f"\n{name} ({cfg['batch_size']}/batch, {macs / 1e9:.3f} G multiply-adds/example)")
        print(f"  (a) d2l pipeline      {a['end_to_end']:9.1f} ex/s end to end, "
              f"{a['compute_only']:9.1f} compute-only")
        print(f"  (b) d2l_local         {b['end_to_end']:9.1f} ex/s end to end, "
              f"{b['compute_only']:9.1f} compute-only")
        print(f"      training loop     {b['training_loop']:9.1f} ex/s (b without its evaluation)")
        print(f"  (b') channels_last    {b_cl['end_to_end']:9.1f} ex/s end to end, "
              f"{b_cl['compute_only']:9.1f} compute-only")
        print(f"  (c) compute ceiling   {c['compute_only']:9.1f} ex/s")
        print(f"  b/a = {entry['ratio_local_over_d2l']:.2f}   b/c = {entry['ratio_local_over_ceiling']:.2f}"
              f"   (training loop)/c = {entry['ratio_local_training_loop_over_ceiling']:.2f}"
              f"   b'/a = {entry['ratio_local_channels_last_over_d2l']:.2f}")
        print(f"  achieved {achieved:.1f} GFLOP/s = {achieved / gemm:.2f} x the fp32 matmul rate")
        if "local_full_10_epochs" in entry:
            f = entry["local_full_10_epochs"]
            print(f"  full 10-epoch run through (b) with {f['options']}: {f['seconds']:.1f} s, "
                  f"test acc {f['test_acc']:.3f}")
    path = results_dir() / f"bench-{device_name(device)}.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"\nwrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
