"""The learned conv1 filters: saved with their provenance by the training notebook, loaded by `01`.

AlexNet's first layer has 96 filters of 1x11x11 on Fashion-MNIST (46 KB in float32): small enough to
commit, unlike the 187 MB of the whole net. A file `conv1_filters.<setting>.<device>.<images>.npz`
holds the weights (`weights`, 96x1x11x11 float32), optionally the same filters before training
(`start`), and a JSON string (`provenance`) that says which run made them: setting, device, epochs,
training images seen, test accuracy, recipe, date. It is read with `allow_pickle=False`, so loading
a file runs no code.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from d2l_local.device import device_name

STEM = "conv1_filters"
REQUIRED = ("setting", "device", "epochs", "images_seen", "test_acc", "test_images", "recipe")


def first_conv(net: nn.Module) -> nn.Conv2d:
    """The net's first `Conv2d` (AlexNet's conv1)."""
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            return module
    raise ValueError(f"{type(net).__name__} has no Conv2d layer; pass a convolutional net")


def course_results_dir() -> Path:
    """The repository's committed `results/`, whatever `$D2L_RESULTS_DIR` says: the filters the
    course ships are read from here even when a reader's run writes its own results elsewhere."""
    from course_tools.results import committed_results_dir

    return committed_results_dir()


def filters_path(directory: Path, setting: str, device, images_seen: int) -> Path:
    """`<directory>/conv1_filters.<setting>.<device name>.<images seen>.npz`."""
    return Path(directory) / f"{STEM}.{setting}.{device_name(device)}.{images_seen}.npz"


def save_conv1_filters(net: nn.Module, directory: Path, *, setting: str, device, epochs: int,
                       images_seen: int, test_acc: float, test_images: int, recipe: dict,
                       start=None, **extra) -> Path:
    """Write the first conv layer's weights and where they come from; return the file's path.

    `recipe`: how the net was trained, e.g. dict(optimizer="SGD", lr=0.01, momentum=0.9,
    batch_size=128, init="Xavier uniform"). `start`: the first layer's weights before training
    (a tensor of the same shape), to show what training changed. `extra` goes into the provenance.
    """
    weights = first_conv(net).weight.detach().cpu().float().numpy()
    provenance = dict(setting=setting, device=str(device), device_name=device_name(device),
                      epochs=int(epochs), images_seen=int(images_seen), test_acc=float(test_acc),
                      test_images=int(test_images), recipe=dict(recipe), shape=list(weights.shape),
                      torch=torch.__version__,
                      date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                      **extra)
    path = filters_path(directory, setting, device, images_seen)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = dict(weights=weights, provenance=np.array(json.dumps(provenance)))
    if start is not None:
        arrays["start"] = np.asarray(start.detach().cpu().float() if hasattr(start, "detach") else start,
                                     dtype=np.float32)
        if arrays["start"].shape != weights.shape:
            raise ValueError(f"start has shape {arrays['start'].shape}, the weights {weights.shape}")
    with open(path, "wb") as f:  # a file object: np.savez would append .npz to a str name
        np.savez(f, **arrays)
    return path


