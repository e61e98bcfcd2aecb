"""One worker of the multi-worker tests (started by ``cluster.run_workers``, ``TF_CONFIG`` set).

    python tests/distributed/worker.py --phase main   --out DIR --backup DIR
    python tests/distributed/worker.py --phase resume --out DIR --backup DIR

``main``: statistics combined over the workers, the binary, LSQ and pruning runs to the end,
then the pruning and BNAS runs with ``BackupAndRestore``, stopped by a simulated preemption
after an epoch. ``resume`` (new processes): these two runs restart from the backup and finish;
then a deliberately desynchronized pruning step must raise on both workers. Each worker writes
its end states to ``DIR/<phase>_worker<i>.npz`` and its log to ``DIR/<phase>_worker<i>.json``.
"""

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"      # before TensorFlow loads (tfcompress also does it)

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

T0 = time.time()
import numpy as np  # noqa: E402

from tfcompress._keras import keras, tf  # noqa: E402

import cases  # noqa: E402

PREEMPT = {"prune": 1, "nas": 2}       # epoch (0-based) after which the run is "preempted"


class Preempted(Exception):
    pass


class PreemptAfter(keras.callbacks.Callback):
    """Stops training by raising after epoch ``epoch`` ends (after the backup was written:
    list it after ``BackupAndRestore``), as a preempted machine would."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise Preempted(f"preempted after epoch {epoch}")


def make_strategy(timeout):
    # The collective timeout bounds every all-reduce: a worker that died or diverged in its
    # collective sequence makes the others fail after `timeout` s instead of hanging.
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout)
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def barrier(strategy, out_dir, phase, index, workers, timeout=60):
    """All workers reach this point (an all-reduce) and none exits before all have passed it
    (files; gRPC peers may still read from a worker that finished its last collective)."""
    with strategy.scope():
        strategy.reduce(tf.distribute.ReduceOp.SUM, tf.constant(1.0), axis=None)
    Path(out_dir, f"{phase}_done{index}").write_text("ok")
    deadline = time.time() + timeout
    while time.time() < deadline:
        if all(Path(out_dir, f"{phase}_done{i}").exists() for i in range(workers)):
            return
        time.sleep(0.05)
    raise TimeoutError("the other workers did not reach the final barrier")


def desync_check(strategy, index):
    """Make worker 1's copy of a kernel differ (as different hardware could), then run one
    pruning step: the callback must refuse on every worker instead of letting the masks
    diverge. Returns the error message (None if nothing was raised)."""
    from tfcompress.errors import PruningError
    from tfcompress.pruning import FilterPruning, PolynomialDecay

    ctx = cases.Context(strategy)
    x, y = cases.mnist14(ctx.workers * ctx.batch)
    with strategy.scope():
        inp = keras.Input((14, 14, 1))
        h = keras.layers.Conv2D(8, 3, name="c1")(inp)
        h = keras.layers.GlobalAveragePooling2D()(h)
        base = keras.Model(inp, keras.layers.Dense(10, name="d")(h))
        cases.init_weights(base, 7)
        pruner = FilterPruning(0.5, "l1", schedule=PolynomialDecay(0.0, 0.5, 1, 1, frequency=1))
        model = pruner.prepare(base)
        model.compile(keras.optimizers.SGD(0.0), "sparse_categorical_crossentropy")
    kernel = model.get_layer("c1").kernel
    if index == 1:                       # reverse the filter order on this worker only
        kernel.assign(kernel.numpy()[..., ::-1])
    try:
        model.fit(ctx.train_data(x, y, 1), epochs=1, steps_per_epoch=1, verbose=0,
                  callbacks=[pruner])
    except PruningError as err:
        return str(err)
    return None


def reductions_check(strategy, index):
    """Each worker holds different values; after the all-reduces every worker must hold the
    statistic of all of them: ``across_replicas`` itself, a ``Uniform`` EMA range (min/max
    every step) and an ``LSQPlus`` initialization (min/max once) on worker-specific batches."""
    from tfcompress._distribute import across_replicas
    from tfcompress.quantizers import LSQPlus, Uniform

    local = tf.constant([1.0 + index, -3.0 * index, 5.0 - 2.0 * index])
    pixels = cases.mnist14(8)[0].reshape(8, -1)[:, 84:104]          # rows 6-7: strokes
    # different ranges: about [-1, 5] on worker 0 and [-3, 1] on worker 1
    x = tf.constant(pixels[4 * index: 4 * index + 4] * (3.0 - index) + (2.0 - 3.0 * index))
    with strategy.scope():
        uniform = Uniform(bits=4, symmetric=False, ema_decay=0.9)
        lsq_plus = LSQPlus(bits=4)
        for q in (uniform, lsq_plus):
            q.build(tf.TensorShape([None, 20]))

    @tf.function
    def run():
        def step():
            stats = [across_replicas(local, r) for r in ("mean", "sum", "min", "max")]
            uniform(x, training=True)
            lsq_plus(x, training=True)
            return stats
        return strategy.run(step)

    stats = run()
    out = {f"reduce/{r}": strategy.experimental_local_results(v)[0].numpy()
           for r, v in zip(("mean", "sum", "min", "max"), stats)}
    out.update({"reduce/x_local": x.numpy(),
                "reduce/uniform_range": np.array([uniform.range_min.numpy(),
                                                  uniform.range_max.numpy()]),
                "reduce/lsq_plus": np.array([lsq_plus.step.numpy(), lsq_plus.offset.numpy()])})
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--phase", choices=("main", "resume"), required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--backup", required=True)
    p.add_argument("--collective-timeout", type=float, default=120.0)
    p.add_argument("--worker-index", type=int, required=True)
    p.add_argument("--workers", type=int, required=True)
    args = p.parse_args()
    log = {"import_s": time.time() - T0}
    strategy = make_strategy(args.collective_timeout)
    assert strategy.num_replicas_in_sync == args.workers, strategy.num_replicas_in_sync
    log["replicas"] = strategy.num_replicas_in_sync
    ctx = cases.Context(strategy)
    results = {}
    backup = Path(args.backup)

    def timed(name, fn, *a, **kw):
        t, c = time.time(), time.process_time()
        try:
            return fn(*a, **kw)
        finally:
            log[f"{name}_s"] = time.time() - t
            log[f"{name}_cpu_s"] = time.process_time() - c

    if args.phase == "main":
        results.update(timed("reduce", reductions_check, strategy, args.worker_index))
        results.update(timed("binary", cases.case_binary, ctx))
        results.update(timed("lsq", cases.case_lsq, ctx))
        results.update(timed("prune", cases.case_prune, ctx))
        for name, case in (("prune", cases.case_prune), ("nas", cases.case_nas)):
            cbs = [keras.callbacks.BackupAndRestore(str(backup / name)),
                   PreemptAfter(PREEMPT[name])]
            snap = cases.Snapshots(name) if name == "nas" else None
            kw = {"snapshots": snap} if snap is not None else {}
            try:
                timed(f"{name}_interrupted", case, ctx, callbacks=cbs, **kw)
                log[f"{name}_preempted"] = False
            except Preempted:
                log[f"{name}_preempted"] = True
            if snap is not None:    # its first step (before the preemption) vs the reference
                results.update(snap.states)
    else:
        for name, case in (("prune", cases.case_prune), ("nas", cases.case_nas)):
            cbs = [keras.callbacks.BackupAndRestore(str(backup / name))]
            results.update({k.replace(f"{name}/", f"{name}_resumed/", 1): v for k, v in
                            timed(f"{name}_resumed", case, ctx, callbacks=cbs).items()})
            log[f"{name}_backup_left"] = sorted(str(f.relative_to(backup)) for f in
                                                (backup / name).rglob("*") if f.is_file())
        log["desync_error"] = timed("desync", desync_check, strategy, args.worker_index)

    out = Path(args.out)
    np.savez(out / f"{args.phase}_worker{args.worker_index}.npz", **results)
    log["total_s"] = time.time() - T0
    log["total_cpu_s"] = time.process_time()
    (out / f"{args.phase}_worker{args.worker_index}.json").write_text(json.dumps(log))
    barrier(strategy, out, args.phase, args.worker_index, args.workers)
    sys.stdout.flush()
    os._exit(0)          # skip interpreter teardown: gRPC servers of finished workers may hang it


if __name__ == "__main__":
    main()
