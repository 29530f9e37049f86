"""`make bench`: what the hardware can do, and how close the course's default path comes to it.

For each model (the book's AlexNet at 224x224, the 28x28 net of exercise 2) it times
  (a) the `d2l` package's own pipeline: `d2l.load_data_fashion_mnist` + `d2l.train_ch6` (fp32);
  (b) d2l_local's default path: `load_data_fashion_mnist_fast` + `d2l_local.train_ch6` in the
      precision the settings choose here (bf16 autocast + channels_last where the processor or GPU
      computes bf16 natively, fp32 elsewhere), and (b32) the same path in fp32;
  (c) compute ceilings: the model's training step on a synthetic batch already on the device
      (no data, no metrics, no evaluation) in fp32, in bf16 (autocast + channels_last), and in bf16
      through `torch.compile` (its CPU backend generates C++; skipped with --no-compile); on a CPU
      also the default precision's step with each step's memory allocated afresh, as glibc does
      unless told otherwise (d2l_local.device.keep_freed_memory, which train_ch6 calls on a CPU);
and large matrix products in fp32 and bf16 as the machine's reference rates (measured at the start
and again before each model; the highest rate seen is the reference). It prints
examples/sec end to end (loader construction, data, steps, metrics, evaluation) and
compute-only (the book's count), the ratios b/a and b/(best ceiling), the share of the bf16
matrix rate the training step achieves (6 x multiply-adds per training example: forward 1x,
backward 2x), and, for AlexNet, the time of each layer's forward and backward in the default
precision with its rate against the matrix rate: which layers hold the step below it.

Results go to results/bench-<device>.json, one entry per processor (or GPU) it was run on.
On a CPU it runs a few steps per epoch (about 13 minutes on 2 cores); on a GPU, full epochs.
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
from course_tools import models
from course_tools.analysis import layer_table, macs
from course_tools.results import results_dir, versions
from d2l_local.device import (
    cpu_model,
    device_name,
    keep_freed_memory,
    matmul_gflops,
    native_bf16,
    resolve_precision,
    synchronize,
)

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


def _step_fn(spec, cfg, device, precision: str, compile: bool = False):
    """One training step on a synthetic batch on the device, in `precision`, maybe compiled."""
    torch.manual_seed(0)
    bf16 = precision == "bf16"
    fmt = torch.channels_last if bf16 else torch.contiguous_format
    net = spec["build"]().to(device, memory_format=fmt)
    model = torch.compile(net) if compile else net
    size = spec["resize"] or 28
    X = torch.rand(cfg["batch_size"], 1, size, size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (cfg["batch_size"],), device=device)
    optimizer = torch.optim.SGD(net.parameters(), lr=spec["lr"])
    loss = nn.CrossEntropyLoss()

    def step():
        optimizer.zero_grad()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            l = loss(model(X), y)
        l.backward()
        optimizer.step()

    return step


def run_ceiling(spec, cfg, device, steps: int, precision: str = "fp32", compile: bool = False) -> dict:
    start = time.perf_counter()
    step = _step_fn(spec, cfg, device, precision, compile)
    step()  # warm-up: kernels chosen (compiled), memory allocated
    step()
    synchronize(device)
    warm_up = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    seconds = time.perf_counter() - start
    return dict(compute_only=steps * cfg["batch_size"] / seconds, seconds=seconds,
                warm_up_seconds=warm_up, precision=precision, compiled=compile)


def layer_times(spec, device, batch: int, precision: str, repeats: int = 3) -> list[dict]:
    """Each layer's forward + backward on its real input (a batch of `batch`), timed alone."""
    torch.manual_seed(0)
    bf16 = precision == "bf16"
    fmt = torch.channels_last if bf16 else torch.contiguous_format
    net = spec["build"]().to(device, memory_format=fmt).train()
    size = spec["resize"] or 28
    h = torch.rand(batch, 1, size, size, device=device).contiguous(memory_format=fmt)
    rows = []
    for i, layer in enumerate(net):
        x = h.detach().requires_grad_(i > 0)  # conv1 needs no gradient of its input
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = layer(x)
        grad = torch.ones_like(out)

        def fwd_bwd(layer=layer, x=x, grad=grad):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                o = layer(x)
            o.backward(grad)

        fwd_bwd()
        synchronize(device)
        start = time.perf_counter()
        for _ in range(repeats):
            fwd_bwd()
        synchronize(device)
        seconds = (time.perf_counter() - start) / repeats
        layer_macs = macs(layer, out.detach().float()) * batch
        rows.append(dict(index=i, layer=type(layer).__name__, ms=1e3 * seconds,
                         gflops=6 * layer_macs / seconds / 1e9 if layer_macs else None))
        h = out.detach()
    return rows


