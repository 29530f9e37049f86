"""Data-parallel training of the book's AlexNet with `torch.distributed` (DDP), launched by torchrun.

    torchrun --nproc_per_node=2 -m course_tools.ddp --setting smoke          # 2 processes, this machine
    python -m course_tools.ddp --setting smoke                               # 1 process, no torchrun
    # two machines, one process per GPU (run the same line on both; HOST is the first machine),
    # restarted from the last finished epoch when a process or a machine is lost:
    TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 torchrun --nnodes=2 --nproc_per_node=gpu --max-restarts=3 \
        --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 --rdzv-id=alexnet \
        -m course_tools.ddp --setting full --checkpoint /shared/alexnet-ddp.pt

Every process (a "rank") holds a whole copy of the net and trains on its own shard of each global
batch: `DistributedSampler` gives rank r the examples r, r + W, r + 2W, ... of the epoch's shuffled
order, so the W shards of one step are exactly the global batch a single process would take.
During `backward`, DDP averages the gradients over the ranks (an all-reduce), so every rank takes
the same step and the copies stay identical. Backend: gloo on CPUs, nccl on GPUs (one GPU per
rank). The data are held as uint8 tensors on each rank's device and resized per batch there
(as `load_data_fashion_mnist_fast`). Losses and accuracies are summed over the ranks; only rank 0
prints the book's lines and writes `ddp-<W>proc.<setting>.<device>.json` (in
`course_tools.results.results_dir()`, or `--results-dir`).

Surviving a lost process or machine. With `--checkpoint FILE`, rank 0 writes the run's state after
every epoch, atomically, in `train_ch6`'s checkpoint format (so either can resume the other's file):
weights, optimizer (momentum buffers), the number of finished epochs, the history so far and the
random generators; beside them what only DDP has: every rank's generators (its dropout masks) and
the sampler's seed and epoch (its order is a function of them). Every rank reads the file at
start-up when it exists and continues from the last finished epoch. Under `torchrun
--max-restarts=N`, a rank that dies (a killed process, a lost machine) makes torchrun stop the
others and start the group again; the new processes resume from the file and end with the weights
of a run that was never stopped. What is lost is the epoch in progress (redone) and the restart
(new processes, the rendezvous, reading the file). On several machines the file must be on storage
that every machine reads (the ranks check that they all see the same epoch). Restarts need
`TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1` in torchrun's environment (see `check_restartable`). The
machine at HOST holds the rendezvous store: torchrun survives losing another machine (the others wait
for it, or a replacement, to join again), not that one (started again, the same commands resume
from the file).

`python -m course_tools.ddp launch ...` runs torchrun after checking what torchrun does not: torchrun's
c10d rendezvous on a port that another program holds waits until its join timeout (600 s by
default) without saying why; `launch` stops at once with an error that names a free port. It also
bounds the wait for the other machines (`--join-timeout`, 120 s) and, when one never joins (or a
lost one does not come back), ends with an error that says so instead of torchrun's bare
`RendezvousTimeoutError`; it passes `--max-restarts` on and sets what restarts need.

    python -m course_tools.ddp launch --nnodes=2 --nproc-per-node=1 --node-rank=0 --max-restarts=3 \
        --rdzv-endpoint=127.0.0.1:29500 -- --setting smoke --checkpoint /tmp/ddp.pt   # and node 1
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DistributedSampler

from course_tools import models
from d2l_local import checkpoint as ckpt
from d2l_local.data import fashion_mnist_tensors, resize_batch
from d2l_local.device import device_name, keep_freed_memory, precision_text, resolve_precision
from d2l_local.metrics import StepTimer, correct_count
from d2l_local.training import History, _load_checkpoint, init_weights_xavier

SETTINGS = {
    # the book's run (D2L 7.1.4): global batch 128 split over the ranks
    "full": dict(resize=224, batch_size=128, lr=0.01, num_epochs=10, momentum=0.0, dropout=0.5,
                 train_subset=None, test_subset=None),
    # a CPU in about a minute: 12 global batches of 64, momentum as in the chapter's quick setting
    "quick": dict(resize=224, batch_size=64, lr=0.01, num_epochs=1, momentum=0.9, dropout=0.5,
                  train_subset=768, test_subset=256),
    # seconds: 2 global batches of 4; no dropout, so that a run with W ranks and a single
    # process compute the same function (each rank draws its own dropout masks)
    "smoke": dict(resize=224, batch_size=4, lr=0.05, num_epochs=1, momentum=0.9, dropout=0.0,
                  train_subset=8, test_subset=4),
}
# what train_ch6's checkpoint compares (d2l_local.training); DDP adds the keys of `_run_config`
TRAIN_CH6_KEYS = ("lr", "momentum", "weight_decay", "num_batches", "precision")


class DDPError(RuntimeError):
    """A launch that cannot work; the message says what to change."""


# ---------------------------------------------------------------- launching
def check_port_free(host: str, port: int) -> None:
    """Raise DDPError if something on this machine already listens on host:port.

    torchrun's c10d rendezvous on a taken port does not fail: it connects to whatever listens
    there and waits until its join timeout (600 s by default). Call this on the first machine.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as e:
            raise DDPError(
                f"the rendezvous port {host}:{port} is already in use ({e.strerror}); another "
                "torchrun job may be running. Choose a free port, e.g. "
                f"--rdzv-endpoint={host}:{free_port(host)}, or stop the other job.") from None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- one rank
