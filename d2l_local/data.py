"""Fashion-MNIST: finding, checking and loading it (`d2l.load_data_fashion_mnist` and a fast path).

Two loaders yield the same `(X, y)` batches (float32 images in [0, 1], shape
(batch, 1, H, W), int64 labels):

- `load_data_fashion_mnist` is the book's: torchvision's data set with
  `Resize` + `ToTensor` per image, in `DataLoader` workers. Kept for teaching.
- `load_data_fashion_mnist_fast` keeps the whole data set as uint8 tensors
  (47 MB, on the training device) and resizes a whole batch at once on that
  device, so a GPU never waits for worker processes and a CPU spends its cores
  on training. The notebooks use it.

The files live in `data/FashionMNIST/raw/` (torchvision's layout) of this
repository, or under `$D2L_DATA_DIR`. `make data` (= `python -m d2l_local.data`)
provides and checks them.
"""

from __future__ import annotations

import gzip
import os
import shutil
import struct
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils import data

DATA_DIR_ENV = "D2L_DATA_DIR"
# idx file name -> (magic number, number of items) in the original release
FILES = {
    "train-images-idx3-ubyte": (2051, 60_000),
    "train-labels-idx1-ubyte": (2049, 60_000),
    "t10k-images-idx3-ubyte": (2051, 10_000),
    "t10k-labels-idx1-ubyte": (2049, 10_000),
}
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
TEXT_LABELS = ["t-shirt", "trouser", "pullover", "dress", "coat",
               "sandal", "shirt", "sneaker", "bag", "ankle boot"]


class DataError(RuntimeError):
    """The data set is missing or damaged; the message says what to run."""


def data_dir() -> Path:
    """Where the data lives: `$D2L_DATA_DIR`, else this repository's `data/`, wherever we run from."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return Path(__file__).resolve().parent.parent / "data"


def raw_dir(root: Path | None = None) -> Path:
    return Path(root or data_dir()) / "FashionMNIST" / "raw"


def _fix_hint(root: Path) -> str:
    if root == Path(__file__).resolve().parent.parent / "data":
        return "Run `make data` in the repository (it re-creates the files)."
    return (f"Run `{DATA_DIR_ENV}={root} python -m d2l_local.data` "
            f"(or unset {DATA_DIR_ENV} to use the repository's data/).")


def read_idx(path: Path) -> torch.Tensor:
    """Read one idx file (uint8) and check its header against its size; DataError if damaged."""
    raw = path.read_bytes()
    if len(raw) < 8:
        raise DataError(f"{path} is truncated ({len(raw)} bytes)")
    magic, count = struct.unpack(">II", raw[:8])
    ndim = magic & 0xFF
    if magic not in (2049, 2051) or len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path} is not an idx file (magic number {magic})")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    header = 4 + 4 * ndim
    expected = header + count * (dims[1] * dims[2] if ndim == 3 else 1)
    if len(raw) != expected:
        raise DataError(f"{path} has {len(raw)} bytes, its header says {expected}: truncated or damaged")
    return torch.frombuffer(bytearray(raw[header:]), dtype=torch.uint8).reshape(dims)


@lru_cache(maxsize=4)
def _checked(root: Path, stamp: tuple) -> dict[str, torch.Tensor]:
    tensors = {}
    for name, (magic, count) in FILES.items():
        path = raw_dir(root) / name
        t = read_idx(path)
        if int.from_bytes(path.open("rb").read(4), "big") != magic:
            raise DataError(f"{path} holds the wrong kind of idx file (magic number)")
        if t.shape[0] != count:
            raise DataError(f"{path} has {t.shape[0]} items, expected {count}")
        if "images" in name and tuple(t.shape[1:]) != (28, 28):
            raise DataError(f"{path} holds images of {tuple(t.shape[1:])}, expected 28x28")
        if "labels" in name and int(t.max()) > 9:
            raise DataError(f"{path} holds labels outside 0-9")
        tensors[name] = t
    return tensors


def fashion_mnist_tensors(root: Path | str | None = None) -> dict[str, torch.Tensor]:
    """The four checked idx files as uint8 tensors; DataError saying what to run if anything is off."""
    root = Path(root or data_dir()).resolve()
    missing = [n for n in FILES if not (raw_dir(root) / n).is_file()]
    if missing:
        raise DataError(f"Fashion-MNIST is missing under {raw_dir(root)} ({', '.join(missing)}). "
                        + _fix_hint(root))
    stamp = tuple((raw_dir(root) / n).stat().st_mtime_ns for n in FILES)
    try:
        return _checked(root, stamp)
    except DataError as e:
        raise DataError(f"{e}. {_fix_hint(root)}") from None


def get_fashion_mnist_labels(labels) -> list[str]:
    """Text labels of Fashion-MNIST (`d2l.get_fashion_mnist_labels`)."""
    return [TEXT_LABELS[int(i)] for i in labels]


def default_num_workers() -> int:
    """DataLoader workers: the book fixes 4; on a small machine they compete with training."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def _check_subset(name: str, n: int | None, total: int) -> None:
    if n is not None and not 0 < n <= total:
        raise ValueError(f"{name}={n}: choose 1 to {total:,} examples, or None for all")


