"""`course_tools.ddp`: torchrun runs on this machine give the weights and losses of one process, and
survive a lost worker: torchrun restarts the group, which resumes from the last checkpoint and ends
with the weights of a run that was never stopped.

All launches start at once (module fixture), so that their start-up (importing torch, joining the
rendezvous) overlaps. Each trains the book's AlexNet at 224x224 on a few images:
- `smoke` (2 steps of a global batch of 4, no dropout): one process and two;
- `RESTART` (2 epochs of 4 steps, dropout 0.5, a checkpoint, one thread per rank): an unbroken
  2-process run; the same with rank 1 SIGKILLed by its pid mid-epoch 2; the same as two torchrun
  nodes, with the whole of node 1 (agent and worker) killed mid-epoch 2 and started again;
- a node alone that waits for another that never comes.
Every process is ended by its pid when the tests end (torchrun's workers run in their own sessions:
ddp.stop ends the agent, then each worker). Measured on the 2-core machine with other work beside
it (load average 6): 69 s for the module, 108 CPU-seconds. TIMEOUT_S bounds the wait for every
launch, KILL_AT_S the wait for the line to kill at.
"""

import json
import os
import socket
import sys
import time

import pytest
import torch

from conftest import ROOT
from course_tools import ddp, models
from d2l_local import checkpoint as ckpt
from d2l_local import load_data_fashion_mnist_fast, train_ch6

TIMEOUT_S = 300   # per launch, from the fixture's start to its end (generous: 2 shared cores)
KILL_AT_S = 200   # for the line after which a rank is killed
JOIN_TIMEOUT_S = 5  # the lone node's rendezvous waits this long for the other

