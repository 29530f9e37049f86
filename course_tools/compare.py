"""Two optimiser settings on the same batches: the loss after every step, to compare their starts.

`loss_curves` trains a fresh net per optimiser setting from the same initial weights (the book's
Xavier initialisation), on the same batches in the same order and with the same dropout masks, so
the curves differ only by the optimiser (e.g. plain SGD against SGD with momentum 0.9).
Used by `05_training_alexnet`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from d2l_local.training import init_weights_xavier, run_precision


def init_weights_kaiming(m: nn.Module) -> None:
    """He initialisation of Linear and Conv2d weights: normal, variance 2 / fan-in (for ReLU nets)."""
    if type(m) is nn.Linear or type(m) is nn.Conv2d:
        nn.init.kaiming_normal_(m.weight, nonlinearity="relu")


INITS = {"xavier": init_weights_xavier, "kaiming": init_weights_kaiming}


def loss_curves(make_net: Callable[[], nn.Module], make_batches: Callable[[], Iterable],
                optimisers: dict[str, dict], num_steps: int, device, *,
                seed: int = 0, precision: str | None = None) -> dict[str, list[float]]:
    """{name: training loss of each of `num_steps` steps}.

    make_net: builds the net (e.g. `course_tools.models.alexnet`); make_batches: returns a fresh
    iterable of (X, y) batches that yields the same batches every time it is called (a loader
    with a fixed seed); it is iterated again from the start when it runs out.
    optimisers: keyword arguments of `torch.optim.SGD` by name, e.g. {"plain SGD": dict(lr=0.01),
    "momentum 0.9": dict(lr=0.01, momentum=0.9)}; an `init` entry chooses the initialisation:
    "xavier" (the book's, the default) or "kaiming" (He et al. 2015: normal, variance 2 / fan-in).
    precision: as `train_ch6`'s ("fp32", "bf16", "auto"; None: the chosen setting's).
    """
    if num_steps < 1:
        raise ValueError(f"num_steps={num_steps}: compare at least one step")
    if not optimisers:
        raise ValueError('give at least one optimiser setting, e.g. {"plain SGD": dict(lr=0.01)}')
    device = torch.device(device)
    bf16 = run_precision(precision, device) == "bf16"
    fmt = torch.channels_last if bf16 else torch.contiguous_format
    curves = {}
    for name, options in optimisers.items():
        options = dict(options)
        init = INITS.get(options.pop("init", "xavier"))
        if init is None:
            raise ValueError(f"{name}: init must be one of {sorted(INITS)}")
        torch.manual_seed(seed)  # the same initial weights and dropout masks for every setting
        net = make_net()
        net.apply(init)
        net.to(device, memory_format=fmt).train()
        optimizer = torch.optim.SGD(net.parameters(), **options)
        loss = nn.CrossEntropyLoss()
        losses = []
        while len(losses) < num_steps:
            seen = len(losses)
            for X, y in make_batches():
                optimizer.zero_grad()
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    l = loss(net(X.to(device, memory_format=fmt)), y.to(device))
                l.backward()
                optimizer.step()
                losses.append(l.item())
                if len(losses) == num_steps:
                    break
            if len(losses) == seen:
                raise ValueError("make_batches() yielded no batch")
        curves[name] = losses
    return curves