def load_conv1_filters(path: Path) -> tuple[np.ndarray, dict]:
    """(weights, provenance) from a file written by `save_conv1_filters`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such filters file; 05_training_alexnet writes one")
    with np.load(path, allow_pickle=False) as data:
        if "weights" not in data or "provenance" not in data:
            raise ValueError(f"{path} is not a filters file (it holds {sorted(data)}); "
                             "write one with save_conv1_filters")
        weights, provenance = data["weights"], json.loads(str(data["provenance"]))
    missing = [k for k in REQUIRED if k not in provenance]
    if missing:
        raise ValueError(f"{path}: the provenance lacks {missing}; write it with save_conv1_filters")
    return weights, provenance


def load_conv1_start(path: Path) -> np.ndarray | None:
    """The filters before training from a file of `save_conv1_filters`, or None if it has none."""
    with np.load(Path(path), allow_pickle=False) as data:
        return data["start"] if "start" in data else None


def best_conv1_filters(directory: Path) -> Path | None:
    """The filters file in `directory` from the run that saw the most training images (ties: the
    higher test accuracy); None when there is none. Smoke runs never count: they prove nothing."""
    best, best_key = None, None
    for path in sorted(Path(directory).glob(f"{STEM}.*.npz")):
        _, provenance = load_conv1_filters(path)
        if provenance["setting"] == "smoke":
            continue
        key = (provenance["images_seen"], provenance["test_acc"])
        if best_key is None or key > best_key:
            best, best_key = path, key
    return best


def describe(provenance: dict) -> str:
    """One line for a figure's title: which run made the filters."""
    r = provenance["recipe"]
    recipe = f"SGD lr {r.get('lr')}" + (f", momentum {r['momentum']}" if r.get("momentum") else "")
    changed = provenance.get("set_by_parameter") or {}  # values that differ from the setting's table
    setting = f"setting '{provenance['setting']}'" + (
        " with " + ", ".join(f"{k}={v}" for k, v in sorted(changed.items())) if changed else "")
    return (f"{setting} on {provenance['device_name']}: "
            f"{provenance['epochs']} epoch(s), {provenance['images_seen']:,} images seen, {recipe}, "
            f"test acc {provenance['test_acc']:.3f} on {provenance['test_images']:,} images")


def neighbour_correlation(w) -> float:
    """How smooth filters are: the mean correlation of each weight with its right and lower
    neighbours, over the filters that are not all zero. Independent random weights give about 0;
    edges, stripes and blobs give values towards 1. `w`: (n, 1, k, k), a tensor or an array."""
    w = torch.as_tensor(w).detach().float().cpu().flatten(0, 1)  # (n, k, k)
    w = w[w.flatten(1).abs().amax(1) > 0]
    a = torch.cat([w[:, :, :-1].flatten(1), w[:, :-1, :].flatten(1)], 1)
    b = torch.cat([w[:, :, 1:].flatten(1), w[:, 1:, :].flatten(1)], 1)
    return nn.functional.cosine_similarity(a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True),
                                           dim=1).mean().item()


def input_windows(images, conv: nn.Conv2d) -> torch.Tensor:
    """Every window `conv` reads from `images` (n, c, h, w), one per row: (windows, c*k*k).

    These are the vectors each filter is multiplied with, so the gradient of a filter is always a
    weighted sum of them (F.unfold with the layer's kernel, stride and padding)."""
    if conv.dilation != (1, 1) or conv.groups != 1:
        raise ValueError("input_windows handles convolutions without dilation or groups")
    x = torch.as_tensor(images).detach().float()
    if x.dim() != 4 or x.shape[1] != conv.in_channels:
        raise ValueError(f"images of shape {tuple(x.shape)}: expected (n, {conv.in_channels}, h, w)")
    windows = nn.functional.unfold(x, conv.kernel_size, stride=conv.stride, padding=conv.padding)
    return windows.transpose(1, 2).flatten(0, 1)


def window_basis(windows, energy: float = 0.999) -> tuple[torch.Tensor, torch.Tensor]:
    """The fewest orthonormal patterns that hold `energy` of the windows' squared length.

    Returns (basis, share): basis (d, c*k*k), the principal patterns of the windows (eigenvectors
    of their uncentred second-moment matrix, largest first); share: the cumulative share of the
    windows' energy held by the first 1, 2, ... patterns (all c*k*k of them)."""
    if not 0 < energy <= 1:
        raise ValueError(f"energy must be in (0, 1], got {energy}")
    w = torch.as_tensor(windows).detach().double()
    values, vectors = torch.linalg.eigh(w.T @ w / len(w))  # ascending
    values, vectors = values.flip(0).clamp_min(0), vectors.flip(1)
    share = values.cumsum(0) / values.sum()
    d = int((share < energy - 1e-12).sum()) + 1
    return vectors[:, :d].T.float(), share.float()


def project(w, basis: torch.Tensor) -> torch.Tensor:
    """The part of each filter `w` (n, c, k, k) that lies in the span of `basis` (d, c*k*k)."""
    w = torch.as_tensor(w).detach().float()
    flat = w.flatten(1)
    return (flat @ basis.T @ basis).view_as(w)