def load_data_fashion_mnist(batch_size: int, resize=None, *, num_workers: int | None = None,
                            root: Path | str | None = None, train_subset: int | None = None,
                            test_subset: int | None = None):
    """Fashion-MNIST as two `DataLoader`s, the book's way (`d2l.load_data_fashion_mnist`).

    Differences from the book: the data folder is found (not `../data`), nothing
    is downloaded here (`make data` does that), the worker count suits the
    machine, and `train_subset`/`test_subset` keep the first n examples.
    """
    import torchvision
    from torchvision import transforms

    root = Path(root or data_dir())
    fashion_mnist_tensors(root)  # fails early, with what to run, if the files are missing/damaged
    trans = [transforms.ToTensor()]
    if resize:
        trans.insert(0, transforms.Resize(resize))
    trans = transforms.Compose(trans)
    mnist_train = torchvision.datasets.FashionMNIST(root=str(root), train=True, transform=trans)
    mnist_test = torchvision.datasets.FashionMNIST(root=str(root), train=False, transform=trans)
    _check_subset("train_subset", train_subset, len(mnist_train))
    _check_subset("test_subset", test_subset, len(mnist_test))
    if train_subset is not None:
        mnist_train = data.Subset(mnist_train, range(train_subset))
    if test_subset is not None:
        mnist_test = data.Subset(mnist_test, range(test_subset))
    workers = default_num_workers() if num_workers is None else num_workers
    return (data.DataLoader(mnist_train, batch_size, shuffle=True, num_workers=workers),
            data.DataLoader(mnist_test, batch_size, shuffle=False, num_workers=workers))


def resize_batch(images: torch.Tensor, size) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float (N, 1, H, W) in [0, 1], as torchvision's `Resize` + `ToTensor`.

    Bilinear with half-pixel centres, rounded to uint8 levels like PIL, so it
    matches the per-image PIL path within 1/255.
    """
    x = images.unsqueeze(1).float()
    if size:
        size = (size, size) if isinstance(size, int) else tuple(size)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        x = x.round_().clamp_(0, 255)
    return x.div_(255)


class FashionMNISTBatches:
    """Minibatches of an in-memory uint8 data set, resized on its device per batch.

    Iterable of `(X, y)` with `len()`, like a `DataLoader`; reshuffled on each
    pass with its own seeded generator (the global RNG is not touched).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, *,
                 resize=None, shuffle: bool = False, seed: int = 0) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.images, self.labels = images, labels.long()
        self.batch_size, self.resize, self.shuffle = batch_size, resize, shuffle
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def __iter__(self):
        n = len(self.labels)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        order = order.to(self.images.device)
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size]
            yield resize_batch(self.images[idx], self.resize), self.labels[idx]

    @property
    def device(self) -> torch.device:
        return self.images.device

    @property
    def example_shape(self) -> tuple[int, int, int]:
        """(1, H, W) of one example after resizing."""
        if not self.resize:
            return (1, *self.images.shape[1:])
        size = (self.resize, self.resize) if isinstance(self.resize, int) else tuple(self.resize)
        return (1, *size)


