"""Checkpoints of a training run, written atomically, so an interrupted run loses at most one epoch.

`train_ch6(..., checkpoint="path.pt")` calls `save` after every epoch and
`load` when the file exists. A checkpoint holds the net's and the optimizer's
state, the `History` so far, the animator's points, the number of finished
epochs and every random number generator the loop draws from (torch's CPU and
CUDA (or mps) generators, Python's, NumPy's and the training data's own), so a resumed
run ends with the same weights and metrics as one that was never stopped.

`course_tools.ddp` (training on several processes) writes and reads the same format: the same fields,
its rank 0's generators under `rng`, and beside them what only it has (`rank_rngs`: every rank's
generators; `sampler`: the seed and epoch that fix `DistributedSampler`'s order; `step_losses`;
`world_size`). So train_ch6 continues a distributed run's file and the other way round; each
refuses a file whose `config` (learning rate, momentum, weight decay, batches per epoch, precision,
and DDP's own values where the file has them) differs from the run's.

`atomic_write` (a temporary file in the same folder, then `os.replace`) is
also what data preparation uses: a reader sees the old file or the new one,
never half of one.
"""

from __future__ import annotations

import contextlib
import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

FORMAT = 1


@contextlib.contextmanager
def atomic_write(path: Path | str, mode: str = "wb"):
    """Open a temporary file beside `path`; on success it replaces `path` in one step.

    On an error (or an interrupt) the temporary file is removed and `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def data_generator(data_iter) -> torch.Generator | None:
    """The data's own shuffling generator, if it has one (ours, or a DataLoader given one)."""
    for obj in (data_iter, getattr(data_iter, "sampler", None)):
        gen = getattr(obj, "generator", None)
        if isinstance(gen, torch.Generator):
            return gen
    return None


def rng_state(data_iter=None) -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]),
    }
    if torch.backends.mps.is_available():
        state["mps"] = torch.mps.get_rng_state()
    gen = data_generator(data_iter)
    if gen is not None:
        state["data"] = gen.get_state()
    return state


def set_rng_state(state: dict, data_iter=None) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "mps" in state and torch.backends.mps.is_available():
        torch.mps.set_rng_state(state["mps"])
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    gen = data_generator(data_iter)
    if gen is not None and "data" in state:
        gen.set_state(state["data"])


def save(path: Path | str, **state) -> None:
    """Write `state` (tensors, numbers, strings, lists, dicts) to `path` atomically."""
    with atomic_write(path) as f:
        torch.save({"format": FORMAT, **state}, f)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be resumed from; the message says what to do."""


def load(path: Path | str) -> dict:
    """Read a checkpoint written by `save`; CheckpointError, saying what to do, if it is unusable."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(e).__name__}: {e}). "
                              "Delete it to train from the start.") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a checkpoint of this course's train_ch6. "
                              "Delete it (or choose another path) to train from the start.")
    return state