def op_times(spec, cfg, device, precision: str, steps: int = 3, top: int = 14) -> list[dict]:
    """PyTorch's profiler on `steps` synthetic training steps: the operators that take the most
    time (ms per step, grouped by operator and input shapes), with their share of the step."""
    from torch.profiler import ProfilerActivity, profile

    step = _step_fn(spec, cfg, device, precision)
    step()
    step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, record_shapes=True) as prof:
        for _ in range(steps):
            step()
        synchronize(device)
    events = prof.key_averages(group_by_input_shape=True)
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    total = sum(getattr(e, attr) for e in events)
    rows = sorted(events, key=lambda e: -getattr(e, attr))[:top]
    return [dict(op=e.key, shapes=str(e.input_shapes), ms_per_step=getattr(e, attr) / 1e3 / steps,
                 share=getattr(e, attr) / total) for e in rows]


SPECS = {
    "alexnet": dict(build=models.alexnet, resize=224, lr=0.01),
    "net_28x28": dict(build=models.net_28x28, resize=None, lr=0.01),
}


def plan(device: torch.device, quick: bool) -> dict:
    """Batches per epoch and epochs: a few steps on a CPU, the book's full epochs on a GPU."""
    if device.type == "cuda" and not quick:
        full = dict(batch_size=128, train_batches=None, test_batches=None, num_epochs=1)
        return {"alexnet": full, "net_28x28": full}
    return {"alexnet": dict(batch_size=128, train_batches=12, test_batches=1, num_epochs=2),
            "net_28x28": dict(batch_size=128, train_batches=40, test_batches=2, num_epochs=2)}


def processor() -> str:
    """The processor's name and its bf16 support, the key of its entry in results/bench-cpu.json."""
    amx, avx = torch.cpu._is_amx_tile_supported(), torch.cpu._is_avx512_bf16_supported()
    flags = "AMX + AVX-512 BF16" if amx and avx else "AMX" if amx else "AVX-512 BF16" if avx else \
        "no native bf16"
    return f"{cpu_model()} ({os.cpu_count()} cores, {flags})"


def ceiling_steps(cfg) -> int:
    return 3 * (cfg["train_batches"] or 100)


