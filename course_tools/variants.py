"""The 2012 network beside its descendants (notebook 11): per-layer tables, LRN by hand,
ReLU against tanh and sigmoid, and a drawing of model against data parallelism.

`layer_rows` works on any `nn.Module` (not only `nn.Sequential`): it records every leaf module's
output in the order `forward` runs them, with forward hooks.
"""

from __future__ import annotations

import time

import pandas as pd
import torch
from torch import nn

from course_tools.analysis import macs


# ---------------------------------------------------------------- per-layer tables
def layer_rows(net: nn.Module, input_shape=(1, 3, 224, 224)) -> list[dict]:
    """One row per leaf module, in the order forward runs them: output shape, params, MACs."""
    rows, handles = [], []

    def hook(module, inputs, out):
        rows.append(dict(layer=type(module).__name__, output_shape=tuple(out.shape[1:]),
                         params=sum(p.numel() for p in module.parameters(recurse=False)),
                         macs=macs(module, out), groups=getattr(module, "groups", 1)))

    for m in net.modules():
        if not list(m.children()):
            handles.append(m.register_forward_hook(hook))
    was_training = net.training
    try:
        net.eval()
        with torch.no_grad():
            net(torch.zeros(input_shape))
    finally:
        net.train(was_training)
        for h in handles:
            h.remove()
    return rows


def weight_layers(net: nn.Module, input_shape) -> list[dict]:
    """The rows of the convolutions and linear layers, named conv1.. and fc.. as in the paper,
    each with the output shape after the pooling (if any) that follows it."""
    rows = layer_rows(net, input_shape)
    out, conv, fc = [], 0, 5
    for r in rows:
        if r["layer"] == "Conv2d":
            conv += 1
            out.append(dict(r, name=f"conv{conv}", shape_after_pool=r["output_shape"]))
        elif r["layer"] == "Linear":
            fc += 1
            out.append(dict(r, name=f"fc{fc}", shape_after_pool=r["output_shape"]))
        elif r["layer"] in ("MaxPool2d", "AdaptiveAvgPool2d") and out:
            out[-1]["shape_after_pool"] = r["output_shape"]
    return out


def _shape(row: dict) -> str:
    """'96x55x55 > 27' (the output, then the side after pooling), '(g2)' for 2 groups."""
    text = "x".join(map(str, row["output_shape"]))
    if row["shape_after_pool"] != row["output_shape"]:
        text += f" > {row['shape_after_pool'][-1]}"
    return text + (f" (g{row['groups']})" if row["groups"] > 1 else "")


def compare(nets: dict[str, tuple[nn.Module, tuple]]) -> pd.DataFrame:
    """Side by side: per weight layer of each net, its output shape (C x H x W; '> 27': the side
    after the pooling that follows),
    parameters (thousands) and multiply-adds (millions); a last row with the totals."""
    columns = {}
    for name, (net, shape) in nets.items():
        rows = weight_layers(net, shape)
        idx = [r["name"] for r in rows] + ["total"]
        columns[(name, "output")] = pd.Series([_shape(r) for r in rows] + [""], index=idx)
        columns[(name, "params (k)")] = pd.Series(
            [r["params"] / 1e3 for r in rows] + [sum(p.numel() for p in net.parameters()) / 1e3], index=idx)
        columns[(name, "MACs (M)")] = pd.Series(
            [r["macs"] / 1e6 for r in rows] + [sum(r["macs"] for r in rows) / 1e6], index=idx)
    return pd.DataFrame(columns)


# ---------------------------------------------------------------- local response normalisation
def lrn_paper(a: torch.Tensor, k: float = 2.0, n: int = 5, alpha: float = 1e-4,
              beta: float = 0.75) -> torch.Tensor:
    """Krizhevsky et al. 2012, section 3.3, written out: for channel i of N,
    b_i = a_i / (k + alpha * sum_{j = max(0, i - n/2)}^{min(N - 1, i + n/2)} a_j^2) ** beta."""
    N = a.shape[1]
    out = torch.empty_like(a)
    for i in range(N):
        lo, hi = max(0, i - n // 2), min(N - 1, i + n // 2)
        out[:, i] = a[:, i] / (k + alpha * a[:, lo:hi + 1].pow(2).sum(dim=1)) ** beta
    return out


# ---------------------------------------------------------------- ReLU against tanh and sigmoid
def small_cnn(activation: type[nn.Module]) -> nn.Sequential:
    """A four-layer net for 28x28 images (two convolutions, two linear layers), as the small
    net of the paper's figure 1 (which was a four-layer net on CIFAR-10)."""
    return nn.Sequential(
        nn.Conv2d(1, 16, kernel_size=5, padding=2), activation(), nn.MaxPool2d(2),   # 16 x 14 x 14
        nn.Conv2d(16, 32, kernel_size=5, padding=2), activation(), nn.MaxPool2d(2),  # 32 x 7 x 7
        nn.Flatten(),
        nn.Linear(32 * 7 * 7, 128), activation(),
        nn.Linear(128, 10),
    )


def activation_race(train_iter, activations: dict[str, type[nn.Module]], *, num_epochs: int,
                    lr: float, momentum: float, seed: int = 0, every: int = 10,
                    target_error: float = 0.25) -> dict[str, dict]:
    """Train `small_cnn` with each activation on the same batches; per activation the training
    error over each window of `every` steps, and the first step (and epoch) where it fell
    below `target_error` (the paper's 25%; None if never)."""
    out = {}
    for name, act in activations.items():
        torch.manual_seed(seed)  # the same initial weights (up to the activation) and data order
        net = small_cnn(act)
        opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum)
        train_iter.generator.manual_seed(seed)
        steps, errors, window, reached = [], [], [], None
        step, start = 0, time.perf_counter()
        for _ in range(num_epochs):
            for X, y in train_iter:
                opt.zero_grad()
                y_hat = net(X)
                nn.functional.cross_entropy(y_hat, y).backward()
                opt.step()
                step += 1
                window.append((y_hat.argmax(1) != y).float().mean().item())
                if len(window) == every:
                    steps.append(step)
                    errors.append(sum(window) / every)
                    window = []
                    if reached is None and errors[-1] < target_error:
                        reached = step
        out[name] = dict(steps=steps, errors=errors, reached_step=reached,
                         reached_epoch=None if reached is None else reached / len(train_iter),
                         seconds=time.perf_counter() - start, final_error=errors[-1] if errors else None)
    return out


