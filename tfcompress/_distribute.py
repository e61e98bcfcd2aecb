"""``tf.distribute`` helpers shared by quantizers, pruning callbacks and search strategies.

Two kinds of state need care under a multi-replica strategy (``MirroredStrategy`` on several
devices, ``MultiWorkerMirroredStrategy`` on several machines):

- **Batch statistics written inside the training step** (LSQ's data-dependent step size, the
  EMA ranges of ``Uniform``). In a replica context TensorFlow (2.21 here) lets each replica
  assign its own copy of a variable with ``aggregation=NONE`` (Keras' default), so without a
  reduction every replica would keep the statistic of its own shard and the copies would
  silently diverge (measured: LSQ activation step sizes 0.56 vs 0.62 on two workers).
  :func:`across_replicas` combines a statistic over all replicas first (mean, min or max), so
  every copy gets the statistic of the global batch: the value a single-process run on the
  same global batch computes (exact for min/max; for means when the per-replica batches have
  equal sizes).
- **Host-side decisions in callbacks** (pruning masks, op removal in search). Every worker runs
  its own copy of the callback on its own copy of the (all-reduced, hence identical) weights,
  so the decisions agree as long as the arithmetic is deterministic. :func:`check_workers_agree`
  verifies that with one small all-reduce and raises instead of letting workers diverge.
"""

import hashlib

import numpy as np

from tfcompress._keras import tf

REDUCTIONS = ("mean", "sum", "min", "max")


def replica_count():
    """Replicas in sync in the current replica context (1 outside a strategy or in a
    cross-replica context)."""
    ctx = tf.distribute.get_replica_context()
    return 1 if ctx is None else int(ctx.num_replicas_in_sync)


def across_replicas(value, reduce="mean"):
    """``value`` (a per-replica statistic) combined over the replicas in sync.

    Inside ``strategy.run`` (a replica context with more than one replica) returns the mean,
    sum, minimum or maximum of ``value`` over all replicas, element-wise, with no gradient;
    anywhere else returns ``value`` unchanged. Every replica must call it (it is a collective).

    Args:
        value: a tensor with the same shape on every replica.
        reduce: ``"mean"`` or ``"sum"`` (``ReplicaContext.all_reduce``), ``"min"`` or
            ``"max"`` (an ``all_gather`` of the per-replica values, then the reduction).

    Returns:
        A tensor of the shape of ``value``.
    """
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}.")
    if replica_count() <= 1:
        return value
    ctx = tf.distribute.get_replica_context()
    value = tf.stop_gradient(tf.convert_to_tensor(value))
    if reduce in ("mean", "sum"):
        op = tf.distribute.ReduceOp.MEAN if reduce == "mean" else tf.distribute.ReduceOp.SUM
        return ctx.all_reduce(op, value)
    gathered = ctx.all_gather(value[tf.newaxis], axis=0)
    return tf.reduce_min(gathered, axis=0) if reduce == "min" else tf.reduce_max(gathered, axis=0)


def replica_invariant(x):
    """Whether ``x`` is a variable or the value just read from one (its op a
    ``ReadVariableOp``): a kernel under a mirrored strategy, the same on every replica, so its
    statistics need no all-reduce (unlike a batch of activations)."""
    if isinstance(x, tf.Variable):
        return True
    op = getattr(x, "op", None)
    return op is not None and getattr(op, "type", None) == "ReadVariableOp"


def worker_count(strategy):
    """Number of worker processes ``strategy`` spans (1 unless ``MultiWorkerMirroredStrategy``
    runs with a cluster of several workers)."""
    replicas = int(strategy.num_replicas_in_sync)
    if replicas <= 1:
        return 1          # the default strategy has no worker_devices
    devices = len(strategy.extended.worker_devices) or 1
    return max(1, replicas // devices)


def fingerprint(arrays):
    """A float32 vector of 16 digest bytes of ``arrays`` (a sequence of numpy-convertible
    values, or strings), identical for identical contents."""
    h = hashlib.sha256()
    for a in arrays:
        if isinstance(a, str):
            h.update(a.encode())
        else:
            a = np.ascontiguousarray(np.asarray(a))
            h.update(str((a.dtype.str, a.shape)).encode())
            h.update(a.tobytes())
    return np.frombuffer(h.digest()[:16], np.uint8).astype(np.float32)


def check_workers_agree(strategy, arrays, what, error=RuntimeError):
    """Raise ``error`` unless every worker of ``strategy`` holds the same ``arrays``.

    A no-op with one worker. Otherwise one all-reduce (a collective: call it at the same point
    on every worker, from the cross-replica context, e.g. in a callback) of a fingerprint of
    ``arrays``; all workers see the mismatch and raise together, so none is left waiting.

    Args:
        strategy: the model's ``distribute_strategy``.
        arrays: the values that must agree (numpy arrays, variables, strings).
        what: what they are, for the message (``"the filter masks at step 20"``).
        error: the exception class to raise.
    """
    workers = worker_count(strategy)
    if workers <= 1:
        return
    digest = fingerprint([a.numpy() if hasattr(a, "numpy") else a for a in arrays])
    # sum(d) = n d_local and sum(d^2) = n d_local^2 together hold only if every d equals d_local
    # (zero variance); the byte values and their squares are exact in float32.
    local = np.concatenate([digest, digest * digest])
    with strategy.scope():
        total = strategy.reduce(tf.distribute.ReduceOp.SUM, tf.constant(local), axis=None)
    if not np.array_equal(np.asarray(total.numpy(), np.float32), local * workers):
        raise error(
            f"The {workers} workers of this MultiWorkerMirroredStrategy disagree on {what}: each "
            "worker computes them on its own from its copy of the weights, and these copies "
            "differ (non-deterministic kernels or different hardware/library versions across "
            "workers, or a callback that sees worker-local data). Run every worker with the "
            "same TensorFlow build and seeds, and enable "
            "tf.config.experimental.enable_op_determinism().")
