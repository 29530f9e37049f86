"""The exercises' runs that a CPU can make at the book's length (`full`), written to results/.

    python tools/exercise_full_runs.py --list            # what there is
    python tools/exercise_full_runs.py ex5-lenet-relu-dropout.seed0 ...
    python tools/exercise_full_runs.py all               # every run whose results file is missing
    python tools/exercise_full_runs.py --table           # the README's table from the results files
    python tools/exercise_full_runs.py --table --write   # ... written into README.md between its markers

Each run is `course_tools.exercises.run_recipe` with the recipe below (the same call the notebooks make)
and writes `results/<notebook>.<run>.full.<device>.json`. The 28x28 nets need no resize, so they run at
the book's length on a 2-core CPU: a LeNet in about a minute, `net_28x28` (the source's `net_Better`)
in about 32 minutes (measured on a 2-core AMD EPYC). Run one job at a time: two on 2 cores slow each other.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import torch
from instructor_solutions import lenet_relu_dropout, net_28x28_small  # tools/, not in the hand-out

from course_tools import models
from course_tools.exercises import run_recipe
from course_tools.results import results_dir, save_results
from course_tools.settings import Setting
from d2l_local.device import cpu_model, device_name, try_gpu
from d2l_local.training import init_weights_xavier

BOOK_ALEXNET = dict(batch_size=128, lr=0.01, num_epochs=10, resize=224)  # D2L 7.1.4 (zh) / 8.1.4 (en)
BOOK_28 = dict(batch_size=128, lr=0.01, num_epochs=10)            # exercise 2 in [Exercise notes]
LENET_BOOK = dict(batch_size=256, lr=0.9, num_epochs=15)          # D2L 6.6's LeNet recipe, 15 epochs
LENET_128 = dict(batch_size=128, num_epochs=10)                   # exercise 5 in [Exercise notes]: batch 128

RECIPES = {  # run name -> (notebook, builder, recipe)
    "book-alexnet": ("05_training_alexnet", models.alexnet, BOOK_ALEXNET),
    "ex1-alexnet-15ep": ("06_ex1_more_epochs", models.alexnet, dict(BOOK_ALEXNET, num_epochs=15)),
    "ex3-alexnet-batch256": ("08_ex3_batch_size", models.alexnet, dict(BOOK_ALEXNET, batch_size=256)),
    "ex1-lenet-15ep": ("06_ex1_more_epochs", models.lenet, LENET_BOOK),
    "ex2-net_28x28": ("07_ex2_small_images", models.net_28x28, BOOK_28),
    "ex2-net_28x28_small": ("07_ex2_small_images", net_28x28_small, BOOK_28),
    "ex5-lenet": ("10_ex5_lenet_dropout_relu", models.lenet, dict(LENET_128, lr=0.9)),
    "ex5-lenet-relu-dropout": ("10_ex5_lenet_dropout_relu", lenet_relu_dropout,
                               dict(LENET_128, lr=0.6)),
    "ex5-lenet-relu-dropout-normalize": ("10_ex5_lenet_dropout_relu", lenet_relu_dropout,
                                         dict(LENET_128, lr=0.6, preprocessing="normalize")),
    "ex5-lenet-relu-dropout-augment": ("10_ex5_lenet_dropout_relu", lenet_relu_dropout,
                                       dict(LENET_128, lr=0.6, preprocessing="normalize+augment")),
}
SEEDS = {"ex1-lenet-15ep": (0, 1, 2), "ex2-net_28x28": (0,), "ex2-net_28x28_small": (0,),
         "ex5-lenet-relu-dropout": (0, 1, 2), "book-alexnet": (0, 1), "ex1-alexnet-15ep": (0,),
         "ex3-alexnet-batch256": (0,)}  # the others: seeds 0 and 1
# AlexNet at 224x224 takes about an hour per 10 epochs on a 2-core CPU with native bf16: these runs
# save a checkpoint after every epoch (results/checkpoints/, not tracked) and resume from it, and
# keep it when done. The 15-epoch run continues the 10-epoch one's checkpoint: same seed, same
# batches in the same order, so its first 10 epochs are the book's run, as a straight run's would be.
CONTINUES = {"ex1-alexnet-15ep": "book-alexnet"}


def all_runs() -> list[str]:
    return [f"{name}.seed{s}" for name in RECIPES for s in SEEDS.get(name, (0, 1))]


def results_path(run: str):
    name, _ = run.split(".")
    return results_dir() / f"{RECIPES[name][0]}.{run}.full.{device_name(try_gpu())}.json"


# ---- the README's table, made from the results files (tests/test_exercises.py keeps them in step) ----

SOURCE = {  # run name -> what the [Exercise notes] report for it (loss / train acc / test acc)
    "book-alexnet": "0.330 / 0.879 / **0.878**, 592.4 ex/s (GPU); [CPU notes] 0.327 / 0.880 / 0.883, "
                    "20.6 ex/s; the book's notebook 0.331 / 0.878 / 0.883",
    "ex1-alexnet-15ep": "0.284 / 0.896 / **0.887**, 589.3 ex/s (GPU)",
    "ex3-alexnet-batch256": "0.407 / 0.850 / **0.855**, 587.8 ex/s (GPU)",
    "ex2-net_28x28": "0.429 / 0.841 / **0.843**, 6,650.9 ex/s (GPU)",
    "ex5-lenet-relu-dropout": "0.306 / 0.887 / **0.883**, 26,121.2 ex/s (GPU)",
    "ex1-lenet-15ep": "no run shown (claim: accuracy falls with more epochs)",
}
TABLE_ROWS = [  # (label, run name, epoch to read or None for the last, recipe)
    ("AlexNet, the book's run (05's reference run)", "book-alexnet", None,
     "10 epochs, batch 128, lr 0.01, 224x224"),
    ("ex. 1: AlexNet, 15 epochs", "ex1-alexnet-15ep", None, "batch 128, lr 0.01, 224x224"),
    ("ex. 3: AlexNet, batch 256", "ex3-alexnet-batch256", None, "10 epochs, lr 0.01, 224x224"),
    ("ex. 2: `net_28x28` (`net_Better`)", "ex2-net_28x28", None, "10 epochs, batch 128, lr 0.01"),
    ("ex. 2: `net_28x28_small` (this course's design)", "ex2-net_28x28_small", None,
     "10 epochs, batch 128, lr 0.01"),
    ("ex. 1: LeNet, epoch 10 of 15", "ex1-lenet-15ep", 10, "batch 256, lr 0.9 (D2L 6.6)"),
    ("ex. 1: LeNet, 15 epochs", "ex1-lenet-15ep", None, "batch 256, lr 0.9 (D2L 6.6)"),
    ("ex. 5: LeNet (sigmoid)", "ex5-lenet", None, "10 epochs, batch 128, lr 0.9"),
    ("ex. 5: LeNet, ReLU, dropout 0.2", "ex5-lenet-relu-dropout", None, "10 epochs, batch 128, lr 0.6"),
    ("ex. 5: + normalisation", "ex5-lenet-relu-dropout-normalize", None, "the same"),
    ("ex. 5: + normalisation + augmentation", "ex5-lenet-relu-dropout-augment", None, "the same"),
]
COMMITTED_RESULTS = Path(__file__).resolve().parent.parent / "results"
TABLE_START, TABLE_END = "<!-- full-results table: start -->", "<!-- full-results table: end -->"


def _runs_of(name: str, directory: Path) -> list[dict]:
    """The results of every seed of one recipe found in `directory`, by seed."""
    import json

    paths = [directory / results_path(f"{name}.seed{s}").name for s in SEEDS.get(name, (0, 1))]
    return sorted((json.loads(p.read_text()) for p in paths if p.exists()), key=lambda r: r["seed"])


def results_table(directory: Path = COMMITTED_RESULTS) -> str:
    """The `full` results in `directory` (the committed ones by default, whatever $D2L_RESULTS_DIR
    says) as a Markdown table: one row per recipe, one value per seed."""
    import statistics

    lines = ["| run | recipe | seeds | precision | loss | train acc | test acc | ex/s (median) "
             "| min (median) | [Exercise notes] (loss / train / test) |",
             "| --- | --- | --- | --- | --- | --- | --- | ---: | ---: | --- |"]
    for label, name, epoch, recipe in TABLE_ROWS:
        runs = _runs_of(name, Path(directory))
        source = SOURCE.get(name, "no run shown") if epoch is None else "no run shown"
        if not runs:
            lines.append(f"| {label} | {recipe} | (not run) | | | | | | | {source} |")
            continue
        rows = [r["epochs"][epoch - 1] if epoch else r for r in runs]  # epoch: read the curve there
        values = {key: ", ".join(f"{row[key]:.3f}" for row in rows)
                  for key in ("train_loss", "train_acc", "test_acc")}
        speed, minutes = "", ""
        if epoch is None:  # the whole run's speed and time
            speed = f"{statistics.median(r['examples_per_sec'] for r in runs):,.0f}"
            minutes = f"{statistics.median(r['wall_seconds'] for r in runs) / 60:.1f}"
        seeds = ", ".join(str(r["seed"]) for r in runs)
        precision = ", ".join(sorted({r.get("precision", "fp32") for r in runs}))  # older runs: fp32
        lines.append(f"| {label} | {recipe} | {seeds} | {precision} | {values['train_loss']} "
                     f"| {values['train_acc']} | {values['test_acc']} | {speed} | {minutes} | {source} |")
    return "\n".join(lines) + "\n"


def readme_with_table(readme: str) -> str:
    """README.md's text with the table between its markers replaced by `results_table()`."""
    start, end = readme.find(TABLE_START), readme.find(TABLE_END)
    if start < 0 or end < start:
        raise ValueError(f"README.md has no {TABLE_START} ... {TABLE_END} block; add the markers")
    return readme[:start + len(TABLE_START)] + "\n" + results_table() + readme[end:]


