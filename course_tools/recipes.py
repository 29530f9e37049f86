"""The 2012 training recipe on Fashion-MNIST, one part at a time (notebook 11).

The book trains its AlexNet with plain SGD (lr 0.01), no augmentation and no normalisation layer.
Krizhevsky et al. 2012 (sections 3.3, 4.1, 5) added, among other things:

- local response normalisation after conv1 and conv2 (`with_lrn`);
- data augmentation: random crops and horizontal flips, and changes of the colour/intensity
  (`augmentation`: torchvision's transforms v2 on each training batch, on its device);
- SGD with momentum 0.9 and weight decay 5e-4;
- the learning rate divided by 10 when the validation error stops improving
  (`torch.optim.lr_scheduler.ReduceLROnPlateau`).

`train_recipe` trains one net with any of these switched on and returns what it measured;
`run_recipes` does it for several recipes and seeds on the same data.
"""

from __future__ import annotations

import time

import pandas as pd
import torch
from torch import nn

from d2l_local.data import FashionMNISTBatches, fashion_mnist_tensors
from d2l_local.metrics import correct_count, evaluate_accuracy_gpu
from d2l_local.training import init_weights_xavier

# name -> the parts of the 2012 recipe switched on (the book's recipe has none)
RECIPES = {
    "book": dict(),
    "+ LRN": dict(lrn=True),
    "+ augmentation": dict(augment=True),
    "+ momentum 0.9, wd 5e-4": dict(momentum=0.9, weight_decay=5e-4),
    "+ lr/10 on plateau": dict(plateau=True),
    "2012 recipe (all four)": dict(lrn=True, augment=True, momentum=0.9, weight_decay=5e-4,
                                   plateau=True),
}
# the other way round: the 2012 recipe with one part switched off (where each part can still matter)
ABLATIONS = {
    "2012 - LRN": dict(RECIPES["2012 recipe (all four)"], lrn=False),
    "2012 - augmentation": dict(RECIPES["2012 recipe (all four)"], augment=False),
    "2012 - momentum, wd": dict(RECIPES["2012 recipe (all four)"], momentum=0.0, weight_decay=0.0),
    "2012 - plateau": dict(RECIPES["2012 recipe (all four)"], plateau=False),
}


def paper_lrn() -> nn.LocalResponseNorm:
    """The paper's LRN (k=2, n=5, alpha=1e-4, beta=0.75); PyTorch divides alpha by n, hence 5e-4."""
    return nn.LocalResponseNorm(size=5, alpha=5 * 1e-4, beta=0.75, k=2.0)