def _setup(threads: int | None = None) -> tuple[int, int, torch.device, str | None]:
    """(rank, world size, device, backend); joins the process group when started by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise DDPError(f"local rank {local_rank} but {torch.cuda.device_count()} GPU(s) here: "
                           "start at most one process per GPU (--nproc_per_node=gpu)")
        device, backend = torch.device(f"cuda:{local_rank}"), "nccl"
        torch.cuda.set_device(device)
    else:
        device, backend = torch.device("cpu"), "gloo"
        # the ranks of one machine share its cores; more threads than cores slows everyone down
        torch.set_num_threads(threads or max(1, (os.cpu_count() or 1) // local_world))
    if world > 1:
        dist.init_process_group(backend=backend, device_id=device if backend == "nccl" else None)
    else:
        backend = None
    return rank, world, device, backend


def check_restartable() -> None:
    """DDPError when torchrun may restart this run but its restarts cannot work (read from its env).

    torchrun shares its rendezvous store with the workers' process group by default, and keeps it
    across restarts without clearing it: the restarted ranks can then read the previous attempt's
    addresses and fail to connect (gloo: "Connection refused", nccl likewise; pytorch/pytorch#135712,
    #167288). `TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1` in torchrun's environment gives every attempt
    a new store.
    """
    if int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0")) > 0 and \
            os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        raise DDPError("torchrun --max-restarts needs TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 in its "
                       "environment: otherwise a restarted group can read the previous attempt's "
                       "addresses from torchrun's shared store and fail to connect. Start it as "
                       "`TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 torchrun ...`, or with "
                       "`python -m course_tools.ddp launch`, which sets it.")


def _all_sum(values: list[float], device, world: int) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if world > 1:
        dist.all_reduce(t)  # sum over the ranks
    return t.tolist()


def _gather(obj, world: int) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every rank."""
    if world == 1:
        return [obj]
    out = [None] * world
    dist.all_gather_object(out, obj)
    return out


def weights_digest(net: nn.Module) -> str:
    """sha256 of every parameter's bytes: equal digests mean bit-identical weights."""
    h = hashlib.sha256()
    for name, p in net.state_dict().items():
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def train(cfg: dict, *, seed: int = 0, precision: str = "fp32", checkpoint: str | os.PathLike | None = None,
          threads: int | None = None, log_steps: bool = False, verbose: bool = True,
          save_weights: str | None = None) -> dict:
    """Train the book's AlexNet on this rank's shards; returns what rank 0 reports (on every rank).

    precision: "fp32" (the book's), "bf16" (autocast, with channels_last) or "auto" (bf16 where the
    device computes it natively), as `train_ch6`. checkpoint: a file written after every epoch and
    resumed from when it exists. threads: CPU threads per rank (default: the cores / local ranks).
    log_steps: rank 0 prints every rank's process id, then a line after every training step.
    """
    start = time.perf_counter()
    check_restartable()
    rank, world, device, backend = _setup(threads)
    try:
        return _train(cfg, rank, world, device, backend, seed=seed, precision=precision,
                      checkpoint=checkpoint, log_steps=log_steps, verbose=verbose,
                      save_weights=save_weights, start=start)
    finally:
        if world > 1:
            dist.destroy_process_group()


def _run_config(cfg: dict, seed: int, num_batches: int, precision: str) -> dict:
    """What a checkpoint must agree on: train_ch6's keys, then what fixes DDP's batches and masks."""
    return dict(lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=0.0, num_batches=num_batches,
                precision=precision, batch_size=cfg["batch_size"], seed=seed, resize=cfg["resize"],
                dropout=cfg["dropout"], train_subset=cfg["train_subset"])


def load_checkpoint(path, config: dict, num_epochs: int) -> dict | None:
    """The saved run, or None if there is no file; CheckpointError if it belongs to another run.

    train_ch6's checks first (its keys); then DDP's own keys where the file has them (a file of
    train_ch6 has not: its batches come from its own loader, so only their number is compared).
    """
    saved = _load_checkpoint(path, {k: config[k] for k in TRAIN_CH6_KEYS}, num_epochs)
    if saved is None:
        return None
    differ = {k: (saved["config"][k], v) for k, v in config.items()
              if k in saved["config"] and saved["config"][k] != v}
    if differ:
        raise ckpt.CheckpointError(
            f"checkpoint {path} was written by a run with other values: "
            + ", ".join(f"{k} {old} there, {new} now" for k, (old, new) in differ.items())
            + ". Use the same values to resume, or delete the file (or choose another) to start again.")
    return saved


def _save_checkpoint(path, config, net, optimizer, history: History, plot, step_losses, seed: int,
                     rank: int, world: int) -> None:
    """Rank 0 writes the run's state (a collective: every rank hands in its generators' state)."""
    # each rank's own dropout masks come from its generators; sent as torch.save's bytes
    buf = io.BytesIO()
    torch.save(ckpt.rng_state(), buf)
    rngs = [torch.load(io.BytesIO(b), weights_only=True) for b in _gather(buf.getvalue(), world)]
    if rank == 0:
        done = len(history.epochs)
        ckpt.save(path, config=config, epoch=done, net=net.state_dict(), optimizer=optimizer.state_dict(),
                  history={k: v for k, v in asdict(history).items() if k != "figure"}, plot=plot,
                  rng=rngs[0],  # what train_ch6 reads
                  rank_rngs=rngs, sampler=dict(seed=seed, epoch=done), step_losses=step_losses,
                  world_size=world)


def _train(cfg, rank, world, device, backend, *, seed=0, precision="fp32", checkpoint=None,
           log_steps=False, verbose=True, save_weights=None, start=None) -> dict:
    start = time.perf_counter() if start is None else start
    if cfg["batch_size"] % world:
        raise DDPError(f"global batch {cfg['batch_size']} does not split over {world} ranks; "
                       "choose a multiple of the number of processes")
    per_rank = cfg["batch_size"] // world
    precision = resolve_precision(precision, device)
    bf16 = precision == "bf16"
    channels_last = bf16  # as train_ch6: channels_last goes with bf16
    t = fashion_mnist_tensors()
    images = t["train-images-idx3-ubyte"][:cfg["train_subset"]].to(device)
    labels = t["train-labels-idx1-ubyte"][:cfg["train_subset"]].long().to(device)
    test_images = t["t10k-images-idx3-ubyte"][:cfg["test_subset"]].to(device)
    test_labels = t["t10k-labels-idx1-ubyte"][:cfg["test_subset"]].long().to(device)
    # every rank shuffles with the same seed and takes every W-th example of the order; the order
    # of epoch e depends only on (seed, e), so a resumed run needs no more than the epoch
    sampler = DistributedSampler(range(len(labels)), num_replicas=world, rank=rank,
                                 shuffle=True, seed=seed, drop_last=True)
    num_batches, num_epochs = math.ceil(len(sampler) / per_rank), cfg["num_epochs"]
    config = _run_config(cfg, seed, num_batches, precision)
    saved = load_checkpoint(checkpoint, config, num_epochs) if checkpoint else None
    seen = _gather(saved["epoch"] if saved else None, world)
    if len(set(seen)) > 1:
        raise DDPError(f"the ranks read different checkpoints at {checkpoint} (finished epochs, by "
                       f"rank: {seen}); on several machines put --checkpoint on storage that every "
                       "machine reads (a shared file system), or delete the stale copies")

    torch.manual_seed(seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    net = models.alexnet()
    for m in net.modules():
        if isinstance(m, nn.Dropout):
            m.p = cfg["dropout"]
    net.apply(init_weights_xavier)  # the book's initialisation (train_ch6)
    if saved is not None:
        try:
            net.load_state_dict(saved["net"])
        except RuntimeError as e:
            raise ckpt.CheckpointError(f"checkpoint {checkpoint} holds another net's weights ({e}). "
                                       "Delete it (or choose another file) to start again.") from None
    net.to(device)
    if device.type == "cpu":
        keep_freed_memory()  # as train_ch6: each step reuses the last one's pages
    if channels_last:
        net.to(memory_format=torch.channels_last)
    initial = {k: v.detach().clone() for k, v in net.state_dict().items()}
    model = nn.parallel.DistributedDataParallel(net) if world > 1 else net
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"])
    loss = nn.CrossEntropyLoss()
    history = History(device=str(device), precision=precision,
                      memory_format="channels_last" if channels_last else "NCHW")
    step_losses, plot = [], dict(X=[[], [], []], Y=[[], [], []])  # plot: train_ch6's animator points
    torch.manual_seed(seed + rank)  # dropout masks differ between ranks, as they should
    first_epoch = 0
    if saved is not None:
        optimizer.load_state_dict(saved["optimizer"])
        for key, value in saved["history"].items():
            if key not in ("device", "precision", "memory_format"):
                setattr(history, key, value)
        step_losses = list(saved.get("step_losses", []))  # train_ch6 keeps none
        if len((saved.get("plot") or {}).get("X") or []) == 3:  # train loss, train acc, test acc
            plot = saved["plot"]
        rngs = saved.get("rank_rngs") or [saved["rng"]]
        if len(rngs) == world:  # the same ranks: each continues its own generators
            ckpt.set_rng_state(rngs[rank])
        first_epoch = saved["epoch"]
        start -= history.wall_seconds  # the time up to the checkpoint counts; the lost epoch does not
    timer = StepTimer(device)
    timer.seconds = history.compute_seconds
    restarts = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    pids = _gather(os.getpid(), world) if log_steps else None
    if verbose and rank == 0:
        print(f"training on {device}, {world} process(es)" + (f" ({backend})" if backend else ""),
              flush=True)
        if pids:
            print("process ids by rank: " + ", ".join(f"{r}: {pid}" for r, pid in enumerate(pids)))
        if saved is not None:
            print(f"resuming from {checkpoint}: {first_epoch} of {num_epochs} epochs done"
                  + (f" (torchrun restart {restarts})" if restarts else ""), flush=True)
        elif restarts:
            print(f"torchrun restart {restarts}, no checkpoint: training from epoch 1", flush=True)
    for epoch in range(first_epoch, num_epochs):
        sampler.set_epoch(epoch)  # a new order each epoch, the same on every rank
        order = torch.tensor(list(sampler), device=device)
        model.train()
        local = []  # per step, on the device: (sum of losses, correct, examples) of this rank
        for i, s in enumerate(range(0, len(order), per_rank)):
            idx = order[s:s + per_rank]
            X, y = resize_batch(images[idx], cfg["resize"]), labels[idx]
            if channels_last:
                X = X.contiguous(memory_format=torch.channels_last)
            timer.start()
            optimizer.zero_grad()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                y_hat = model(X)
                l = loss(y_hat, y)
            l.backward()  # DDP all-reduces (averages) the gradients here
            optimizer.step()
            timer.stop()
            local.append(torch.stack([l.detach().double() * len(y), correct_count(y_hat, y).double(),
                                      torch.tensor(float(len(y)), dtype=torch.float64, device=device)]))
            if log_steps and rank == 0:
                print(f"epoch {epoch + 1}/{num_epochs}, step {i + 1}/{num_batches}", flush=True)
        sums = torch.stack(local)  # (steps, 3)
        if world > 1:
            dist.all_reduce(sums)  # once per epoch, not once per step
        step_losses += (sums[:, 0] / sums[:, 2]).tolist()
        running = sums.cumsum(0)  # the running averages train_ch6 plots during an epoch
        for i, (l_sum, c_sum, n_sum) in enumerate(running.tolist()):
            for line, value in ((0, l_sum / n_sum), (1, c_sum / n_sum)):
                plot["X"][line].append(epoch + (i + 1) / num_batches)
                plot["Y"][line].append(value)
        train_l, train_acc = running[-1, 0].item() / running[-1, 2].item(), \
            running[-1, 1].item() / running[-1, 2].item()
        # evaluation: rank r takes test examples r, r + W, ... (no padding, each counted once)
        eval_start = time.perf_counter()
        model.eval()
        correct = total = 0
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            mine = torch.arange(rank, len(test_labels), world, device=device)
            for s in range(0, len(mine), per_rank):
                idx = mine[s:s + per_rank]
                correct += correct_count(net(resize_batch(test_images[idx], cfg["resize"])),
                                         test_labels[idx]).item()
                total += len(idx)
        correct, total = _all_sum([correct, total], device, world)
        test_acc = correct / total
        history.eval_seconds += time.perf_counter() - eval_start
        plot["X"][2].append(epoch + 1)
        plot["Y"][2].append(test_acc)
        history.num_examples += int(running[-1, 2].item())
        history.epochs.append(dict(epoch=epoch + 1, train_loss=train_l, train_acc=train_acc,
                                   test_acc=test_acc, compute_seconds=timer.total(),
                                   wall_seconds=time.perf_counter() - start))
        history.compute_seconds, history.wall_seconds = timer.total(), time.perf_counter() - start
        if checkpoint:
            _save_checkpoint(checkpoint, config, net, optimizer, history, plot, step_losses, seed,
                             rank, world)
    compute = _all_sum([timer.total()], device, world)[0] / world  # mean over the ranks
    digests = _gather(weights_digest(net), world)
    # how far each tensor moved in this process (from the checkpoint when resumed): a wrong
    # gradient average (a sum, say) shows here
    update_norms = {k: (v.detach() - initial[k]).double().norm().item() for k, v in net.state_dict().items()}
    if save_weights and rank == 0:
        Path(save_weights).parent.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.cpu() for k, v in net.state_dict().items()}, save_weights)
    last = history.epochs[-1]
    result = dict(world_size=world, backend=backend, device=str(device), nnodes=world // int(
        os.environ.get("LOCAL_WORLD_SIZE", "1")), per_rank_batch=per_rank, seed=seed,
        precision=precision, memory_format=history.memory_format,
        epochs=history.epochs, step_losses=step_losses, train_loss=last["train_loss"],
        train_acc=last["train_acc"], test_acc=last["test_acc"],
        num_examples=history.num_examples, compute_seconds=compute,
        examples_per_sec=history.num_examples / compute, wall_seconds=time.perf_counter() - start,
        weights_digests=digests, update_norms=update_norms,
        checkpoint=str(checkpoint) if checkpoint else None,
        resumed_from_epoch=saved["epoch"] if saved is not None else None, restarts=restarts)
    result["wall_examples_per_sec"] = history.num_examples / result["wall_seconds"]
    if verbose and rank == 0:
        print(f"loss {result['train_loss']:.3f}, train acc {result['train_acc']:.3f}, "
              f"test acc {result['test_acc']:.3f}")
        print(f"{result['examples_per_sec']:.1f} examples/sec on {device} "
              f"({world} process(es), {result['wall_examples_per_sec']:.1f} end to end)")
        print(f"precision: {precision_text(precision, channels_last)}", flush=True)
    return result


