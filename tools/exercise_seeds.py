"""Exercise 5's LeNet variants with several seeds at the book's length, for the seed spread that
`10_ex5_lenet_dropout_relu` compares variants against (an instructor's and maintainer's tool).

    python tools/exercise_seeds.py --list
    D2L_RESULTS_DIR=results python tools/exercise_seeds.py all     # the course's reference files
    python tools/exercise_seeds.py relu-dropout-lr0.1.seed3         # one run, into runs/

Each run is `course_tools.exercises.run_recipe` (the notebooks' call) with the [Exercise notes]' batch
of 128 and 10 epochs on all 60,000 images, in fp32 (the book's numerics), one thread (so that it can
share two cores with another job). It writes `<results>/10_ex5_lenet_dropout_relu.spread-<variant>.
seed<k>.full.<device>.json` with the processor's name and, after training, the share of dead ReLU
units per layer on 1,000 test images (`course_tools.exercises.dead_relus`). A run takes one to two
minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from course_tools import models
from course_tools.exercises import dead_relus, normalize, run_recipe
from course_tools.results import results_dir, save_results
from course_tools.settings import Setting
from d2l_local.data import fashion_mnist_tensors
from d2l_local.device import cpu_model, try_gpu

sys.path.insert(0, str(Path(__file__).resolve().parent))
from instructor_solutions import lenet_relu_dropout  # noqa: E402

VARIANTS = {  # name -> (builder, learning rate, preprocessing)
    "lenet-lr0.9": (models.lenet, 0.9, "none"),
    "relu-dropout-lr0.6": (lenet_relu_dropout, 0.6, "none"),
    "relu-dropout-lr0.1": (lenet_relu_dropout, 0.1, "none"),
    "relu-dropout-normalize-lr0.1": (lenet_relu_dropout, 0.1, "normalize"),
    "relu-dropout-augment-lr0.1": (lenet_relu_dropout, 0.1, "normalize+augment"),
}
SEEDS = {"relu-dropout-normalize-lr0.1": range(3), "relu-dropout-augment-lr0.1": range(3)}  # others: 5
RECIPE = dict(batch_size=128, num_epochs=10)
NOTEBOOK = "10_ex5_lenet_dropout_relu"


def all_runs() -> list[str]:
    return [f"{v}.seed{s}" for v in VARIANTS for s in SEEDS.get(v, range(5))]


def path_of(run: str) -> Path:
    return results_dir() / f"{NOTEBOOK}.spread-{run}.full.cpu.json"


def make_run(run: str) -> Path:
    variant, seed_text = run.rsplit(".", 1)
    seed = int(seed_text.removeprefix("seed"))
    build, lr, prep = VARIANTS[variant]
    device = torch.device("cpu")
    net, history = run_recipe(build, lr=lr, device=device, seed=seed, preprocessing=prep,
                              precision="fp32", progress=False, animate=False, **RECIPE)
    X = fashion_mnist_tensors()["t10k-images-idx3-ubyte"][:1000].float().div(255).unsqueeze(1)
    dead = dead_relus(net, normalize(X) if prep != "none" else X)
    values = dict(RECIPE, lr=lr, preprocessing=prep, train_subset=None, test_subset=None,
                  model=build.__name__, precision="fp32")
    cfg = Setting("full", "tools/exercise_seeds.py", device, values, {})
    return save_results(f"{NOTEBOOK}.spread-{run}", cfg, history, seed=seed,
                        extra=dict(run=run, variant=variant, lr=lr, preprocessing=prep,
                                   model=build.__name__, cpu_model=cpu_model(), precision="fp32",
                                   dead_relus=dead))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="*", help="run names (see --list), or 'all' for the missing ones")
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args()
    if args.list or not args.runs:
        for run in all_runs():
            print(run, "(done)" if path_of(run).exists() else "")
        return 0
    runs = [r for r in all_runs() if not path_of(r).exists()] if args.runs == ["all"] else args.runs
    unknown = [r for r in runs if r not in all_runs()]
    if unknown:
        sys.exit(f"unknown run(s) {unknown}; --list shows them")
    torch.set_num_threads(1)
    print(f"1 thread on {try_gpu()} ({cpu_model()}), writing to {results_dir()}", flush=True)
    for run in runs:
        start = time.time()
        path = make_run(run)
        print(f"{run}: {time.time() - start:.0f} s -> {path.name}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