# ---------------------------------------------------------------- model vs data parallelism
def draw_parallelism(ax_model, ax_data) -> None:
    """Two diagrams on two matplotlib axes: the 2012 split of one net over two GPUs (model
    parallelism) and today's data parallelism (a whole copy per device, gradients all-reduced)."""
    from matplotlib.patches import FancyArrowPatch, Rectangle

    def box(ax, x, y, w, h, text, color):
        ax.add_patch(Rectangle((x, y), w, h, facecolor=color, edgecolor="black", lw=0.8))
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=8)

    def arrow(ax, p, q, color="black", style="-|>", lw=0.8):
        ax.add_patch(FancyArrowPatch(p, q, arrowstyle=style, mutation_scale=8, color=color, lw=lw))

    layers = ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]
    cross = {"conv3", "fc6", "fc7", "fc8"}  # layers that read both towers' outputs
    w, gap = 0.8, 0.45
    for tower, (y, color) in enumerate([(2.2, "#cfe2f3"), (0.4, "#fde9c8")]):
        ax_model.text(-0.15, y + 0.35, f"GPU {tower}", ha="right", va="center", fontsize=9)
        for i, name in enumerate(layers):
            box(ax_model, i * (w + gap), y, w, 0.7, f"{name}\nhalf", color)
            if i:
                arrow(ax_model, ((i - 1) * (w + gap) + w, y + 0.35), (i * (w + gap), y + 0.35))
    for i, name in enumerate(layers):
        if name in cross:  # the towers exchange activations here
            x0, x1 = (i - 1) * (w + gap) + w, i * (w + gap)
            arrow(ax_model, (x0, 2.4), (x1, 1.05), color="tab:red")
            arrow(ax_model, (x0, 0.75), (x1, 2.3), color="tab:red")
    ax_model.text(0, 3.25, "image batch -> both GPUs; red: activations cross between GPUs "
                  "(conv3, fc6-fc8)", fontsize=8)
    ax_model.set_title("Model parallelism (Krizhevsky et al. 2012): each GPU holds half of every layer")
    ax_model.set_xlim(-1.1, len(layers) * (w + gap))
    ax_model.set_ylim(0, 3.5)

    for rank, (y, color) in enumerate([(2.2, "#d9ead3"), (0.4, "#d9ead3")]):
        ax_data.text(-0.15, y + 0.35, f"rank {rank}\nbatch shard {rank}", ha="right", va="center",
                     fontsize=9)
        for i, name in enumerate(layers):
            box(ax_data, i * (w + gap), y, w, 0.7, f"{name}\nwhole", color)
            if i:
                arrow(ax_data, ((i - 1) * (w + gap) + w, y + 0.35), (i * (w + gap), y + 0.35))
    for i in range(len(layers)):  # gradients averaged during backward, layer by layer
        x = i * (w + gap) + w / 2
        arrow(ax_data, (x, 1.15), (x, 2.15), color="tab:purple", style="<|-|>")
    ax_data.text(0, 3.25, "purple: all-reduce (mean) of each layer's gradients during backward; "
                 "then the same step on every rank", fontsize=8)
    ax_data.set_title("Data parallelism (DDP): each rank holds the whole net and a shard of the batch")
    ax_data.set_xlim(-1.1, len(layers) * (w + gap))
    ax_data.set_ylim(0, 3.5)
    for ax in (ax_model, ax_data):
        ax.set_xlabel("layers, input to output")
        ax.set_ylabel("device")
        ax.set_xticks([])
        ax.set_yticks([])