def checkpoint_path(run: str) -> Path:
    name, _ = run.split(".")
    return results_dir() / "checkpoints" / f"{RECIPES[name][0]}.{run}.full.pt"


def make_run(run: str, precision: str = "auto") -> None:
    name, seed_text = run.split(".")
    seed = int(seed_text.removeprefix("seed"))
    notebook, build, recipe = RECIPES[name]
    device = try_gpu()
    start = time.time()
    train_kwargs, extra, conv1_start = {}, {}, {}
    if build is models.alexnet:  # an hour or more: checkpointed, filters and confusion matrix kept
        checkpoint = checkpoint_path(run)
        earlier = name in CONTINUES and checkpoint_path(f"{CONTINUES[name]}.{seed_text}")
        if earlier and earlier.exists() and not checkpoint.exists():
            shutil.copyfile(earlier, checkpoint)
            print(f"{run}: continues {earlier.name}", flush=True)
        if earlier:  # its checkpoint starts as a copy of the earlier run's (a resumed run's too)
            extra["continued_from"] = f"{CONTINUES[name]}.{seed_text} (its checkpoint)"

        def build():  # noqa: F811 (the book's init here, so the filters' start is known)
            net = models.alexnet().apply(init_weights_xavier)
            conv1_start["weights"] = net[0].weight.detach().clone()
            return net

        train_kwargs = dict(checkpoint=checkpoint, init_weights=False)
    net, history = run_recipe(build, device=device, seed=seed, progress=False, animate=False,
                              precision=precision, **recipe, **train_kwargs)
    values = dict(dict(train_subset=None, test_subset=None, resize=None), **recipe,
                  model=models.alexnet.__name__ if conv1_start else build.__name__,
                  precision=history.precision, memory_format=history.memory_format)
    cfg = Setting("full", "tools/exercise_full_runs.py", device, values, {})
    if conv1_start:
        extra.update(alexnet_extras(net, history, cfg, seed, device, conv1_start["weights"],
                                    save_filters=name == "book-alexnet" and seed == 0))
    path = save_results(f"{notebook}.{run}", cfg, history, seed=seed,
                        extra=dict(run=run, model=values["model"], cpu_model=cpu_model(),
                                   precision=history.precision, memory_format=history.memory_format,
                                   **extra))
    print(f"{run}: loss {history.train_loss:.3f}, train acc {history.train_acc:.3f}, "
          f"test acc {history.test_acc:.3f}, {history.examples_per_sec:.1f} ex/s "
          f"({history.precision}, {history.memory_format}), {time.time() - start:.0f} s -> {path.name}",
          flush=True)