RESTART = ["--epochs", "2", "--train-subset", "16", "--dropout", "0.5", "--threads", "1", "--log-steps"]
MID_EPOCH_2 = "epoch 2/2, step 1/4"  # rank 0 prints it after the first of 4 steps of epoch 2
ENV = {**os.environ, "D2L_PROGRESS": "0",
       "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}  # what restarts need (ddp.check_restartable)


def _torchrun(*flags):
    return [sys.executable, "-m", "torch.distributed.run", *flags, "-m", "course_tools.ddp"]


def _args(out, *more):
    return ["--setting", "smoke", "--results-dir", str(out), *more]


def _node(port, rdzv_id, is_host, *more):
    """torchrun's standard multi-node flags, as on two machines (here both on 127.0.0.1).

    On a real machine torchrun finds out from its address whether it hosts the rendezvous store;
    here both nodes share the address, so `is_host` says it: node 0 hosts it and stays up.
    """
    return _torchrun("--nnodes=2", "--nproc_per_node=1", "--rdzv-backend=c10d",
                     f"--rdzv-endpoint=127.0.0.1:{port}", f"--rdzv-id={rdzv_id}",
                     f"--rdzv-conf=join_timeout=120,is_host={is_host}", *more)


def _checkpoint_epoch(path) -> int:
    return torch.load(path, mmap=True, weights_only=True)["epoch"]  # without reading the weights


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{name: (exit status, output, results dir, extra)} of every launch, started together."""
    tmp = tmp_path_factory.mktemp("ddp")
    kill_port, lone_port = ddp.free_port(), ddp.free_port()
    restart = ["--max-restarts=1"]

    def restartable(name, checkpoint):  # the training options of the RESTART runs
        return _args(tmp / name, *RESTART, "--checkpoint", str(tmp / checkpoint))

    commands = {
        "single": [sys.executable, "-m", "course_tools.ddp", *_args(tmp / "single")],
        "torchrun": _torchrun("--standalone", "--nproc_per_node=2") + _args(tmp / "torchrun"),
        "unbroken": _torchrun("--standalone", "--nproc_per_node=2", *restart)
        + restartable("unbroken", "unbroken.pt"),
        "killed": _torchrun("--standalone", "--nproc_per_node=2", *restart)
        + restartable("killed", "killed.pt"),
        # two nodes, one checkpoint file (storage both read), a results folder each
        "node0": _node(kill_port, "kill-node", 1, *restart) + restartable("node0", "nodes.pt"),
        "node1": _node(kill_port, "kill-node", 0, *restart) + restartable("node1", "nodes.pt"),
        "node1-again": _node(kill_port, "kill-node", 0, *restart) + restartable("node1-again", "nodes.pt"),
        "lone": [sys.executable, "-m", "course_tools.ddp", "launch", "--nnodes=2", "--nproc-per-node=1",
                 f"--rdzv-endpoint=127.0.0.1:{lone_port}", f"--join-timeout={JOIN_TIMEOUT_S}",
                 "--", "--setting", "smoke", "--results-dir", str(tmp / "lone")],
    }
    launches = {name: ddp.Launch(cmd, cwd=ROOT, env=ENV) for name, cmd in commands.items()
                if name != "node1-again"}
    extra = {name: {} for name in commands}
    try:
        # rank 1 of "killed": SIGKILL by its pid once rank 0 has printed the first step of epoch 2
        launches["killed"].wait_for(MID_EPOCH_2, KILL_AT_S)
        extra["killed"]["pid"] = launches["killed"].kill_rank(1)
        extra["killed"]["checkpoint_epoch"] = _checkpoint_epoch(tmp / "killed.pt")
        # node 1 lost whole (its agent and its worker, each by its pid) mid-epoch 2, then started
        # again; rank 0, which prints, runs on either node
        deadline = time.monotonic() + KILL_AT_S
        while not any(MID_EPOCH_2 in launches[n].output for n in ("node0", "node1")):
            assert time.monotonic() < deadline, launches["node0"].output[-3000:]
            time.sleep(0.02)
        extra["node1"]["pids"] = ddp.process_tree(launches["node1"].proc.pid)
        ddp.kill(extra["node1"]["pids"])
        extra["node1"]["checkpoint_epoch"] = _checkpoint_epoch(tmp / "nodes.pt")
        launches["node1"].finish(60)
        launches["node1-again"] = ddp.Launch(commands["node1-again"], cwd=ROOT, env=ENV)
        out = {}
        for name, launch in launches.items():
            rc, seconds = launch.finish(max(1.0, TIMEOUT_S - (time.monotonic() - launch.started)))
            out[name] = (rc, launch.output.replace("\r", ""), tmp / name, dict(extra[name], seconds=seconds))
    finally:
        for launch in launches.values():
            launch.stop()
    out["tmp"] = tmp
    return out


def _result(run, world, name="smoke"):
    rc, text, folder, _ = run
    assert rc == 0, text[-3000:]
    [path] = folder.glob(f"ddp-{world}proc.{name}.*.json")
    return json.loads(path.read_text()), text


def _two_nodes(runs):
    """The two-node job's results (written by rank 0, on either node) and the output of its nodes."""
    names = ("node0", "node1", "node1-again")
    for name in ("node0", "node1-again"):
        assert runs[name][0] == 0, runs[name][1][-3000:]
    [path] = [p for name in names for p in runs[name][2].glob("ddp-2proc.smoke.*.json")]
    return json.loads(path.read_text()), "".join(runs[name][1] for name in names)


def test_ddp_matches_one_process(runs):
    single, _ = _result(runs["single"], 1)
    multi, text = _result(runs["torchrun"], 2)
    assert multi["world_size"] == 2 and multi["backend"] == "gloo" and multi["per_rank_batch"] == 2
    # every rank ends with bit-identical weights
    assert len(multi["weights_digests"]) == 2 and len(set(multi["weights_digests"])) == 1
    # the same global batches, so the same losses and weights as one process (up to rounding)
    assert len(multi["step_losses"]) == len(single["step_losses"]) == 2
    assert multi["step_losses"] == pytest.approx(single["step_losses"], abs=1e-4)
    assert single["step_losses"][1] < single["step_losses"][0] - 0.01  # the steps changed the net
    # each tensor moved as far as in one process (summed instead of averaged gradients would not)
    moved = single["update_norms"]
    assert set(moved) == set(multi["update_norms"]) and all(v > 0 for v in moved.values())
    assert multi["update_norms"] == pytest.approx(moved, rel=1e-3)
    # only rank 0 prints the book's lines; the precision asked for is used and recorded
    assert text.count("loss ") == 1 and text.count("examples/sec on cpu") == 1
    assert multi["precision"] == "fp32" and "precision: fp32, NCHW" in text
    assert multi["resumed_from_epoch"] is None and multi["restarts"] == 0


def test_unbroken_run_wrote_a_checkpoint_per_epoch(runs):
    unbroken, text = _result(runs["unbroken"], 2)
    assert [e["epoch"] for e in unbroken["epochs"]] == [1, 2] and len(unbroken["step_losses"]) == 8
    assert unbroken["resumed_from_epoch"] is None and unbroken["restarts"] == 0
    saved = ckpt.load(runs["tmp"] / "unbroken.pt")
    assert saved["epoch"] == 2 and saved["sampler"] == {"seed": 0, "epoch": 2}
    assert len(saved["rank_rngs"]) == 2  # each rank's own generators (its dropout masks)
    assert not torch.equal(saved["rank_rngs"][0]["torch"], saved["rank_rngs"][1]["torch"])
    assert "resuming" not in text


@pytest.mark.parametrize("name", ["killed", "two nodes"])
def test_a_lost_worker_resumes_to_the_unbroken_weights(runs, name):
    """Rank 1 killed (or the whole of node 1) mid-epoch 2: torchrun restarts the group, which
    resumes from the checkpoint of epoch 1, redoes epoch 2 and ends bit-identical to the unbroken run."""
    unbroken, _ = _result(runs["unbroken"], 2)
    resumed, text = _result(runs["killed"], 2) if name == "killed" else _two_nodes(runs)
    killed = runs["killed" if name == "killed" else "node1"][3]
    assert killed["checkpoint_epoch"] == 1, "the kill came after epoch 2 had ended"
    assert resumed["resumed_from_epoch"] == 1 and resumed["restarts"] >= 1
    assert "resuming from" in text and "1 of 2 epochs done" in text
    assert text.count(MID_EPOCH_2) == 2  # epoch 2 was started, lost, and run again
    if name == "killed":  # the process killed was rank 1 (rank 0 prints the ranks' process ids)
        assert "process ids by rank: 0: " in text and f", 1: {killed['pid']}\n" in text
    # the same global batches in the same order, the same dropout masks: the same bits (two
    # processes on one machine or two nodes: the same computation, one thread per rank)
    assert resumed["weights_digests"] == unbroken["weights_digests"]
    assert resumed["step_losses"] == unbroken["step_losses"]
    assert [e["test_acc"] for e in resumed["epochs"]] == [e["test_acc"] for e in unbroken["epochs"]]
    assert resumed["num_examples"] == unbroken["num_examples"] == 32


def test_a_node_killed_whole_rejoined_the_job(runs):
    result, _ = _two_nodes(runs)
    assert result["nnodes"] == 2 and result["world_size"] == 2
    assert len(runs["node1"][3]["pids"]) == 2  # its torchrun agent and its worker
    assert runs["node1"][0] == -9  # SIGKILL


def test_a_node_that_never_joins_is_a_clear_error(runs):
    rc, text, folder, extra = runs["lone"]
    assert rc == 2, text[-3000:]
    assert "not all 2 nodes joined" in text and f"--join-timeout={JOIN_TIMEOUT_S}" in text
    # torchrun's own wait would be 600 s; here the join timeout plus start-up under load
    assert extra["seconds"] < JOIN_TIMEOUT_S + 90
    assert not folder.exists()  # nothing trained


def _fast_data(train_subset):
    return load_data_fashion_mnist_fast(4, resize=224, train_subset=train_subset, test_subset=4)


def test_train_ch6_resumes_a_distributed_checkpoint(runs):
    """The 2-process run's checkpoint read by the single-process train_ch6: all epochs are done, so
    it trains nothing and holds the distributed run's weights and history."""
    unbroken, _ = _result(runs["unbroken"], 2)
    net = models.alexnet()
    h = train_ch6(net, *_fast_data(16), 2, 0.05, "cpu", momentum=0.9, verbose=False,
                  checkpoint=runs["tmp"] / "unbroken.pt")
    assert ddp.weights_digest(net) == unbroken["weights_digests"][0]
    assert [e["train_loss"] for e in h.epochs] == [e["train_loss"] for e in unbroken["epochs"]]
    assert h.num_examples == unbroken["num_examples"]


def _one_process(monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "TORCHELASTIC_MAX_RESTARTS"):
        monkeypatch.delenv(var, raising=False)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)  # course_tools.ddp sets this process's threads