def load_data_fashion_mnist_fast(batch_size: int, resize=None, *, device=None, seed: int = 0,
                                 root: Path | str | None = None, train_subset: int | None = None,
                                 test_subset: int | None = None):
    """Fashion-MNIST as two `FashionMNISTBatches` held on `device` (default: the CPU).

    Same images and labels as `load_data_fashion_mnist` (within 1/255 after
    resizing); the training set is reshuffled every epoch from `seed`.
    """
    t = fashion_mnist_tensors(root)
    _check_subset("train_subset", train_subset, len(t["train-labels-idx1-ubyte"]))
    _check_subset("test_subset", test_subset, len(t["t10k-labels-idx1-ubyte"]))
    device = torch.device(device or "cpu")
    split = {"train": ("train", train_subset), "test": ("t10k", test_subset)}
    out = []
    for part, (prefix, n) in split.items():
        images = t[f"{prefix}-images-idx3-ubyte"][:n].to(device)
        labels = t[f"{prefix}-labels-idx1-ubyte"][:n].to(device)
        out.append(FashionMNISTBatches(images, labels, batch_size, resize=resize,
                                       shuffle=part == "train", seed=seed))
    return tuple(out)


# ---------------------------------------------------------------- make data
def _decompress_from(src_dir: Path, dest: Path) -> None:
    """Decompress the four files; each appears whole or not at all (an interrupt leaves no half file)."""
    from d2l_local.checkpoint import atomic_write

    for name in FILES:
        with gzip.open(src_dir / f"{name}.gz", "rb") as fin, atomic_write(dest / name) as fout:
            shutil.copyfileobj(fin, fout)


def _try_debian(dest: Path) -> str | None:
    if not (DEBIAN_DIR / "train-images-idx3-ubyte.gz").exists():
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            return None
        print("installing Debian's dataset-fashion-mnist with apt-get ...", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        ok = subprocess.run(["apt-get", "install", "-y", "-q", "dataset-fashion-mnist"], env=env)
        if ok.returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env)
            subprocess.run(["apt-get", "install", "-y", "-q", "dataset-fashion-mnist"], env=env)
    if not (DEBIAN_DIR / "train-images-idx3-ubyte.gz").exists():
        return None
    _decompress_from(DEBIAN_DIR, dest)
    return f"Debian package dataset-fashion-mnist ({DEBIAN_DIR})"


def _try_torchvision(root: Path) -> str | None:
    """Download with torchvision into a temporary folder, then move the checked files in."""
    import tempfile

    import torchvision

    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".download-") as tmp:
        try:
            for train in (True, False):
                torchvision.datasets.FashionMNIST(root=tmp, train=train, download=True)
            fashion_mnist_tensors(tmp)
        except Exception as e:  # network errors vary by platform
            print(f"torchvision download failed: {e}", file=sys.stderr)
            return None
        raw_dir(root).mkdir(parents=True, exist_ok=True)
        for name in FILES:
            os.replace(raw_dir(Path(tmp)) / name, raw_dir(root) / name)
    return "torchvision download"


def prepare(root: Path | str | None = None) -> str:
    """Provide the data under `root`: files already there, else Debian's package, else a download."""
    root = Path(root or data_dir()).resolve()
    try:
        fashion_mnist_tensors(root)
        return "files already present"
    except DataError as e:
        present = [raw_dir(root) / n for n in FILES if (raw_dir(root) / n).exists()]
        if present:
            # torchvision's download skips files that exist, damaged or not
            print(f"re-creating the data: {e}", file=sys.stderr)
            for path in present:
                path.unlink()
    for source in (lambda: _try_debian(raw_dir(root)), lambda: _try_torchvision(root)):
        origin = source()
        if origin:
            fashion_mnist_tensors(root)  # check what we just wrote
            return origin
    raise DataError("Could not provide Fashion-MNIST: Debian's dataset-fashion-mnist is not installed "
                    "(run `sudo apt-get install dataset-fashion-mnist`, or `make data` as root) and "
                    "the download failed. You can also copy the four .gz files of the original "
                    f"release into {raw_dir(root)} and run `make data` again.")


def main() -> int:
    try:
        origin = prepare()
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    t = fashion_mnist_tensors()
    print(f"Fashion-MNIST ok in {raw_dir()} ({origin}): "
          f"{len(t['train-labels-idx1-ubyte'])} train / {len(t['t10k-labels-idx1-ubyte'])} test "
          "images, 28x28, labels 0-9")
    return 0


if __name__ == "__main__":
    sys.exit(main())