def bench_model(name, spec, cfg, device, precision, gemm, gemm_bf16, compile: bool, a: dict,
                allocator_default: dict | None) -> dict:
    """(b), (b32) and the ceilings of one model; `a` is its d2l run, `allocator_default` its
    ceiling in `precision` measured before this process kept its freed memory (CPU only)."""
    # the machine's matrix rates drift by several per cent between minutes (a shared virtual machine,
    # clock speeds): measured again here, the highest rate seen is the reference, so a share is never
    # flattered by a slow moment of the matrix product
    gemm = max(gemm, matmul_gflops(device, repeats=10))
    if gemm_bf16:
        gemm_bf16 = max(gemm_bf16, matmul_gflops(device, dtype=torch.bfloat16, repeats=10))
    size = spec["resize"] or 28
    macs_per_example = sum(r["macs"] for r in layer_table(spec["build"](), (1, 1, size, size)))
    steps = ceiling_steps(cfg)
    flops = 6 * macs_per_example
    run_ceiling(spec, cfg, device, 1)  # warm-up shared by the runs
    b = run_local(spec, cfg, device, precision=precision)
    b32 = run_local(spec, cfg, device, precision="fp32") if precision != "fp32" else b
    ceilings = {"fp32": run_ceiling(spec, cfg, device, steps, "fp32")}
    if precision == "bf16" or native_bf16(device):
        ceilings["bf16"] = run_ceiling(spec, cfg, device, steps, "bf16")
        if compile:
            try:
                ceilings["bf16 compiled"] = run_ceiling(spec, cfg, device, steps, "bf16", compile=True)
            except Exception as e:  # no compiler, an unsupported op: say so, keep the rest
                print(f"  torch.compile failed here ({type(e).__name__}: {str(e)[:200]}); skipped")
    best_name = max(ceilings, key=lambda k: ceilings[k]["compute_only"])
    best = ceilings[best_name]["compute_only"]
    entry = dict(plan=cfg, macs_per_example=macs_per_example, default_precision=precision,
                 gemm_gflops=gemm, gemm_bf16_gflops=gemm_bf16,
                 d2l=a, local=b, local_fp32=b32, ceilings=ceilings, best_ceiling=best_name,
                 ceiling_allocator_default=allocator_default,
                 ratio_local_over_d2l=b["end_to_end"] / a["end_to_end"],
                 ratio_local_over_best_ceiling=b["end_to_end"] / best,
                 ratio_local_training_loop_over_best_ceiling=b["training_loop"] / best,
                 ratio_local_fp32_over_d2l=b32["end_to_end"] / a["end_to_end"],
                 achieved_gflops=flops * b["compute_only"] / 1e9,
                 share_of_fp32_matmul=flops * b["compute_only"] / 1e9 / gemm,
                 share_of_bf16_matmul=(flops * b["compute_only"] / 1e9 / gemm_bf16) if gemm_bf16 else None,
                 ceiling_share_of_matmul={k: flops * c["compute_only"] / 1e9 / (gemm_bf16 if "bf16" in k
                                                                              else gemm)
                                          for k, c in ceilings.items()})
    print(f"\n{name} ({cfg['batch_size']}/batch, {macs_per_example / 1e9:.3f} G multiply-adds/example); "
          f"default precision here: {precision}; the highest matmul rates so far: fp32 {gemm:.1f}"
          + (f", bf16 {gemm_bf16:.1f} GFLOP/s" if gemm_bf16 else " GFLOP/s"))
    print(f"  (a)   d2l pipeline, fp32       {a['end_to_end']:8.1f} ex/s end to end, "
          f"{a['compute_only']:8.1f} compute-only")
    print(f"  (b)   d2l_local, {precision:<4}          {b['end_to_end']:8.1f} ex/s end to end, "
          f"{b['compute_only']:8.1f} compute-only, {b['training_loop']:8.1f} without its evaluation")
    if b32 is not b:
        print(f"  (b32) d2l_local, fp32          {b32['end_to_end']:8.1f} ex/s end to end, "
              f"{b32['compute_only']:8.1f} compute-only")
    for k, c in ceilings.items():
        rate = gemm_bf16 if "bf16" in k else gemm
        gflops = flops * c["compute_only"] / 1e9
        print(f"  (c)   ceiling, {k:<15} {c['compute_only']:8.1f} ex/s = {gflops:7.1f} GFLOP/s, "
              f"{gflops / rate:.2f} of the {'bf16' if 'bf16' in k else 'fp32'} matmul rate "
              f"(warm-up {c['warm_up_seconds']:.0f} s)")
    if allocator_default:
        kept = ceilings[precision]["compute_only"]
        print(f"  (c)   ceiling, {precision}, but each step's memory allocated afresh (glibc's default): "
              f"{allocator_default['compute_only']:.1f} ex/s; kept for reuse (above): "
              f"{kept / allocator_default['compute_only']:.2f}x")
    print(f"  b/a = {entry['ratio_local_over_d2l']:.2f}   b/(best ceiling: {best_name}) = "
          f"{entry['ratio_local_over_best_ceiling']:.2f}   (b without evaluation)/(best ceiling) = "
          f"{entry['ratio_local_training_loop_over_best_ceiling']:.2f}")
    share = entry["share_of_bf16_matmul"]
    print(f"  the default path's training step: {entry['achieved_gflops']:.1f} GFLOP/s = "
          f"{entry['share_of_fp32_matmul']:.2f} of the fp32 matmul rate"
          + (f", {share:.2f} of the bf16 matmul rate" if share else ""))
    if name == "alexnet":
        rows = layer_times(spec, device, cfg["batch_size"], precision)
        total = sum(r["ms"] for r in rows)
        rate = gemm_bf16 if precision == "bf16" else gemm
        print(f"  per layer, forward + backward alone, batch {cfg['batch_size']}, {precision} "
              f"(sum {total:.0f} ms):")
        for r in rows:
            if r["ms"] >= 0.01 * total:
                speed = f"{r['gflops']:7.1f} GFLOP/s = {r['gflops'] / rate:.2f} of matmul" \
                    if r["gflops"] else ""
                print(f"    {r['index']:2d} {r['layer']:<10} {r['ms']:8.1f} ms  {r['ms'] / total:5.1%}  "
                      f"{speed}")
        entry["layers"] = rows
        ops = op_times(spec, cfg, device, precision)
        print(f"  the operators that take the most time in a {precision} step (PyTorch's profiler, "
              "ms per step, share of the step):")
        for r in ops:
            print(f"    {r['op']:<40} {r['ms_per_step']:7.1f} ms  {r['share']:5.1%}  {r['shapes'][:70]}")
        entry["operators"] = ops
    return entry