def test_distributed_run_resumes_a_train_ch6_checkpoint(tmp_path, monkeypatch):
    """A checkpoint of train_ch6 read by course_tools.ddp (one process, no torchrun): epoch 1 is done,
    so it trains nothing and holds train_ch6's weights and history."""
    path = tmp_path / "run.pt"
    net = models.alexnet()
    h = train_ch6(net, *_fast_data(8), 1, 0.05, "cpu", momentum=0.9, verbose=False, checkpoint=path)
    for _ in _one_process(monkeypatch):
        result = ddp.train(dict(ddp.SETTINGS["smoke"], num_epochs=1), checkpoint=path, verbose=False)
    assert result["resumed_from_epoch"] == 1
    assert result["weights_digests"] == [ddp.weights_digest(net)]
    assert [e["test_acc"] for e in result["epochs"]] == [e["test_acc"] for e in h.epochs]


def test_another_runs_checkpoint_is_refused(runs, monkeypatch):
    cfg = dict(ddp.SETTINGS["smoke"], num_epochs=2, train_subset=16, dropout=0.5)
    for _ in _one_process(monkeypatch):
        with pytest.raises(ckpt.CheckpointError, match="seed 0 there, 1 now.*delete the file"):
            ddp.train(cfg, seed=1, checkpoint=runs["tmp"] / "unbroken.pt", verbose=False)
        with pytest.raises(ckpt.CheckpointError, match="2 epochs done, more than num_epochs=1"):
            ddp.train(dict(cfg, num_epochs=1), checkpoint=runs["tmp"] / "unbroken.pt", verbose=False)