def save(result: dict, setting: str, values: dict, results_dir: Path, run_name: str | None = None) -> Path:
    """Write `ddp-<W>proc[.<run_name>].<setting>.<device>.json` (rank 0 only calls this)."""
    from course_tools.results import versions

    record = dict(notebook="ddp", setting=setting, setting_values=values, run_name=run_name, **result,
                  device_name=device_name(result["device"]), cpu_threads=torch.get_num_threads(),
                  versions=versions(), date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    results_dir.mkdir(parents=True, exist_ok=True)
    name = f"ddp-{result['world_size']}proc" + (f".{run_name}" if run_name else "")
    path = results_dir / f"{name}.{setting}.{device_name(result['device'])}.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


# ---------------------------------------------------------------- launching, stopping, killing
def _is_local(host: str) -> bool:
    names = {"localhost", socket.gethostname(), socket.getfqdn()}
    try:
        return host in names or socket.gethostbyname(host) in {"127.0.0.1", "0.0.0.0"} or \
            socket.gethostbyname(host) == socket.gethostbyname(socket.gethostname())
    except OSError:
        return False


def launch(argv: list[str]) -> int:
    """`python -m course_tools.ddp launch [torchrun options] -- [training options]`.

    Checks what torchrun does not (a taken rendezvous port on the machine that hosts it), then
    runs torchrun with a bounded join timeout and returns its exit status; when the other nodes
    did not join in time, returns 2 with an error that says so.
    """
    ap = argparse.ArgumentParser(prog="python -m course_tools.ddp launch")
    ap.add_argument("--nnodes", type=int, default=1)
    ap.add_argument("--nproc-per-node", "--nproc_per_node", default="2")
    ap.add_argument("--node-rank", "--node_rank", type=int, default=0,
                    help="0 on the machine that hosts the rendezvous (its port is checked)")
    ap.add_argument("--rdzv-endpoint", "--rdzv_endpoint", default=None, help="host:port")
    ap.add_argument("--rdzv-id", "--rdzv_id", default="d2l-ddp")
    ap.add_argument("--join-timeout", type=int, default=120, help="seconds to wait for all nodes")
    ap.add_argument("--max-restarts", "--max_restarts", type=int, default=0,
                    help="restarts of the group after a lost process (needs --checkpoint after --)")
    args, rest = ap.parse_known_args(argv)
    rest = [a for a in rest if a != "--"]
    if args.max_restarts > 0 and not any(a == "--checkpoint" or a.startswith("--checkpoint=")
                                         for a in rest):
        print(f"error: --max-restarts={args.max_restarts} without --checkpoint: every restart would "
              "train from epoch 1. Add --checkpoint FILE after -- (on several machines, a file on "
              "storage every machine reads)", file=sys.stderr)
        return 2
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={args.nproc_per_node}",
           f"--nnodes={args.nnodes}", f"--max-restarts={args.max_restarts}"]
    if args.rdzv_endpoint is None:
        if args.nnodes > 1:
            print("error: several nodes need --rdzv-endpoint=HOST:PORT (HOST: the first machine)",
                  file=sys.stderr)
            return 2
        cmd += ["--standalone"]
    else:
        host, _, port = args.rdzv_endpoint.rpartition(":")
        if not host or not port.isdigit():
            print(f"error: --rdzv-endpoint={args.rdzv_endpoint}: write HOST:PORT, e.g. "
                  "127.0.0.1:29500", file=sys.stderr)
            return 2
        if args.node_rank == 0 and _is_local(host):
            try:
                check_port_free(host, int(port))
            except DDPError as e:
                print(f"error: {e}", file=sys.stderr)
                return 2
        cmd += ["--rdzv-backend=c10d", f"--rdzv-endpoint={args.rdzv_endpoint}",
                f"--rdzv-id={args.rdzv_id}", f"--rdzv-conf=join_timeout={args.join_timeout}"]
    cmd += ["-m", "course_tools.ddp", *rest]
    # torchrun's output passes through; a rendezvous that timed out is recognised on the way
    env = {**os.environ, "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}  # see check_restartable
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True, bufsize=1)
    timed_out = False
    for line in proc.stderr:
        sys.stderr.write(line)
        timed_out = timed_out or "RendezvousTimeoutError" in line
    rc = proc.wait()
    if rc != 0 and timed_out:
        print(f"error: not all {args.nnodes} nodes joined the rendezvous at {args.rdzv_endpoint} "
              f"within --join-timeout={args.join_timeout} s (a node that left did not come back, or "
              "one was never started). Start the same command on every machine, check that "
              "HOST:PORT is reachable from them, or raise --join-timeout.", file=sys.stderr)
        return 2
    return rc


