"""Benchmark of issue 20: per-step time of 2 MultiWorkerMirroredStrategy workers vs 1 process
on this machine, to show what synchronisation costs.

The models of the multi-worker tests (``tests/distributed/cases.py``): a float CNN with
synchronized BatchNormalization, the same CNN with plain (per-worker) BatchNormalization and a
4x wider one (64 and 128 filters, about 40x the compute per example), the binary CNN (larq +
tfcompress layers, synchronized BatchNormalization), the 4-bit LSQ CNN, and (not with
``--quick``) a search step on the binarized DARTS supernet of the BNAS test (a weight step by
``fit`` plus the DARTS architecture step of the callback). Each trains on real MNIST (14x14)
or CIFAR-10 (8x8) images with ``fit``:

- **1 worker**: one plain process (no strategy), global batch ``G``, with all cores;
- **2 workers, same global batch**: two local workers (``TF_CONFIG`` on 127.0.0.1 ports),
  ``G / 2`` examples each, one intra-op thread each (two workers on two cores);
- **2 workers, same per-worker batch**: ``G`` examples each (global ``2 G``).

Step time = median interval between consecutive ``on_train_batch_end`` calls after warm-up
steps (tracing excluded), with the 10th/90th percentiles, pooled over ``--rounds`` alternating
launches; worker 0's figures (the workers run in lockstep). ``all-reduce ms`` times
``ReplicaContext.all_reduce`` of one float32 vector the size of the model's trainable
parameters between the two workers (the gradient exchange of a step, alone). On 2 shared
cores no speed-up is expected: the table shows the overhead, so users can judge it against the
compute of their own model and network.

    python tools/bench_distributed.py            # full: 3 rounds (about 10 minutes)
    python tools/bench_distributed.py --quick    # smoke run: the binary CNN, 1 round of 8 steps
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "distributed"))

MODELS = ("cnn", "cnn-localbn", "cnn-wide", "binary", "lsq", "bnas")
QUICK_MODELS = ("binary",)
WARMUP = 5           # steps before the timed ones (the first traces the step function)


# ----------------------------------------------------------------------------------- worker
def worker(args):
    """One process of a configuration: trains every model and writes its step times."""
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    import numpy as np

    import cases
    from tfcompress._keras import keras

    strategy = None
    if args.workers > 1:
        options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=120)
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    results = []

    class Clock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.stamps = []

        def on_train_batch_end(self, batch, logs=None):
            self.stamps.append(time.perf_counter())

    for name in args.models.split(","):
        for per_worker in map(int, args.batches.split(",")):
            keras.utils.set_random_seed(args.seed)
            ctx = cases.Context(strategy, workers=args.workers, batch=per_worker)
            steps = args.warmup + args.steps
            clock = Clock()
            model, fit_args, extra = cases.bench_model(name, ctx, steps, args.seed)
            model.fit(*fit_args, epochs=1, steps_per_epoch=steps, verbose=0,
                      callbacks=[*extra, clock])
            dt = np.diff(clock.stamps)[args.warmup - 1:] * 1e3
            row = {"model": name, "workers": args.workers, "per_worker_batch": per_worker,
                   "global_batch": per_worker * args.workers, "threads": args.threads,
                   "intervals_ms": dt.tolist(), "timed_steps": int(len(dt)),
                   "params": int(sum(int(np.prod(v.shape)) for v in model.trainable_variables)),
                   "weights_fingerprint": None, "allreduce_ms": None}
            from tfcompress._distribute import fingerprint

            row["weights_fingerprint"] = fingerprint(model.get_weights()).tolist()
            if strategy is not None:
                row["allreduce_ms"] = allreduce_ms(tf, strategy, row["params"])
            results.append(row)
    out = Path(args.out) / f"r{args.round}_w{args.workers}_{args.worker_index}.json"
    out.write_text(json.dumps(results))
    if strategy is not None:                 # all workers done before any exits
        with strategy.scope():
            strategy.reduce(tf.distribute.ReduceOp.SUM, tf.constant(1.0), axis=None)
        Path(args.out, f"done{args.round}_{args.worker_index}").write_text("ok")
        deadline = time.time() + 60
        while time.time() < deadline and not all(
                Path(args.out, f"done{args.round}_{i}").exists() for i in range(args.workers)):
            time.sleep(0.05)
    sys.stdout.flush()
    os._exit(0)


def allreduce_ms(tf, strategy, size, repeats=20):
    """Median time of one all-reduce (SUM) of ``size`` float32 values between the workers."""
    import numpy as np

    with strategy.scope():
        value = tf.Variable(tf.ones([size]))

    @tf.function
    def reduce():
        return strategy.run(lambda: tf.distribute.get_replica_context().all_reduce(
            tf.distribute.ReduceOp.SUM, value.read_value()))

    reduce()                                  # trace and warm up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = reduce()
        _ = strategy.experimental_local_results(out)[0].numpy()
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times))


# ----------------------------------------------------------------------------------- driver
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="the binary CNN only, 8 timed steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=64, help="the global batch G")
    p.add_argument("--steps", type=int, default=None, help="timed steps per run")
    p.add_argument("--rounds", type=int, default=None,
                   help="repetitions of the 1-worker and 2-worker launches, alternating "
                        "(default 3; --quick: 1); the intervals of all rounds are pooled")
    p.add_argument("--out-dir", default=str(ROOT / "benchmarks"))
    # worker mode (started by the driver)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--models", help=argparse.SUPPRESS)
    p.add_argument("--batches", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--warmup", type=int, default=3, help=argparse.SUPPRESS)
    p.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--round", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)
    t0 = time.time()
    models = QUICK_MODELS if args.quick else MODELS
    steps = args.steps or (8 if args.quick else 40)
    g = args.batch
    if g % 2:
        p.error("--batch must be even (it is split over 2 workers)")
    with tempfile.TemporaryDirectory(prefix="bench_distributed_") as tmp:
        return _drive(args, Path(tmp), models, steps, g, t0)


def _drive(args, work, models, steps, g, t0):
    """Launch the rounds (worker outputs and logs in ``work``) and write the table."""
    import cluster

    common = ["--worker", "--out", str(work), "--models", ",".join(models),
              "--seed", str(args.seed), "--steps", str(steps), "--warmup", str(WARMUP)]
    load_before = os.getloadavg()
    cores = os.cpu_count() or 1
    rounds = args.rounds or (1 if args.quick else 3)
    for r in range(rounds):
        for workers, batches, threads in ((1, [g], cores), (2, [g // 2, g], 1)):
            cluster.run_workers(Path(__file__).resolve(), common + [
                "--batches", ",".join(map(str, batches)), "--threads", str(threads),
                "--round", str(r)], workers=workers, timeout=1500,
                log_dir=work / f"logs_r{r}_w{workers}")
    load_after = os.getloadavg()
    single = _pool([json.loads((work / f"r{r}_w1_0.json").read_text()) for r in range(rounds)])
    pairs = [[json.loads((work / f"r{r}_w2_{i}.json").read_text()) for i in range(2)]
             for r in range(rounds)]
    pair0 = _pool([p[0] for p in pairs])
    rows, checks = [], []
    base = {r["model"]: r for r in single}
    for r in single:
        rows.append(_row(r, "1 worker", base))
        for q in (q for q in pair0 if q["model"] == r["model"]):
            kind = ("2 workers, same global batch" if q["global_batch"] == g
                    else "2 workers, same per-worker batch")
            rows.append(_row(q, kind, base))
    for m in models:
        same = [a["weights_fingerprint"] == b["weights_fingerprint"]
                for p in pairs for a, b in zip(*p) if a["model"] == m]
        checks.append((f"{m}: 2 workers finish with identical weights", float(all(same)), 1.0))
    meta = {
        "data": "MNIST train (first 64 x steps images, 2x2-average-pooled to 14x14); BNAS: "
                "CIFAR-10 train (first classes 0-3, 8x8)",
        "budget": f"{rounds} round(s) x {steps} timed steps after {WARMUP} warm-up steps per "
                  f"run, global batch {g}",
        "seed": args.seed, "quick": args.quick,
        "threads": "1 worker: intra/inter-op threads = cores; 2 workers: 1 each",
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "wall_s": round(time.time() - t0, 1),
        "checks": [dict(check=c, value=v, need=n) for c, v, n in checks],
    }
    notes = ["Checks:"] + [f"- {c}: {v:g} (need >= {n:g}) {'PASS' if v >= n else 'FAIL'}"
                           for c, v, n in checks]
    notes += ["", "- step ms: median (p10-p90) of the intervals between consecutive training "
              "steps of worker 0 after warm-up, pooled over the rounds (the 1-worker and "
              "2-worker launches alternate, so load from elsewhere hits both); examples/s = "
              "global batch / step time.",
              "- all-reduce ms: one SUM all-reduce of a float32 vector with the model's "
              "trainable-parameter count between the 2 workers (gRPC over 127.0.0.1), median of "
              "20; a step all-reduces the gradients once (Keras packs them) plus, with "
              "synchronized BatchNormalization, 3 small all-reduces per layer.",
              "- Load averages before/after are in the record below: the machine is shared, "
              "absolute times are noisy; the ratios in one run are the figures to read."]
    from tfcompress.report import write_benchmark

    write_benchmark("distributed", rows, COLUMNS, meta, out_dir=args.out_dir,
                    title="Scale-out: 2 MultiWorkerMirroredStrategy workers vs 1 process "
                          "(one 2-core machine)", notes=notes)
    print((Path(args.out_dir) / "distributed.md").read_text())
    return 0


def _pool(rounds):
    """One record per (model, batch) with the step intervals of all rounds pooled."""
    import numpy as np

    out = []
    for rows in zip(*rounds):
        r = dict(rows[0])
        dt = np.concatenate([x["intervals_ms"] for x in rows])
        r.update(step_ms=float(np.median(dt)), p10_ms=float(np.percentile(dt, 10)),
                 p90_ms=float(np.percentile(dt, 90)), timed_steps=int(len(dt)),
                 allreduce_ms=(None if r["allreduce_ms"] is None
                               else float(np.median([x["allreduce_ms"] for x in rows]))))
        r.pop("intervals_ms")
        out.append(r)
    return out


def _row(r, setup, base):
    b = base[r["model"]]
    thr = r["global_batch"] / r["step_ms"] * 1e3
    return {"model": r["model"], "setup": setup, "workers": r["workers"],
            "per_worker_batch": r["per_worker_batch"], "global_batch": r["global_batch"],
            "threads": r["threads"], "step_ms": r["step_ms"],
            "spread": f"{r['p10_ms']:.1f}-{r['p90_ms']:.1f}",
            "examples_per_s": thr, "step_ratio": r["step_ms"] / b["step_ms"],
            "throughput_ratio": thr / (b["global_batch"] / b["step_ms"] * 1e3),
            "allreduce_ms": r["allreduce_ms"], "params": r["params"],
            "timed_steps": r["timed_steps"]}


COLUMNS = [("model", "model", "{}"), ("setup", "setup", "{}"),
           ("per_worker_batch", "batch / worker", "{}"), ("global_batch", "global batch", "{}"),
           ("step_ms", "step ms", "{:.1f}"), ("spread", "p10-p90 ms", "{}"),
           ("examples_per_s", "examples/s", "{:.0f}"),
           ("step_ratio", "step time vs 1 worker", "{:.2f}x"),
           ("throughput_ratio", "throughput vs 1 worker", "{:.2f}x"),
           ("allreduce_ms", "all-reduce ms (params)", "{:.2f}"), ("params", "params", "{:,}")]


if __name__ == "__main__":
    sys.exit(main())
