"""Data-parallel training of the book's AlexNet with `torch.distributed` (DDP), launched by torchrun.

    torchrun --nproc_per_node=2 -m d2l_local.ddp --setting smoke          # 2 processes, this machine
    python -m d2l_local.ddp --setting smoke                               # 1 process, no torchrun
    # two machines, one process per GPU (run the same line on both; HOST is the first machine):
    torchrun --nnodes=2 --nproc_per_node=gpu --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 \
        --rdzv-id=alexnet -m d2l_local.ddp --setting full

Every process (a "rank") holds a whole copy of the net and trains on its own shard of each global
batch: `DistributedSampler` gives rank r the examples r, r + W, r + 2W, ... of the epoch's shuffled
order, so the W shards of one step are exactly the global batch a single process would take.
During `backward`, DDP averages the gradients over the ranks (an all-reduce), so every rank takes
the same step and the copies stay identical. Backend: gloo on CPUs, nccl on GPUs (one GPU per
rank). The data are held as uint8 tensors on each rank's device and resized per batch there
(as `load_data_fashion_mnist_fast`). Losses and accuracies are summed over the ranks; only rank 0
prints the book's lines and writes `results/ddp-<W>proc.<setting>.<device>.json`.

`python -m d2l_local.ddp launch ...` runs torchrun after checking what torchrun does not: torchrun's
c10d rendezvous on a port that another program holds waits until its join timeout (600 s by
default) without saying why; `launch` stops at once with an error that names a free port.

    python -m d2l_local.ddp launch --nnodes=2 --nproc-per-node=1 --node-rank=0 \
        --rdzv-endpoint=127.0.0.1:29500 -- --setting smoke        # and --node-rank=1 beside it
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DistributedSampler

from d2l_local import models
from d2l_local.data import fashion_mnist_tensors, resize_batch
from d2l_local.device import device_name
from d2l_local.metrics import StepTimer, correct_count
from d2l_local.training import init_weights_xavier

ROOT = Path(__file__).resolve().parent.parent

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
def _setup() -> tuple[int, int, torch.device, str | None]:
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
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    if world > 1:
        dist.init_process_group(backend=backend, device_id=device if backend == "nccl" else None)
    else:
        backend = None
    return rank, world, device, backend


def _all_sum(values: list[float], device, world: int) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if world > 1:
        dist.all_reduce(t)  # sum over the ranks
    return t.tolist()


def weights_digest(net: nn.Module) -> str:
    """sha256 of every parameter's bytes: equal digests mean bit-identical weights."""
    h = hashlib.sha256()
    for name, p in net.state_dict().items():
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def train(cfg: dict, *, seed: int = 0, verbose: bool = True, save_weights: str | None = None) -> dict:
    """Train the book's AlexNet on this rank's shards; returns what rank 0 reports (on every rank)."""
    start = time.perf_counter()
    rank, world, device, backend = _setup()
    try:
        return _train(cfg, rank, world, device, backend, seed, verbose, save_weights, start)
    finally:
        if world > 1:
            dist.destroy_process_group()