def alexnet_extras(net, history, cfg, seed, device, start, save_filters: bool) -> dict:
    """The test set's confusion matrix and conv1's filters (results/), which 05 and 01 show."""
    from course_tools import filters
    from d2l_local.data import get_fashion_mnist_labels, load_data_fashion_mnist_fast

    _, test_iter = load_data_fashion_mnist_fast(cfg.batch_size, resize=cfg.resize, device=device,
                                                seed=seed)
    net.eval()
    preds, labels = [], []
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16,
                                         enabled=history.precision == "bf16"):
        for X, y in test_iter:
            preds.append(net(X.to(device)).argmax(dim=1).cpu())
            labels.append(y.cpu())
    preds, labels = torch.cat(preds), torch.cat(labels)
    cm = torch.bincount(10 * labels + preds, minlength=100).reshape(10, 10)
    if not save_filters:  # one filters file, the book's run's with seed 0 (01 shows it)
        return dict(confusion_matrix=cm.tolist(), class_names=get_fashion_mnist_labels(range(10)),
                    num_train=60000, num_test=len(labels))
    filters_file = filters.save_conv1_filters(
        net, results_dir(), setting="full", device=device, epochs=len(history.epochs),
        images_seen=history.num_examples, test_acc=history.test_acc, test_images=len(labels),
        recipe=dict(optimizer="SGD", lr=cfg.lr, momentum=0.0, batch_size=cfg.batch_size,
                    resize=cfg.resize, init="Xavier uniform (train_ch6)", precision=history.precision),
        start=start, train_images=60000, seed=seed, setting_values=dict(cfg), set_by_parameter={})
    return dict(confusion_matrix=cm.tolist(), class_names=get_fashion_mnist_labels(range(10)),
                num_train=60000, num_test=len(labels), filters_file=filters_file.name)


