"""The local cluster launcher and the tf.distribute helpers, without starting TensorFlow
workers (fast)."""

import json

import numpy as np
import pytest

import cluster
from tfcompress._distribute import (
    across_replicas, check_workers_agree, fingerprint, replica_count, worker_count,
)
from tfcompress._keras import tf


def test_tf_config_names_every_worker_and_this_task():
    cfg = json.loads(cluster.tf_config([1234, 5678], 1))
    assert cfg == {"cluster": {"worker": ["127.0.0.1:1234", "127.0.0.1:5678"]},
                   "task": {"type": "worker", "index": 1}}
    ports = cluster.free_ports(3)
    assert len(set(ports)) == 3 and all(p > 0 for p in ports)


def test_worker_env_selects_keras2_and_drops_a_stray_tf_config(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", '{"stale": 1}')
    env = cluster.worker_env({"X": "1"})
    assert env["TF_USE_LEGACY_KERAS"] == "1" and env["X"] == "1" and "TF_CONFIG" not in env


def test_a_failing_worker_takes_the_launch_down(tmp_path):
    """A worker that fails ends the launch at once: the other one (here blocked as if in a
    collective) is killed, not left running until the time limit."""
    script = tmp_path / "bad.py"
    script.write_text("import sys, time\n"
                      "if sys.argv[sys.argv.index('--worker-index') + 1] == '0':\n"
                      "    print('worker 0 fails', flush=True)\n"
                      "    sys.exit(3)\n"
                      "time.sleep(600)\n")
    launch = cluster.start_workers(script, [], workers=2, timeout=60, log_dir=tmp_path)
    with pytest.raises(cluster.WorkerFailure, match="worker 0 exited with 3") as err:
        launch.wait()
    assert "worker 0 fails" in str(err.value)
    assert all(p.poll() is not None for p in launch.procs)


def test_a_hung_launch_is_killed_at_its_time_limit(tmp_path):
    script = tmp_path / "hang.py"
    script.write_text("import time\ntime.sleep(600)\n")
    launch = cluster.start_workers(script, [], workers=2, timeout=1, log_dir=tmp_path)
    with pytest.raises(cluster.WorkerFailure, match="timeout"):
        launch.wait()
    assert all(p.poll() is not None for p in launch.procs)


def test_helpers_are_no_ops_without_a_multi_replica_strategy():
    x = tf.constant([1.0, -2.0])
    assert replica_count() == 1
    for reduce in ("mean", "sum", "min", "max"):
        assert across_replicas(x, reduce) is x
    with pytest.raises(ValueError, match="reduce must be one of"):
        across_replicas(x, "median")
    strategy = tf.distribute.get_strategy()
    assert worker_count(strategy) == 1
    check_workers_agree(strategy, [np.ones(3)], "anything")      # one worker: nothing to check


def test_fingerprint_tells_contents_apart():
    a = fingerprint([np.arange(4, dtype=np.float32), "state"])
    assert a.shape == (16,) and a.dtype == np.float32
    assert np.array_equal(a, fingerprint([np.arange(4, dtype=np.float32), "state"]))
    assert not np.array_equal(a, fingerprint([np.arange(4, dtype=np.float64), "state"]))
    assert not np.array_equal(a, fingerprint([np.arange(4, dtype=np.float32)[::-1], "state"]))
    assert not np.array_equal(a, fingerprint([np.arange(4, dtype=np.float32), "other"]))