def process_tree(pid: int) -> list[int]:
    """pid and the pids of every process it started (torchrun's workers run in their own sessions)."""
    import psutil

    try:
        return [pid] + [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def kill(pids) -> None:
    """SIGKILL each pid (as a lost machine looks); pids that are already gone are skipped."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def stop(proc: subprocess.Popen) -> None:
    """End a launch (torchrun) and every process it started, each by its pid, and reap it."""
    kill(process_tree(proc.pid))  # the agent first, so that it restarts nothing, then its workers
    proc.wait()


def worker_pids(agent_pid: int) -> dict[int, int]:
    """{global rank: pid} of the workers that a torchrun agent started (read from their environment)."""
    import psutil

    ranks = {}
    for pid in process_tree(agent_pid)[1:]:
        try:
            env = psutil.Process(pid).environ()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if "TORCHELASTIC_RUN_ID" in env and "RANK" in env:
            ranks[int(env["RANK"])] = pid
    return ranks


class Launch:
    """A command (torchrun) run in the background, its output (stdout and stderr) read line by line.

    `wait_for(text)` waits for a line that contains `text`; `kill_rank(r)` SIGKILLs the worker of
    global rank r by its pid; `finish()` waits for the end; `stop()` ends it and all its processes.
    """

    def __init__(self, cmd: list[str], *, cwd=None, env=None) -> None:
        self.started = time.monotonic()
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.lines: list[tuple[float, str]] = []  # (seconds since the start, line)
        self.seconds: float | None = None  # from the start to the end of its output (its end)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append((time.monotonic() - self.started, line.rstrip("\n")))
        self.seconds = time.monotonic() - self.started

    @property
    def output(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def wait_for(self, text: str, timeout: float) -> float:
        """Seconds from the start to the first line that contains `text`; DDPError after timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [at for at, line in list(self.lines) if text in line]
            if found:
                return found[0]
            if not self._reader.is_alive():
                break
            time.sleep(0.02)
        raise DDPError(f"no line with {text!r} in the output after {time.monotonic() - self.started:.0f} s "
                       f"(exit status {self.proc.poll()}):\n{self.output[-3000:]}")

    def kill_rank(self, rank: int) -> int:
        """SIGKILL the worker of global rank `rank`, as a lost machine looks; returns its pid."""
        pid = worker_pids(self.proc.pid).get(rank)
        if pid is None:
            raise DDPError(f"no worker of rank {rank} under process {self.proc.pid}")
        kill([pid])
        return pid

    def finish(self, timeout: float) -> tuple[int, float]:
        """(exit status, seconds from its start to its end); past the timeout, DDPError after stopping
        it and every process it started."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise DDPError(f"still running after {timeout:.0f} s; stopped:\n{self.output[-3000:]}") from None
        self._reader.join(timeout=10)
        return rc, self.seconds if self.seconds is not None else time.monotonic() - self.started

    def stop(self) -> None:
        if self.proc.poll() is None:
            stop(self.proc)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["launch"]:
        return launch(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setting", choices=list(SETTINGS), default="smoke")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=None, help="default: the setting's num_epochs")
    ap.add_argument("--train-subset", type=int, default=None, help="the first n training images")
    ap.add_argument("--batch-size", type=int, default=None, help="the global batch (all ranks)")
    ap.add_argument("--dropout", type=float, default=None, help="default: the setting's")
    ap.add_argument("--precision", choices=["fp32", "bf16", "auto"], default="fp32",
                    help="fp32 (the book's), bf16 autocast, or auto: bf16 where the device has it natively")
    ap.add_argument("--checkpoint", default=None,
                    help="save the run here after every epoch; resume from it when it exists")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads per process "
                    "(default: the cores / the processes on this machine)")
    ap.add_argument("--log-steps", action="store_true",
                    help="rank 0 prints the ranks' process ids, then a line after every step")
    ap.add_argument("--results-dir", default=None,
                    help="default: $D2L_RESULTS_DIR, else runs/ (course_tools.results.results_dir())")
    ap.add_argument("--run-name", default=None, help="added to the results file's name")
    ap.add_argument("--save-weights", default=None, help="rank 0 saves the final state_dict here")
    args = ap.parse_args(argv)
    values = dict(SETTINGS[args.setting])
    for key, arg in (("train_subset", "train_subset"), ("batch_size", "batch_size"),
                     ("num_epochs", "epochs"), ("dropout", "dropout")):
        if getattr(args, arg) is not None:
            values[key] = getattr(args, arg)
    if values["num_epochs"] < 1:
        ap.error(f"--epochs {values['num_epochs']}: train for at least one epoch")
    if int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0")) > 0 and not args.checkpoint \
            and int(os.environ.get("RANK", "0")) == 0:
        print("warning: torchrun may restart this run (--max-restarts), but without --checkpoint a "
              "restart trains from epoch 1", file=sys.stderr, flush=True)
    try:
        result = train(values, seed=args.seed, precision=args.precision, checkpoint=args.checkpoint,
                       threads=args.threads, log_steps=args.log_steps, save_weights=args.save_weights)
    except (DDPError, ckpt.CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        from course_tools.results import results_dir

        folder = Path(args.results_dir) if args.results_dir else results_dir()
        path = save(result, args.setting, values, folder, args.run_name)
        print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