def _train(cfg, rank, world, device, backend, seed, verbose, save_weights, start) -> dict:
    if cfg["batch_size"] % world:
        raise DDPError(f"global batch {cfg['batch_size']} does not split over {world} ranks; "
                       "choose a multiple of the number of processes")
    per_rank = cfg["batch_size"] // world
    t = fashion_mnist_tensors()
    images = t["train-images-idx3-ubyte"][:cfg["train_subset"]].to(device)
    labels = t["train-labels-idx1-ubyte"][:cfg["train_subset"]].long().to(device)
    test_images = t["t10k-images-idx3-ubyte"][:cfg["test_subset"]].to(device)
    test_labels = t["t10k-labels-idx1-ubyte"][:cfg["test_subset"]].long().to(device)
    # every rank shuffles with the same seed and takes every W-th example of the order
    sampler = DistributedSampler(range(len(labels)), num_replicas=world, rank=rank,
                                 shuffle=True, seed=seed, drop_last=True)

    torch.manual_seed(seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    net = models.alexnet()
    for m in net.modules():
        if isinstance(m, nn.Dropout):
            m.p = cfg["dropout"]
    net.apply(init_weights_xavier)  # the book's initialisation (train_ch6)
    net.to(device)
    initial = {k: v.detach().clone() for k, v in net.state_dict().items()}
    model = nn.parallel.DistributedDataParallel(net) if world > 1 else net
    torch.manual_seed(seed + rank)  # dropout masks differ between ranks, as they should
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"])
    loss = nn.CrossEntropyLoss()
    timer = StepTimer(device)
    step_losses, epochs = [], []
    if verbose and rank == 0:
        print(f"training on {device}, {world} process(es)" + (f" ({backend})" if backend else ""),
              flush=True)
    for epoch in range(cfg["num_epochs"]):
        sampler.set_epoch(epoch)  # a new order each epoch, the same on every rank
        order = torch.tensor(list(sampler), device=device)
        model.train()
        local = []  # per step, on the device: (sum of losses, correct, examples) of this rank
        for s in range(0, len(order), per_rank):
            idx = order[s:s + per_rank]
            X, y = resize_batch(images[idx], cfg["resize"]), labels[idx]
            timer.start()
            optimizer.zero_grad()
            y_hat = model(X)
            l = loss(y_hat, y)
            l.backward()  # DDP all-reduces (averages) the gradients here
            optimizer.step()
            timer.stop()
            local.append(torch.stack([l.detach().double() * len(y), correct_count(y_hat, y).double(),
                                      torch.tensor(float(len(y)), dtype=torch.float64, device=device)]))
        sums = torch.stack(local)  # (steps, 3)
        if world > 1:
            dist.all_reduce(sums)  # once per epoch, not once per step
        step_losses += (sums[:, 0] / sums[:, 2]).tolist()
        train_l, train_acc = (sums[:, 0].sum() / sums[:, 2].sum()).item(), \
            (sums[:, 1].sum() / sums[:, 2].sum()).item()
        # evaluation: rank r takes test examples r, r + W, ... (no padding, each counted once)
        model.eval()
        correct = total = 0
        with torch.no_grad():
            mine = torch.arange(rank, len(test_labels), world, device=device)
            for s in range(0, len(mine), per_rank):
                idx = mine[s:s + per_rank]
                correct += correct_count(net(resize_batch(test_images[idx], cfg["resize"])),
                                         test_labels[idx]).item()
                total += len(idx)
        correct, total = _all_sum([correct, total], device, world)
        test_acc = correct / total
        epochs.append(dict(epoch=epoch + 1, train_loss=train_l, train_acc=train_acc, test_acc=test_acc,
                           wall_seconds=time.perf_counter() - start))
    compute = _all_sum([timer.total()], device, world)[0] / world  # mean over the ranks
    num_examples = len(sampler) * world * cfg["num_epochs"]  # all ranks, all epochs
    digest = weights_digest(net)
    digests = [None] * world
    if world > 1:
        dist.all_gather_object(digests, digest)
    else:
        digests = [digest]
    # how far each tensor moved: a wrong gradient average (a sum, say) shows here
    update_norms = {k: (v.detach() - initial[k]).double().norm().item() for k, v in net.state_dict().items()}
    if save_weights and rank == 0:
        Path(save_weights).parent.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.cpu() for k, v in net.state_dict().items()}, save_weights)
    result = dict(world_size=world, backend=backend, device=str(device), nnodes=world // int(
        os.environ.get("LOCAL_WORLD_SIZE", "1")), per_rank_batch=per_rank, seed=seed,
        epochs=epochs, step_losses=step_losses, train_loss=epochs[-1]["train_loss"],
        train_acc=epochs[-1]["train_acc"], test_acc=epochs[-1]["test_acc"],
        num_examples=num_examples, compute_seconds=compute,
        examples_per_sec=num_examples / compute, wall_seconds=time.perf_counter() - start,
        weights_digests=digests, update_norms=update_norms)
    result["wall_examples_per_sec"] = num_examples / result["wall_seconds"]
    if verbose and rank == 0:
        print(f"loss {train_l:.3f}, train acc {train_acc:.3f}, test acc {test_acc:.3f}")
        print(f"{result['examples_per_sec']:.1f} examples/sec on {device} "
              f"({world} process(es), {result['wall_examples_per_sec']:.1f} end to end)", flush=True)
    return result


def save(result: dict, setting: str, values: dict, results_dir: Path) -> Path:
    """Write `ddp-<W>proc.<setting>.<device>.json` (rank 0 only calls this)."""
    from d2l_local.results import versions

    record = dict(notebook="ddp", setting=setting, setting_values=values, **result,
                  device_name=device_name(result["device"]), cpu_threads=torch.get_num_threads(),
                  versions=versions(), date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"ddp-{result['world_size']}proc.{setting}.{device_name(result['device'])}.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


def _is_local(host: str) -> bool:
    names = {"localhost", socket.gethostname(), socket.getfqdn()}
    try:
        return host in names or socket.gethostbyname(host) in {"127.0.0.1", "0.0.0.0"} or \
            socket.gethostbyname(host) == socket.gethostbyname(socket.gethostname())
    except OSError:
        return False


def launch(argv: list[str]) -> int:
    """`python -m d2l_local.ddp launch [torchrun options] -- [training options]`.

    Checks what torchrun does not (a taken rendezvous port on the machine that hosts it), then
    runs torchrun with a bounded join timeout and returns its exit status.
    """
    ap = argparse.ArgumentParser(prog="python -m d2l_local.ddp launch")
    ap.add_argument("--nnodes", type=int, default=1)
    ap.add_argument("--nproc-per-node", "--nproc_per_node", default="2")
    ap.add_argument("--node-rank", "--node_rank", type=int, default=0,
                    help="0 on the machine that hosts the rendezvous (its port is checked)")
    ap.add_argument("--rdzv-endpoint", "--rdzv_endpoint", default=None, help="host:port")
    ap.add_argument("--rdzv-id", "--rdzv_id", default="d2l-ddp")
    ap.add_argument("--join-timeout", type=int, default=120, help="seconds to wait for all nodes")
    args, rest = ap.parse_known_args(argv)
    rest = [a for a in rest if a != "--"]
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={args.nproc_per_node}",
           f"--nnodes={args.nnodes}"]
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
    cmd += ["-m", "d2l_local.ddp", *rest]
    return subprocess.run(cmd).returncode


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["launch"]:
        return launch(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setting", choices=list(SETTINGS), default="smoke")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-subset", type=int, default=None, help="the first n training images")
    ap.add_argument("--batch-size", type=int, default=None, help="the global batch (all ranks)")
    ap.add_argument("--results-dir", default=None,
                    help="default: $D2L_RESULTS_DIR, else results/ (smoke: build/smoke-results/)")
    ap.add_argument("--save-weights", default=None, help="rank 0 saves the final state_dict here")
    args = ap.parse_args(argv)
    values = dict(SETTINGS[args.setting])
    for key in ("train_subset", "batch_size"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    try:
        result = train(values, seed=args.seed, save_weights=args.save_weights)
    except DDPError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        env = os.environ.get("D2L_RESULTS_DIR")
        default = ROOT / ("build/smoke-results" if args.setting == "smoke" else "results")
        path = save(result, args.setting, values, Path(args.results_dir or env or default))
        print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
