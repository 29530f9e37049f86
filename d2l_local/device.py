"""Devices, as in the book (`d2l.cpu`, `gpu`, `num_gpus`, `try_gpu`, `try_all_gpus`).

Defined in the book's section on GPUs (D2L 6.7 zh / 6.7 en). The device is
always an argument elsewhere in this package; nothing here calls `.cuda()`.

One addition to the book: without a CUDA GPU, `try_gpu()` and `try_all_gpus()`
give Apple silicon's GPU (`mps`) when PyTorch has it, where the book's fall
back to the CPU. With a CUDA GPU, or with neither, they behave as the book's.
"""

from __future__ import annotations

import time

import torch


def cpu() -> torch.device:
    """The CPU device."""
    return torch.device("cpu")


def gpu(i: int = 0) -> torch.device:
    """The i-th GPU; raises a clear error when there is none (the book's returns it anyway)."""
    if i >= num_gpus():
        raise RuntimeError(
            f"gpu({i}) asked for, but this machine has {num_gpus()} CUDA GPU(s); "
            "use try_gpu() to fall back to Apple's GPU (mps) or the CPU"
        )
    return torch.device(f"cuda:{i}")


def num_gpus() -> int:
    """The number of CUDA GPUs."""
    return torch.cuda.device_count()


def has_mps() -> bool:
    """True on Apple silicon with PyTorch's Metal backend (macOS 12.3+)."""
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def try_gpu(i: int = 0) -> torch.device:
    """The i-th CUDA GPU if it exists, else Apple's GPU (`mps`, for i=0), else the CPU."""
    if num_gpus() >= i + 1:
        return torch.device(f"cuda:{i}")
    if i == 0 and num_gpus() == 0 and has_mps():
        return torch.device("mps")
    return cpu()


def try_all_gpus() -> list[torch.device]:
    """All CUDA GPUs, else [mps] on Apple silicon, else [cpu()]."""
    cuda = [torch.device(f"cuda:{i}") for i in range(num_gpus())]
    return cuda or ([torch.device("mps")] if has_mps() else [cpu()])


def device_name(device: torch.device | str) -> str:
    """A short name for results files: 'cpu' or the GPU's model, e.g. 'NVIDIA-H100-80GB-HBM3'."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device).replace(" ", "-")
    return device.type


def synchronize(device: torch.device | str) -> None:
    """Wait for the device's queued work (a CPU-GPU sync point); a no-op on the CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def matmul_gflops(device: torch.device | str, n: int | None = None, repeats: int = 3,
                  dtype: torch.dtype = torch.float32) -> float:
    """Measured rate of an n x n matrix product (2 n^3 FLOP), the machine's reference speed;
    fp32 by default, `dtype=torch.bfloat16` for the bf16 rate. The best of `repeats` products,
    each written into the same output (allocating a new one would time the allocator too)."""
    device = torch.device(device)
    n = n or (8192 if device.type == "cuda" else 4096)  # large enough to keep the device busy
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    out = torch.matmul(a, b)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        torch.matmul(a, b, out=out)
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def cpu_model() -> str:
    """The processor's name (/proc/cpuinfo on Linux; platform.processor() elsewhere)."""
    import platform
    from pathlib import Path

    info = Path("/proc/cpuinfo")
    if info.exists():
        for line in info.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


# ------------------------------------------------ the precision the hardware computes natively
PRECISIONS = ("auto", "fp32", "bf16")


def native_bf16(device: torch.device | str) -> bool:
    """True where bf16 is the hardware's fast path, as PyTorch reports it (nothing is guessed).

    A CPU: Intel AMX tiles or AVX-512 BF16 instructions (without them PyTorch emulates bf16,
    slower than fp32). A CUDA GPU: `torch.cuda.is_bf16_supported()` (Ampere and newer).
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        cpu_caps = getattr(torch, "cpu", None)
        return bool(getattr(cpu_caps, "_is_amx_tile_supported", lambda: False)()
                    or getattr(cpu_caps, "_is_avx512_bf16_supported", lambda: False)())
    return False  # mps: bf16 autocast is not a fast path there


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """'auto' -> 'bf16' where the device computes bf16 natively, else 'fp32'; 'fp32'/'bf16' as given."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: choose one of {', '.join(PRECISIONS)} "
                         "('fp32' gives the book's numerics anywhere)")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def precision_text(precision: str, channels_last: bool) -> str:
    """The line a run prints and records, e.g. 'bf16 autocast, channels_last'."""
    kind = "bf16 autocast" if precision == "bf16" else "fp32"
    return f"{kind}, {'channels_last' if channels_last else 'NCHW'}"


# ------------------------------------------------ memory that training steps allocate again and again
_KEEP_FREED_MEMORY: bool | None = None  # None: not tried yet in this process


def keep_freed_memory() -> bool:
    """Let this process reuse the memory it frees instead of returning it to the system.

    A training step on a CPU allocates its large activations afresh (the book's AlexNet at batch
    128: 72 MB for conv1's output alone). glibc's malloc serves every block above 32 MB with a new
    `mmap` and unmaps it on `free`, so each step faults in hundreds of MB of new zeroed pages, a
    large part of a bf16 step (`make bench` prints the step with and without). Two `mallopt`
    settings of glibc (no mmap for large blocks; keep freed memory at the top of the heap) let the
    next step reuse the same pages, as jemalloc or tcmalloc would, which PyTorch's CPU tuning
    guide recommends. The price: memory a step freed stays with the process (up to 2 GiB above
    what it holds) until the kernel ends, instead of going back to the system.
    Only where the C library is glibc (Linux); elsewhere nothing changes. Returns True if set.
    """
    global _KEEP_FREED_MEMORY
    if _KEEP_FREED_MEMORY is None:
        _KEEP_FREED_MEMORY = False
        import ctypes
        import platform

        if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
            libc = ctypes.CDLL("libc.so.6")
            M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # from glibc's malloc.h
            # mallopt takes a C int: 2**31 - 1 bytes (2 GiB) is the largest "keep" it accepts
            _KEEP_FREED_MEMORY = (libc.mallopt(M_MMAP_MAX, 0) == 1
                                  and libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1)
    return _KEEP_FREED_MEMORY
