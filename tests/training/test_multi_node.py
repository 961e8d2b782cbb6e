"""Two nodes x one process, simulated on this machine through Lightning's own multi-node
mechanism (its environment variables and ``num_nodes``; loopback only): one run in one
store on a shared folder, one run id, one segment stream per global rank, and rows that
read back complete and de-duplicated."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from store import Store, dynamics, epoch_metrics

pytest.importorskip("lightning")
sys.path.insert(0, str(Path(__file__).parent))
from multi_node_worker import NUM_SAMPLES, dataset  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("multi_node_worker.py")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_record_one_run_with_a_segment_stream_per_rank(tmp_path):
    store_path = tmp_path / "shared" / "store"
    port = str(free_port())
    nodes = []
    for node_rank in (0, 1):
        env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=port, NODE_RANK=str(node_rank),
                   LOCAL_RANK="0", WORLD_SIZE="2", GLOO_SOCKET_IFNAME="lo", PYTHONPATH=str(ROOT))
        nodes.append(subprocess.Popen([sys.executable, str(WORKER), str(store_path), "2"], cwd=ROOT, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs
    said = [re.search(r"rank (\d) of 2: run (\S+)", output) for output in outputs]
    assert all(said), outputs
    assert sorted(int(match.group(1)) for match in said) == [0, 1]  # two global ranks, one per node
    store = Store(store_path)
    (run_id,) = store.run_ids()
    assert {match.group(2) for match in said} == {run_id}  # both nodes agree on the run id
    info = store.run_info(run_id)
    assert info["status"] == "finished" and info["world_size"] == 2 and info["epochs_done"] == 2

    # one segment stream per global rank: compacted, each rank's rows are kept
    raw = pd.read_parquet(store.run_dir(run_id) / "presentations.parquet")
    assert sorted(raw["rank"].unique()) == [0, 1]
    # 41 samples over 2 ranks: 21 each an epoch, one of them the sampler's padding duplicate,
    # which compaction keeps once
    per_rank = raw.groupby(["epoch", "rank"]).size()
    assert per_rank.tolist() == [21, 20, 21, 20] or per_rank.tolist() == [20, 21, 20, 21], per_rank
    assert not raw.duplicated(["epoch", "sample_id"]).any()
    rows = dynamics(store, run_id)
    expected = sorted(dataset().sample_ids.tolist())
    for epoch in (0, 1):
        assert sorted(rows.loc[rows["epoch"] == epoch, "sample_id"].tolist()) == expected
    assert len(rows) == 2 * NUM_SAMPLES
    assert epoch_metrics(store, run_id)["epoch"].tolist() == [0, 1]
