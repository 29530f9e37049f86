"""Device choice on students' machines (CUDA, Apple's mps, CPU) by faking the backends; the doctor."""

import json
import re
import subprocess
import sys

import pytest
import torch

import d2l_local
from course_tools import settings
from d2l_local import training


def _fake(monkeypatch, cuda: int, mps: bool):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda > 0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)


@pytest.mark.parametrize("cuda,mps,first,every", [
    (0, False, "cpu", ["cpu"]),                    # the book's fallback
    (0, True, "mps", ["mps"]),                     # Apple silicon: its GPU, not the CPU
    (2, False, "cuda:0", ["cuda:0", "cuda:1"]),    # the book's behaviour, unchanged
    (1, True, "cuda:0", ["cuda:0"]),               # CUDA first, even where mps exists
])
def test_try_gpu_and_try_all_gpus(monkeypatch, cuda, mps, first, every):
    _fake(monkeypatch, cuda, mps)
    assert d2l_local.try_gpu() == torch.device(first)
    assert d2l_local.try_all_gpus() == [torch.device(d) for d in every]


def test_only_one_mps_device(monkeypatch):
    _fake(monkeypatch, 0, True)
    assert d2l_local.try_gpu(1) == torch.device("cpu")  # the book: a missing i-th GPU -> the CPU
    with pytest.raises(RuntimeError, match="mps"):
        d2l_local.gpu(0)


def test_the_book_matches_without_mps(monkeypatch, d2l):
    _fake(monkeypatch, 0, False)
    assert d2l_local.try_gpu() == d2l.try_gpu()
    assert d2l.try_all_gpus() == []  # d2l 1.0.3's; ours gives [cpu()] so callers always get a device
    assert d2l_local.try_all_gpus() == [torch.device("cpu")]


def test_mps_defaults_to_quick_and_sums_in_float32(monkeypatch):
    _fake(monkeypatch, 0, True)
    monkeypatch.delenv("D2L_SETTING", raising=False)
    assert settings.setting_name() == ("quick", "default on mps")
    assert training.accumulator_dtype(torch.device("mps")) == torch.float32  # mps has no float64
    assert training.accumulator_dtype(torch.device("cpu")) == torch.float64  # the book's


def test_no_other_float64_on_the_training_path():
    """mps has no float64: the loop's one float64 (the book's loss sums) goes through accumulator_dtype."""
    import inspect

    from d2l_local import data, metrics

    for module in (training, metrics, data):
        source = inspect.getsource(module)
        uses = source.count("float64") + source.count(".double(")
        expected = 1 if module is training else 0  # `torch.float64` in accumulator_dtype
        assert uses == expected, module.__name__


def test_doctor_prints_a_line_per_check(capsys):
    from course_tools import doctor

    code = doctor.main(["--json"])
    checks = json.loads(capsys.readouterr().out)
    names = [c["check"] for c in checks]
    for name in ("python", "packages", "torch", "device", "memory", "precision", "data",
                 "jupyter kernel", "lab settings"):
        assert name in names, names
    assert all(c["ok"] or c["fix"] for c in checks)  # every failed line says what to run
    assert code == (0 if all(c["ok"] for c in checks) else 1)


def test_doctor_runs_as_a_module():
    out = subprocess.run([sys.executable, "-m", "course_tools.doctor"], capture_output=True, text=True,
                         timeout=300)
    assert re.search(r"^(OK |FIX)  data ", out.stdout, re.M), out.stdout
    assert out.stdout.rstrip().endswith("all OK") == (out.returncode == 0)


def test_doctor_says_what_to_run_when_the_data_is_missing(tmp_path, monkeypatch):
    from course_tools import doctor

    monkeypatch.setenv("D2L_DATA_DIR", str(tmp_path))
    data = doctor.check_data()
    assert not data.ok and "python -m d2l_local.data" in data.fix and "missing" in data.detail


def test_doctor_spots_a_foreign_jupyter_kernel(tmp_path, monkeypatch):
    """A `python3` kernel of another Python (an old install) shadows the project's: the doctor says so."""
    from course_tools import doctor

    spec = tmp_path / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": ["/usr/bin/python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (system)", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    kernel = doctor.check_kernel()
    assert not kernel.ok and "/usr/bin/python3" in kernel.detail and kernel.fix


def test_doctor_spots_missing_packages(tmp_path):
    from course_tools import doctor

    req = tmp_path / "requirements.txt"
    req.write_text("torch>=2.4  # fine\nno-such-package-d2l>=1\nnumpy<1.0\n")
    check = doctor.check_packages(req)
    assert not check.ok and check.fix == "run `make setup`"
    assert "no-such-package-d2l missing" in check.detail and "numpy" in check.detail


def test_doctor_says_which_precision_the_processor_gets(monkeypatch):
    import torch

    from course_tools import doctor

    monkeypatch.setattr("d2l_local.device.try_gpu", lambda: torch.device("cpu"))
    for amx, avx, says in [(True, False, "native bf16: Intel AMX;"),
                           (False, True, "native bf16: AVX-512 BF16;"),
                           (False, False, "no native bf16")]:
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda amx=amx: amx)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda avx=avx: avx)
        check = doctor.check_precision()
        assert check.ok and says in check.detail, check.detail
        assert ("bf16 autocast" in check.detail) == (amx or avx)


_PAGE_FAULTS_CHILD = r"""
import resource, sys, torch
from d2l_local.device import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory() and keep_freed_memory()  # set once, the same answer after
def faults_of_a_fresh_block():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(16 * 2**20)  # 64 MB, freed at once: the size of a large activation
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults_of_a_fresh_block()  # the first one: the heap grows either way
print(min(faults_of_a_fresh_block() for _ in range(3)))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc: Linux only")
def test_kept_memory_is_reused_without_new_page_faults():
    """64 MB allocated again: about 16,000 new pages (4 KiB) by default, almost none once kept."""
    def faults(mode):
        out = subprocess.run([sys.executable, "-c", _PAGE_FAULTS_CHILD, mode], capture_output=True,
                             text=True, check=True)
        return int(out.stdout.split()[-1])
    assert faults("default") > 8000
    assert faults("keep") < 1000


def test_train_ch6_keeps_freed_memory_on_a_cpu(monkeypatch):
    calls = []
    monkeypatch.setattr(training, "keep_freed_memory", lambda: calls.append(1) or True)
    X, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=4)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    d2l_local.train_ch6(net, data, data, 1, 0.1, "cpu", verbose=False, animate=False, progress=False)
    assert calls
