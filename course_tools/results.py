"""Results files: what a run measured, with the setting, device, seed, versions and wall time."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
from pathlib import Path

import torch

from d2l_local.device import device_name

RESULTS_DIR_ENV = "D2L_RESULTS_DIR"

# The book's numbers ([Exercise notes], a 4 GB GPU; [CPU notes], a CPU: the README's Sources), by the
# notebook that reproduces them.
BOOK = {
    "05_training_alexnet": dict(train_loss=0.330, train_acc=0.879, test_acc=0.878, examples_per_sec=592.4,
                    where="D2L 7.1.4, [Exercise notes] (cuda:0, a 4 GB GPU); [CPU notes] on a CPU: "
                          "0.327 / 0.880 / 0.883 at 20.6 ex/s"),
    # the exercises' runs in the [Exercise notes], all on their 4 GB GPU
    "06_ex1_more_epochs": dict(train_loss=0.284, train_acc=0.896, test_acc=0.887, examples_per_sec=589.3,
                               where="[Exercise notes], exercise 1: AlexNet, 15 epochs"),
    "07_ex2_small_images": dict(train_loss=0.429, train_acc=0.841, test_acc=0.843,
                                examples_per_sec=6650.9,
                                where="[Exercise notes], exercise 2: net_Better (net_28x28), 10 epochs"),
    "08_ex3_batch_size": dict(train_loss=0.407, train_acc=0.850, test_acc=0.855, examples_per_sec=587.8,
                              where="[Exercise notes], exercise 3: AlexNet, batch 256, 10 epochs"),
    "10_ex5_lenet_dropout_relu": dict(train_loss=0.306, train_acc=0.887, test_acc=0.883,
                                      examples_per_sec=26121.2,
                                      where="[Exercise notes], exercise 5: LeNet, ReLU, dropout 0.2, lr 0.6"),
}


REPOSITORY = Path(__file__).resolve().parent.parent
COMMITTED_RESULTS = REPOSITORY / "results"  # the course's reference runs, tracked by git
READER_RUNS = REPOSITORY / "runs"            # a reader's own runs: git-ignored, kept by `make clean`


def committed_results_dir() -> Path:
    """The course's committed reference results (`results/`), whatever `$D2L_RESULTS_DIR` says."""
    return COMMITTED_RESULTS


def results_dir() -> Path:
    """Where this run writes: `$D2L_RESULTS_DIR`, else the reader's own `runs/` (git-ignored).

    The committed `results/` is written only when asked for explicitly
    (`D2L_RESULTS_DIR=results`, which `tools/run_notebooks.py --in-place` sets), so a run
    started from JupyterLab, VS Code or a plain `python` never replaces the course's reference.
    """
    env = os.environ.get(RESULTS_DIR_ENV)
    path = Path(env) if env else READER_RUNS
    if not path.is_absolute():
        path = REPOSITORY / path
    path.mkdir(parents=True, exist_ok=True)
    return path


def writes_committed_results() -> bool:
    """True when this run writes into the course's committed `results/` (a maintainer asked for it)."""
    return results_dir().resolve() == COMMITTED_RESULTS.resolve()


def checkpoint_path(name: str, cfg, **more) -> Path:
    """`<results_dir>/checkpoints/<name>.<setting>.<key>.pt`: the key is a hash of every value of
    the run, so a run with other values never resumes this one's checkpoint (it starts afresh)."""
    values = dict(sorted({**dict(cfg), **more}.items()))
    key = hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return results_dir() / "checkpoints" / f"{name}.{cfg.name}.{key}.pt"


def versions() -> dict:
    import torchvision

    return dict(python=platform.python_version(), torch=torch.__version__,
                torchvision=torchvision.__version__)


def save_results(name: str, cfg, history, *, seed: int, extra: dict | None = None) -> Path:
    """Write `results/<name>.<setting>.<device>.json` and return its path."""
    device = torch.device(history.device)
    record = dict(notebook=name, setting=cfg.name, setting_values=dict(cfg), seed=seed)
    record.update(history.to_dict())  # metrics, epochs, times and the device it ran on
    record.update(device_name=device_name(device), cpu_threads=torch.get_num_threads(),
                  versions=versions(),
                  date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  **(extra or {}))
    path = results_dir() / f"{name}.{cfg.name}.{device_name(device)}.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path
