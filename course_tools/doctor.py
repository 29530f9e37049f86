"""`make doctor` (= `python -m course_tools.doctor`): is this machine ready for the course?

Prints one line per check, `OK` or `FIX` with what to run, short enough to
paste into a question: Python and the environment, the packages against
requirements.txt, PyTorch and the device it trains on with its memory, the
data set, and whether JupyterLab's kernel is the project's Python.
`--json` prints the same as a list of objects. The exit status is 1 when a
line says FIX.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
GIB = 2**30


@dataclass
class Check:
    check: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{'OK ' if self.ok else 'FIX'}  {self.check:<15} {self.detail}"
        return text + (f"\n     {'':<15} -> {self.fix}" if self.fix else "")


def check_python() -> Check:
    version = platform.python_version()
    in_venv = Path(sys.prefix).resolve() == VENV.resolve()
    where = f"{sys.executable}" + (" (the project's .venv)" if in_venv else "")
    if sys.version_info < (3, 10):  # noqa: UP036 (someone's older Python can run this far)
        return Check("python", False, f"{version} at {where}: the course needs 3.10 or newer",
                     "install Python 3.11 and run `make setup`")
    if not in_venv:
        return Check("python", False, f"{version} at {where}, not the project's environment",
                     f"run `make setup`, then use {VENV}/bin/python (or `make doctor`)")
    return Check("python", True, f"{version} at {where}")


def check_packages(requirements: Path = ROOT / "requirements.txt") -> Check:
    from packaging.requirements import Requirement

    if not requirements.is_file():
        return Check("packages", False, f"{requirements} not found", "run this from the course's repository")
    problems, count = [], 0
    for line in requirements.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        count += 1
        try:
            have = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            problems.append(f"{req.name} missing")
            continue
        if req.specifier and not req.specifier.contains(have, prereleases=True):
            problems.append(f"{req.name} {have} (needs {req.specifier})")
    if problems:
        return Check("packages", False, "; ".join(problems), "run `make setup`")
    return Check("packages", True, f"all {count} of requirements.txt installed in range")


def check_versions() -> Check:
    names = ["torch", "torchvision", "numpy", "matplotlib", "jupyterlab", "ipykernel", "papermill", "d2l"]
    found = []
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} -")
    return Check("versions", True, ", ".join(found))


def check_torch() -> Check:
    try:
        import torch
    except ImportError as e:
        return Check("torch", False, f"cannot import torch ({e})", "run `make setup`")
    build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU-only build"
    return Check("torch", True, f"{torch.__version__} ({build}, {torch.get_num_threads()} threads)")


def check_device() -> tuple[Check, Check]:
    import torch

    from d2l_local.device import try_gpu

    device = try_gpu()
    ram = _ram()
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        name = torch.cuda.get_device_name(device)
        dev = Check("device", True, f"{device} = {name}; the notebooks default to the 'full' setting")
        mem = Check("memory", free > 2 * GIB, f"GPU {free / GIB:.1f} of {total / GIB:.1f} GiB free; {ram}",
                    "" if free > 2 * GIB else "free the GPU (see nvidia-smi) or lower batch_size")
        return dev, mem
    if device.type == "mps":
        dev = Check("device", True, "mps = Apple silicon GPU; the notebooks default to 'quick' "
                    "('full' asks first: D2L_ALLOW_LONG=1)")
    else:
        dev = Check("device", True, f"cpu ({os.cpu_count()} cores), no CUDA GPU found by PyTorch; the "
                    "notebooks default to 'quick' ('full' would take hours: it asks first)")
    available = _available()
    ok = available is None or available > 2 * GIB
    return dev, Check("memory", ok, ram, "" if ok else "close other programs: AlexNet's quick run "
                      "needs about 2 GiB free at batch 128")


def check_precision() -> Check:
    """Which precision the settings choose here: bf16 where the processor computes it natively."""
    import torch

    from d2l_local.device import native_bf16, try_gpu

    device = try_gpu()
    if device.type == "cuda":
        native = native_bf16(device)
        what = "bf16 on the GPU's tensor cores" if native else "no bf16 on this GPU"
    elif device.type == "cpu":
        amx, avx = torch.cpu._is_amx_tile_supported(), torch.cpu._is_avx512_bf16_supported()
        native = amx or avx
        what = ("native bf16: " + " and ".join(n for n, has in (("Intel AMX", amx), ("AVX-512 BF16", avx))
                                                if has)) if native else \
            "no native bf16 (no AMX, no AVX-512 BF16): bf16 would be emulated, slower than fp32"
    else:
        native, what = False, f"{device}: the course trains in fp32 there"
    chosen = "bf16 autocast + channels_last" if native else "fp32"
    return Check("precision", True, f"{what}; the settings choose {chosen} (precision='fp32' gives "
                 "the book's numerics)")


def _available() -> int | None:
    try:
        import psutil
    except ImportError:
        return None
    return psutil.virtual_memory().available


def _ram() -> str:
    try:
        import psutil
    except ImportError:
        return "RAM unknown (psutil missing: `make setup`)"
    vm = psutil.virtual_memory()
    return f"RAM {vm.available / GIB:.1f} of {vm.total / GIB:.1f} GiB free"


def check_data() -> Check:
    from d2l_local.data import DataError, fashion_mnist_tensors, raw_dir

    try:
        t = fashion_mnist_tensors()
    except DataError as e:
        text = str(e)
        detail, _, fix = text.partition(" Run ")
        return Check("data", False, detail.strip(), ("run " + fix) if fix else text)
    return Check("data", True, f"Fashion-MNIST in {raw_dir()}: {len(t['train-labels-idx1-ubyte'])} train / "
                 f"{len(t['t10k-labels-idx1-ubyte'])} test images, checked")


def check_kernel() -> Check:
    """The `python3` kernel JupyterLab starts from this environment: is it this Python, with the course?"""
    try:
        from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    except ImportError:
        return Check("jupyter kernel", False, "JupyterLab is not installed here", "run `make setup`")
    try:
        spec = KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        return Check("jupyter kernel", False, "no python3 kernel", "run `make setup`")
    exe = spec.argv[0]
    if exe in ("python", "python3", "{python}"):
        exe = sys.executable  # the native kernel: the Python JupyterLab runs on
    try:
        out = subprocess.run([exe, "-c", "import sys, d2l_local, torch; print(sys.prefix)"],
                             capture_output=True, text=True, timeout=120)
    except OSError as e:
        return Check("jupyter kernel", False, f"python3 kernel runs {exe}, which fails ({e})",
                     f"remove the stale kernel in {spec.resource_dir}")
    if out.returncode != 0:
        return Check("jupyter kernel", False, f"python3 kernel runs {exe}, which cannot import the course",
                     f"remove the kernel in {spec.resource_dir}, or `make setup` and start with `make lab`")
    prefix = Path(out.stdout.strip()).resolve()
    if prefix != VENV.resolve():
        return Check("jupyter kernel", False, f"python3 kernel runs {exe}, not the project's .venv",
                     "start JupyterLab with `make lab` (not a system `jupyter lab`)")
    return Check("jupyter kernel", True, f"python3 = {exe} (the project's .venv); `make lab` uses it")


def check_lab_settings() -> Check:
    """The course's JupyterLab settings (no news pop-up), which `make setup` installs."""
    wanted = ROOT / "jupyter" / "overrides.json"
    installed = Path(sys.prefix) / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    if not wanted.is_file():
        return Check("lab settings", True, "no course settings to install")
    if not installed.is_file() or json.loads(installed.read_text()) != json.loads(wanted.read_text()):
        return Check("lab settings", False, f"{installed} is not the course's {wanted.name}",
                     "run `make setup`")
    return Check("lab settings", True, "installed: JupyterLab opens without the news pop-up")


def run_checks() -> list[Check]:
    checks = [check_python(), check_packages(), check_versions(), check_torch()]
    if checks[-1].ok:
        checks += [*check_device(), check_precision()]
    checks += [check_data(), check_kernel(), check_lab_settings()]
    return checks


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    checks = run_checks()
    if "--json" in argv:
        print(json.dumps([asdict(c) for c in checks], indent=1))
    else:
        print(f"d2l AlexNet course, {platform.platform()}")
        for c in checks:
            print(c.line())
        bad = [c.check for c in checks if not c.ok]
        print("all OK" if not bad else f"{len(bad)} to fix: {', '.join(bad)} (see the lines marked FIX)")
    return 0 if all(c.ok for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