def test_taken_rendezvous_port_is_a_clear_error(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        start = time.monotonic()
        rc = ddp.main(["launch", "--nnodes=2", "--nproc-per-node=1", "--node-rank=0",
                       f"--rdzv-endpoint=127.0.0.1:{port}", "--", "--setting", "smoke"])
        assert time.monotonic() - start < 30  # no waiting for a join timeout (minutes)
    err = capsys.readouterr().err
    assert rc == 2 and f"127.0.0.1:{port} is already in use" in err and "--rdzv-endpoint=" in err


def test_bad_launches_are_clear_errors(capsys, monkeypatch):
    assert ddp.main(["launch", "--nnodes=2", "--", "--setting", "smoke"]) == 2
    assert "--rdzv-endpoint" in capsys.readouterr().err
    assert ddp.main(["launch", "--rdzv-endpoint=127.0.0.1", "--", "--setting", "smoke"]) == 2
    assert "HOST:PORT" in capsys.readouterr().err
    # restarts without a checkpoint would start from epoch 1
    assert ddp.main(["launch", "--max-restarts=2", "--", "--setting", "smoke"]) == 2
    assert "without --checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ddp.main(["--setting", "smok"])
    # torchrun with restarts but its store shared with the workers: refused before training
    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", "1")
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    assert ddp.main(["--setting", "smoke", "--checkpoint", "unused.pt"]) == 2
    assert "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1" in capsys.readouterr().err


def test_batch_must_split_over_the_ranks():
    with pytest.raises(ddp.DDPError, match="multiple of the number of processes"):
        ddp._train(dict(ddp.SETTINGS["smoke"]), 0, 3, torch.device("cpu"), "gloo")


def test_an_unknown_precision_is_a_clear_error():
    with pytest.raises(ValueError, match="choose one of auto, fp32, bf16"):
        ddp._train(dict(ddp.SETTINGS["smoke"]), 0, 1, torch.device("cpu"), None, precision="fp16")