def read_entries(path: Path) -> dict:
    """The file's entries by processor; a file of the older one-entry format becomes one entry."""
    if not path.exists():
        return {}
    old = json.loads(path.read_text())
    if "processors" in old:
        return old["processors"]
    return {old.get("processor", f"a processor not recorded by name (measured {old['date'][:10]})"): old}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None, help="default: try_gpu()")
    ap.add_argument("--models", nargs="*", default=list(SPECS), choices=list(SPECS))
    ap.add_argument("--quick", action="store_true", help="CPU-sized runs even on a GPU")
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                    help="the default path's precision (auto: what the settings choose here)")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile ceiling")
    args = ap.parse_args()
    # a maintainer's tool: it refreshes the course's committed results/ unless told otherwise
    os.environ.setdefault("D2L_RESULTS_DIR", str(Path(__file__).resolve().parent.parent / "results"))
    device = torch.device(args.device) if args.device else d2l_local.try_gpu()
    precision = resolve_precision(args.precision, device)
    gemm = matmul_gflops(device, repeats=10)
    gemm_bf16 = (matmul_gflops(device, dtype=torch.bfloat16, repeats=10) if device.type in ("cpu", "cuda")
                 else None)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else processor()
    print(f"device {device}: {where}; {torch.get_num_threads()} CPU threads, torch {torch.__version__}")
    print(f"matmul: fp32 {gemm:.1f} GFLOP/s" + (f", bf16 {gemm_bf16:.1f} GFLOP/s "
                                                  f"({gemm_bf16 / gemm:.1f}x)" if gemm_bf16 else ""))
    record = dict(device=str(device), device_name=device_name(device), processor=where,
                  native_bf16=native_bf16(device), versions=versions(),
                  cpu_threads=torch.get_num_threads(), cpu_count=os.cpu_count(),
                  date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  gemm_gflops=gemm, gemm_bf16_gflops=gemm_bf16, models={},
                  # on CUDA, cuDNN convolutions may use TF32 while the matmul rate above is strict fp32
                  cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
                  matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32)
    plans = plan(device, args.quick)
    # first what runs as the d2l package runs it, before train_ch6 makes this process keep the memory
    # it frees (d2l_local.device.keep_freed_memory), which cannot be undone: d2l's pipeline, and the
    # ceiling of the default precision with each step's memory allocated afresh
    book, allocator_default = {}, {}
    for name in args.models:
        run_ceiling(SPECS[name], plans[name], device, 1)  # warm-up
        book[name] = run_d2l(SPECS[name], plans[name], device)
        if device.type == "cpu":
            allocator_default[name] = run_ceiling(SPECS[name], plans[name], device,
                                                  ceiling_steps(plans[name]), precision)
    record["freed_memory_kept"] = device.type == "cpu" and keep_freed_memory()
    for name in args.models:
        record["models"][name] = bench_model(name, SPECS[name], plans[name], device, precision, gemm,
                                             gemm_bf16, not args.no_compile, book[name],
                                             allocator_default.get(name))
    path = results_dir() / f"bench-{device_name(device)}.json"
    entries = read_entries(path)
    entries[where] = record  # one entry per processor (or GPU): a run on another one is kept
    path.write_text(json.dumps({"processors": entries}, indent=1) + "\n")
    print(f"\nwrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} "
          f"(entries: {', '.join(entries)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