def add_curve(run: str) -> None:
    """Copy the live plot's points (within epochs) from a run's kept checkpoint into its results file."""
    import json

    from d2l_local import checkpoint as ckpt

    path, saved = results_path(run), ckpt.load(checkpoint_path(run))
    record = json.loads(path.read_text())
    if saved["epoch"] != len(record["epochs"]):
        sys.exit(f"{checkpoint_path(run).name} has {saved['epoch']} epochs, "
                 f"{path.name} {len(record['epochs'])}")
    record["curve"] = dict(X=saved["plot"]["X"], Y=saved["plot"]["Y"])
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"{run}: the curve's {sum(map(len, record['curve']['X']))} points -> {path.name}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="*", help="run names (see --list), or 'all' for the missing ones")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--force", action="store_true", help="run even if the results file exists")
    ap.add_argument("--add-curve", action="store_true",
                    help="copy the within-epoch curve from each run's kept checkpoint into its results file")
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                    help="auto (default): bf16 where the hardware computes it natively, else fp32")
    ap.add_argument("--table", action="store_true", help="print the README's table of the results")
    ap.add_argument("--write", action="store_true", help="with --table: write it into README.md")
    args = ap.parse_args()
    # a maintainer's tool: it refreshes the course's committed results/ unless told otherwise
    os.environ.setdefault("D2L_RESULTS_DIR", str(Path(__file__).resolve().parent.parent / "results"))
    if args.table:
        readme = Path(__file__).resolve().parent.parent / "README.md"
        if args.write:
            readme.write_text(readme_with_table(readme.read_text()))
            print(f"wrote the table into {readme}")
        else:
            print(results_table(), end="")
        return 0
    if args.list or not args.runs:
        for run in all_runs():
            print(run, "(done)" if results_path(run).exists() else "")
        return 0
    runs = all_runs() if args.runs == ["all"] else args.runs
    unknown = [r for r in runs if r not in all_runs()]
    if unknown:
        sys.exit(f"unknown run(s) {unknown}; --list shows them")
    if args.add_curve:
        for run in runs:
            add_curve(run)
        return 0
    print(f"{torch.get_num_threads()} threads on {try_gpu()}")
    for run in runs:
        if results_path(run).exists() and not args.force:
            print(f"{run}: done ({results_path(run).name}); --force runs it again")
            continue
        make_run(run, args.precision)
    return 0


if __name__ == "__main__":
    sys.exit(main())
