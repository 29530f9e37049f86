"""`d2l_local.ddp`: torchrun runs on this machine give the weights and losses of one process.

All launches of the module start at once (module fixture) so that their start-up (importing
torch, joining the rendezvous) overlaps; every subprocess has a timeout. Each run trains the
book's AlexNet in the `smoke` setting: 2 steps of a global batch of 4 at 224x224, no dropout.
"""

import json
import os
import socket
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT
from d2l_local import ddp

TIMEOUT_S = 170  # per launch; on an idle 2-core machine all of them together take about 20 s


def _module(*args):
    return [sys.executable, "-m", "d2l_local.ddp", *args]


def _smoke_args(out):
    return ["--setting", "smoke", "--results-dir", str(out)]


def _node(node_rank, port, out):
    """torchrun's standard multi-node flags, as on two machines (here both on 127.0.0.1)."""
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
            f"--node-rank={node_rank}", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}",
            "--rdzv-id=test-two-nodes", "--rdzv-conf=join_timeout=120", "-m", "d2l_local.ddp",
            *_smoke_args(out)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{name: (CompletedProcess-like, results dir)} for every launch, started together."""
    tmp = tmp_path_factory.mktemp("ddp")
    port = ddp.free_port()
    launches = {
        "single": _module(*_smoke_args(tmp / "single")),
        "torchrun": [sys.executable, "-m", "torch.distributed.run", "--standalone",
                     "--nproc_per_node=2", "-m", "d2l_local.ddp", *_smoke_args(tmp / "torchrun")],
        # two "nodes" on this machine, one process each, c10d rendezvous on 127.0.0.1
        "node0": _node(0, port, tmp / "node0"),
        "node1": _node(1, port, tmp / "node1"),
    }
    env = {**os.environ, "D2L_PROGRESS": "0"}
    procs = {}
    for name, cmd in launches.items():
        procs[name] = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + TIMEOUT_S
    out = {}
    try:
        for name, p in procs.items():
            text, _ = p.communicate(timeout=max(1, deadline - time.monotonic()))
            out[name] = (p.returncode, text, tmp / name)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    return out


def _result(run, world):
    rc, text, folder = run
    assert rc == 0, text[-3000:]
    [path] = folder.glob(f"ddp-{world}proc.smoke.*.json")
    return json.loads(path.read_text()), text


@pytest.mark.parametrize("name", ["torchrun", "node0"])
def test_ddp_matches_one_process(runs, name):
    single, _ = _result(runs["single"], 1)
    multi, text = _result(runs[name], 2)
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
    # only rank 0 prints the book's lines
    assert text.count("loss ") == 1 and text.count("examples/sec on cpu") == 1


def test_two_nodes_ran_as_one_job(runs):
    node0, _ = _result(runs["node0"], 2)
    rc, text, folder = runs["node1"]
    assert rc == 0, text[-3000:]
    assert node0["nnodes"] == 2
    # the rank-0 process runs on one node only; it alone wrote results
    assert len(list((folder.parent / "node0").glob("*.json"))) + len(list(folder.glob("*.json"))) == 1


def test_taken_rendezvous_port_is_a_clear_error(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        start = time.monotonic()
        rc = ddp.main(["launch", "--nnodes=2", "--nproc-per-node=1", "--node-rank=0",
                       f"--rdzv-endpoint=127.0.0.1:{port}", "--", "--setting", "smoke"])
        assert time.monotonic() - start < 5  # no waiting for a join timeout
    err = capsys.readouterr().err
    assert rc == 2 and f"127.0.0.1:{port} is already in use" in err and "--rdzv-endpoint=" in err


def test_bad_launches_are_clear_errors(capsys):
    assert ddp.main(["launch", "--nnodes=2", "--", "--setting", "smoke"]) == 2
    assert "--rdzv-endpoint" in capsys.readouterr().err
    assert ddp.main(["launch", "--rdzv-endpoint=127.0.0.1", "--", "--setting", "smoke"]) == 2
    assert "HOST:PORT" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ddp.main(["--setting", "smok"])


def test_batch_must_split_over_the_ranks(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ddp.DDPError, match="multiple of the number of processes"):
        ddp._train(dict(ddp.SETTINGS["smoke"]), 0, 3, torch.device("cpu"), "gloo", 0, False, None, 0.0)