def alexnet_at(size: int = 224, *, width: float = 1.0, lrn: bool = False) -> nn.Sequential:
    """The book's AlexNet (D2L 7.1.2) for size x size input and `width` times its channels.

    The same layers, kernels, strides and dropout; `width` scales the channels (96, 256, 384, 384,
    256) and the hidden fully connected layers (4096), and fc1's input follows the feature map
    (6400 = 256 x 5 x 5 at 224; 256 x 2 x 2 at 112). `alexnet_at(224)` is `models.alexnet()`.
    `lrn=True` puts the paper's LRN after the ReLUs of conv1 and conv2, before the pooling.
    """
    c1, c2, c3, c4, c5, h = (max(1, round(c * width)) for c in (96, 256, 384, 384, 256, 4096))
    norm = [paper_lrn()] if lrn else []
    features = nn.Sequential(
        nn.Conv2d(1, c1, kernel_size=11, stride=4, padding=1), nn.ReLU(), *norm,
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(c1, c2, kernel_size=5, padding=2), nn.ReLU(), *[paper_lrn()] * bool(norm),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(c2, c3, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(c3, c4, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(c4, c5, kernel_size=3, padding=1), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Flatten(),
    )
    with torch.no_grad():
        flat = features(torch.zeros(1, 1, size, size)).shape[1]
    return nn.Sequential(
        *features,
        nn.Linear(flat, h), nn.ReLU(), nn.Dropout(p=0.5),
        nn.Linear(h, h), nn.ReLU(), nn.Dropout(p=0.5),
        nn.Linear(h, 10),
    )


def augmentation(size: int):
    """Random crops (zero-padded by size/8, then a size x size crop), horizontal flips, and
    brightness/contrast jitter: torchvision transforms v2, on float images in [0, 1]."""
    from torchvision.transforms import v2

    return v2.Compose([
        v2.RandomCrop(size, padding=size // 8),
        v2.RandomHorizontalFlip(p=0.5),
        v2.ColorJitter(brightness=0.4, contrast=0.4),
    ])


def augment_batch(transform, X: torch.Tensor) -> torch.Tensor:
    """Apply `transform` to each image of the batch on its device. (v2 called on a whole batch
    draws one crop/flip for all of its images; per image, every image gets its own.)"""
    return torch.stack([transform(x) for x in X])


class Subset:
    """Three disjoint parts of Fashion-MNIST as fast batches: training, validation, test."""

    def __init__(self, batch_size: int, resize: int, *, train: int, val: int, test: int,
                 device, seed: int = 0) -> None:
        t = fashion_mnist_tensors()
        images, labels = t["train-images-idx3-ubyte"], t["train-labels-idx1-ubyte"]
        if train + val > len(labels):
            raise ValueError(f"train={train} + val={val} exceeds the 60,000 training images")
        device = torch.device(device)
        # validation: the last `val` training images, never trained on
        self.train = FashionMNISTBatches(images[:train].to(device), labels[:train].to(device),
                                         batch_size, resize=resize, shuffle=True, seed=seed)
        self.val = FashionMNISTBatches(images[-val:].to(device), labels[-val:].to(device),
                                       batch_size, resize=resize)
        self.test = FashionMNISTBatches(t["t10k-images-idx3-ubyte"][:test].to(device),
                                        t["t10k-labels-idx1-ubyte"][:test].to(device),
                                        batch_size, resize=resize)


def train_recipe(data: Subset, *, size: int, num_epochs: int, lr: float, device, seed: int = 0,
                 width: float = 1.0,
                 lrn: bool = False, augment: bool = False, momentum: float = 0.0,
                 weight_decay: float = 0.0, plateau: bool = False, eval_every: int = 10,
                 patience: int = 2, plateau_after: int | None = None) -> dict:
    """Train `alexnet_at(size, width=width)` with the book's initialisation and the chosen parts of the 2012
    recipe. Every `eval_every` steps the validation accuracy is measured (and, with `plateau`,
    the learning rate divided by 10 after `patience` checks without improvement, counted from
    step `plateau_after`, by default the end of the first epoch: during the slow start of the
    book's initialisation the validation accuracy sits at chance, and a rule that watched it
    then would cut the learning rate before the net had learned anything)."""
    device = torch.device(device)
    torch.manual_seed(seed)
    data.train.generator.manual_seed(seed)
    net = alexnet_at(size, width=width, lrn=lrn)
    net.apply(init_weights_xavier)
    net.to(device)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.1,
                                                           patience=patience) if plateau else None
    transform = augmentation(size) if augment else None
    start_watching = len(data.train) if plateau_after is None else plateau_after
    loss = nn.CrossEntropyLoss()
    curve = dict(step=[], train_loss=[], val_acc=[], lr=[])
    step, start, window = 0, time.perf_counter(), []
    for _epoch in range(num_epochs):
        net.train()
        totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, count
        for X, y in data.train:
            if transform is not None:
                X = augment_batch(transform, X)
            opt.zero_grad()
            y_hat = net(X)
            l = loss(y_hat, y)
            l.backward()
            opt.step()
            with torch.no_grad():
                totals += torch.stack([l.double() * len(y), correct_count(y_hat, y).double(),
                                       torch.tensor(len(y), dtype=torch.float64, device=device)])
            window.append(l.detach())
            step += 1
            if step % eval_every == 0:
                val_acc = evaluate_accuracy_gpu(net, data.val, device)
                curve["step"].append(step)
                curve["train_loss"].append(torch.stack(window).mean().item())
                curve["val_acc"].append(val_acc)
                curve["lr"].append(opt.param_groups[0]["lr"])
                window = []
                if scheduler is not None and step >= start_watching:
                    scheduler.step(val_acc)
    train_loss, train_acc = (totals[0] / totals[2]).item(), (totals[1] / totals[2]).item()
    test_acc = evaluate_accuracy_gpu(net, data.test, device)
    return dict(train_loss=train_loss, train_acc=train_acc, test_acc=test_acc,
                val_acc=curve["val_acc"][-1] if curve["val_acc"] else None,
                final_lr=opt.param_groups[0]["lr"], steps=step, seconds=time.perf_counter() - start,
                curve=curve)


def run_recipes(data: Subset, recipes: dict[str, dict], seeds: list[int], *, verbose: bool = True,
                **kwargs) -> list[dict]:
    """`train_recipe` for every recipe and seed; one row each (the curve included)."""
    rows = []
    for seed in seeds:
        for name, parts in recipes.items():
            r = train_recipe(data, seed=seed, **parts, **kwargs)
            rows.append(dict(recipe=name, seed=seed, **r))
            if verbose:
                print(f"seed {seed}  {name:26s} loss {r['train_loss']:.3f}, train acc "
                      f"{r['train_acc']:.3f}, test acc {r['test_acc']:.3f}, final lr {r['final_lr']:g}, "
                      f"{r['seconds']:.0f} s", flush=True)
    return rows


def summarize(rows: list[dict], baseline: str = "book") -> pd.DataFrame:
    """Per recipe: mean and spread (max - min over seeds) of the final numbers, and whether the
    test accuracy's difference from `baseline` exceeds the run-to-run spread of both."""
    df = pd.DataFrame([{k: r[k] for k in ("recipe", "seed", "train_loss", "train_acc", "test_acc")}
                       for r in rows])
    g = df.groupby("recipe", sort=False)
    out = g[["train_loss", "train_acc", "test_acc"]].mean()
    out["test_acc spread"] = g["test_acc"].max() - g["test_acc"].min()
    out["seeds"] = g["seed"].count()
    base = out.loc[baseline]
    out["test_acc vs book"] = out["test_acc"] - base["test_acc"]
    noise = out["test_acc spread"].combine(pd.Series(base["test_acc spread"], index=out.index), max)
    def verdict(name, d):
        if name == baseline:
            return "-"
        if min(out.loc[name, "seeds"], base["seeds"]) < 2:
            return "unknown (one seed: no spread)"
        return "yes" if abs(d) > noise[name] else "no (within the seeds' spread)"

    out["beyond noise?"] = [verdict(name, d) for name, d in out["test_acc vs book"].items()]
    return out
