"""A local ``MultiWorkerMirroredStrategy`` cluster for tests and benchmarks: N worker processes
on this machine, each with its own ``TF_CONFIG`` pointing at ``127.0.0.1`` ports.

This is the same pattern a user runs on N machines (one ``TF_CONFIG`` per machine, the same
script everywhere); here the "machines" are processes on free local ports. Every launch is
bounded: each worker gets a wall-clock limit, a collective timeout (``--collective-timeout``
is passed to the worker script to build its strategy with), and on any failure or timeout
every worker still running is killed, so a hung collective never outlives the test.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def free_ports(n):
    """``n`` distinct TCP ports that were free on 127.0.0.1 a moment ago."""
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def tf_config(ports, index):
    """The ``TF_CONFIG`` of worker ``index`` in a cluster of ``127.0.0.1`` workers."""
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def worker_env(extra=None):
    """The environment of a worker: Keras 2 selected before TensorFlow loads, no GPU (the
    workers share this machine's CPU), quiet TensorFlow logs, one intra-op thread each (two
    workers on two cores), the repository importable."""
    env = dict(os.environ)
    env.update({"TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
                "CUDA_VISIBLE_DEVICES": "", "PYTHONHASHSEED": "0",
                "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)]
                                              + [p for p in [env.get("PYTHONPATH")] if p])})
    env.pop("TF_CONFIG", None)
    env.update(extra or {})
    return env


class WorkerFailure(AssertionError):
    """A worker exited non-zero or ran past its time limit (the message has the log tails)."""


def _tail(path, n=4000):
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return "<no log>"
    keep = [ln for ln in text.splitlines()
            if not ln.startswith(("W0000", "I0000", "WARNING: All log messages"))]
    return "\n".join(keep)[-n:]


class Launch:
    """Worker processes started by :func:`start_workers`; :meth:`wait` collects them."""

    def __init__(self, script, args, workers, timeout, log_dir, env):
        self.deadline = time.monotonic() + timeout
        self.start = time.monotonic()
        self.procs, self.logs = [], []
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        ports = free_ports(workers)
        try:
            for i in range(workers):
                log = self.log_dir / f"worker{i}.log"
                self.logs.append(log)
                cmd = [sys.executable, str(script), *map(str, args),
                       "--worker-index", str(i), "--workers", str(workers)]
                extra = dict(env or {})
                if workers > 1:
                    extra["TF_CONFIG"] = tf_config(ports, i)
                with open(log, "w") as fh:
                    self.procs.append(subprocess.Popen(
                        cmd, stdout=fh, stderr=subprocess.STDOUT, env=worker_env(extra),
                        start_new_session=True))
        except BaseException:
            self.kill()
            raise

    def kill(self):
        """SIGKILL every worker still running (each runs in its own process group)."""
        for p in self.procs:
            if p.poll() is None:
                _kill(p)

    def wait(self):
        """Block until every worker exited; ``{"wall_s", "logs"}``.

        Raises:
            WorkerFailure: a worker exited non-zero or the time limit passed (then all the
                workers are killed); the message holds the tail of every worker's log.
        """
        try:
            failed = _wait(self.procs, self.deadline)
        finally:
            self.kill()                 # never leave a worker behind
        wall = time.monotonic() - self.start
        if failed is None:
            return {"wall_s": wall, "logs": [str(p) for p in self.logs]}
        text = "\n".join(f"--- worker {i} (exit {p.returncode}) ---\n{_tail(log)}"
                         for i, (p, log) in enumerate(zip(self.procs, self.logs)))
        raise WorkerFailure(f"{failed} after {wall:.0f} s; worker logs:\n{text}")


def start_workers(script, args=(), *, workers=2, timeout=240, log_dir, env=None):
    """Start ``python script *args`` as ``workers`` MultiWorkerMirroredStrategy workers.

    Every worker gets ``TF_CONFIG`` (its index in a cluster of free 127.0.0.1 ports; none for
    a single worker) and ``--worker-index i --workers n`` appended to ``args``; its stdout and
    stderr go to ``log_dir/worker<i>.log``.

    Args:
        script: the worker script.
        args: its arguments.
        workers: the cluster size (1: a plain process, the baseline of the benchmark).
        timeout: wall-clock seconds from now until :meth:`Launch.wait` kills every worker.
        log_dir: the folder of the logs.
        env: extra environment variables.

    Returns:
        A :class:`Launch`.
    """
    return Launch(script, args, workers, timeout, log_dir, env)


def run_workers(script, args=(), *, retries=1, **kwargs):
    """:func:`start_workers` then :meth:`Launch.wait`, relaunching up to ``retries`` times
    when a chosen port was taken before the worker bound it."""
    for attempt in range(retries + 1):
        try:
            return start_workers(script, args, **kwargs).wait()
        except WorkerFailure as err:
            if attempt >= retries or "Address already in use" not in str(err):
                raise


def _wait(procs, deadline):
    """None when every process exited 0; else why not (the others are killed by the caller)."""
    pending = list(procs)
    while pending:
        for p in list(pending):
            rc = p.poll()
            if rc is None:
                continue
            pending.remove(p)
            if rc != 0:
                return f"worker {procs.index(p)} exited with {rc}"
        if time.monotonic() > deadline:
            return "timeout"
        time.sleep(0.1)
    return None


def _kill(proc):
    """SIGKILL the worker's process group (it was started in its own session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.wait(timeout=30)
