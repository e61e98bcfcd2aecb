"""Benchmark of issue 6: binary architecture search on real CIFAR-10, side by side.

DARTS and BNAS (and, with ``--methods``, second-order DARTS ``darts2``, PC-DARTS, IDARTS,
ABanditNAS or the evolution) search the same binarized DARTS space with the same budget and
seed; each found cell is derived into a deeper binary network and trained, next to a hand-made
binary CNN of about the same size, with one training budget. Columns: search time, the supernet's accuracy on its architecture split at
the end of the search, parameters, the LCE flatbuffer size, the binary-op ratio (share of MACs
that are XNOR-popcount binary ops, :func:`tfcompress.report.summary`), training time, and test
accuracy from Keras and from the LCE file in LCE's interpreter (with their agreement).

The machine is a shared 2-core CPU, so the budget is small: CIFAR-10 images are average-pooled
to 16x16, the search uses 2 x 5000 training images (weights / architecture split, as DARTS'
50/50 split) and ``--search-epochs`` Keras epochs of ``--steps-per-epoch`` steps (BNAS' K*T
schedule counts these epochs), the cells have 3 intermediate nodes instead of DARTS' 4, and the
derived networks train on the 10000 images.

    python tools/bench_nas.py                 # full budget (about 35 minutes on 2 cores)
    python tools/bench_nas.py --quick         # smoke run (a few minutes)
    python tools/bench_nas.py --task detection   # BDetNAS on multi-digit MNIST (~20 min)
    python tools/bench_nas.py --task detection --det-head detection2   # two-scale head
    python tools/bench_nas.py --methods pcdarts,abanditnas,evolution --name nas_others
    python tools/bench_nas.py --methods pcdarts,idarts --name nas_idarts   # ~13 min
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import tfcompress  # noqa: E402
from tfcompress import nas  # noqa: E402
from tfcompress import keras  # noqa: E402
import tensorflow as tf  # noqa: E402  (after tfcompress: Keras 2 is selected)
from tfcompress.data.preprocess import for_model  # noqa: E402
from tfcompress.layers import QuantConv2D  # noqa: E402
from tfcompress.report import summary, write_benchmark  # noqa: E402


def load(args):
    (x, y), (xt, yt) = tfcompress.data.load("cifar10")
    rng = np.random.default_rng(args.seed)
    idx = rng.permutation(len(x))[: args.train]
    n_test = args.test if args.test else len(xt)

    def shrink(a):
        a = for_model("cifar10", a)
        f = 32 // args.image_size
        return a.reshape(len(a), args.image_size, f, args.image_size, f, 3).mean(axis=(2, 4))

    return (shrink(x[idx]), y.reshape(-1)[idx].astype(np.int64)), \
        (shrink(xt[:n_test]), yt.reshape(-1)[:n_test].astype(np.int64))


def make_space(args):
    return nas.DartsSpace(num_cells=args.search_cells, channels=args.search_channels, ops="binary",
                          nodes=args.nodes, partial_channels=args.partial_channels)


def make_strategy(method, space, val, args, train=None):
    common = dict(batch_size=args.search_batch, seed=args.seed, verbose=int(args.verbose))
    if method == "darts":
        return nas.DARTS(space, val, **common)
    if method == "darts2":
        return nas.DARTS(space, val, order=2, train_data=train, **common)
    if method == "pcdarts":
        return nas.PCDARTS(space, val, warmup_epochs=args.warmup, **common)
    if method == "idarts":
        return nas.IDARTS(space, val, warmup_epochs=args.warmup, **common)
    if method == "bnas":
        return nas.BNAS(space, val, warmup_epochs=args.warmup, rounds=1, samples=args.samples,
                        eval_size=args.eval_size, **common)
    if method == "abanditnas":
        return nas.ABanditNAS(space, val, rounds=1, eval_size=args.eval_size, seed=args.seed,
                              verbose=int(args.verbose))
    if method == "evolution":
        return nas.Evolution(space, val[0], eval_size=min(args.eval_size, 256), seed=args.seed,
                             verbose=int(args.verbose))
    raise ValueError(f"unknown method {method!r}")


def search(method, train, val, args):
    """Run one search; return (genotype, seconds, supernet accuracy on the val split)."""
    keras.utils.set_random_seed(args.seed)
    space = make_space(args)
    supernet = space.build(train[0].shape[1:], 10)
    strategy = make_strategy(method, space, val, args, train)
    ds = (tf.data.Dataset.from_tensor_slices(train).shuffle(len(train[0]), seed=args.seed)
          .repeat().batch(args.search_batch))
    t = time.perf_counter()
    supernet.fit(ds, epochs=args.search_epochs, steps_per_epoch=args.steps_per_epoch, verbose=0,
                 callbacks=[strategy])
    seconds = time.perf_counter() - t
    acc = float((supernet.predict(val[0], batch_size=256, verbose=0).argmax(-1) == val[1]).mean())
    alive = {c: supernet.alive(c).sum(1).tolist() for c in ("normal", "reduce")}
    return space, strategy.genotype(), seconds, acc, alive


def baseline(width, input_shape, stem):
    """A hand-made binary CNN: float stem, 3 stages of two binary 3x3 convs, float classifier."""
    b = dict(padding="same", use_bias=False, pad_values=1.0, input_quantizer="ste_sign",
             kernel_quantizer="ste_sign", kernel_constraint="weight_clip")
    inp = keras.Input(input_shape)
    x = keras.layers.Conv2D(stem, 3, padding="same", use_bias=False)(inp)
    x = keras.layers.BatchNormalization(momentum=0.9)(x)
    for stage, w in enumerate((width, 2 * width, 4 * width)):
        for _ in range(2):
            x = QuantConv2D(w, 3, **b)(x)
            x = keras.layers.BatchNormalization(momentum=0.9)(x)
        if stage < 2:
            x = keras.layers.MaxPool2D(2)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(10)(x)
    model = keras.Model(inp, out, name=f"binary_cnn_{width}")
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"])
    return model


def matched_baseline(params, input_shape, stem):
    """The baseline width (even) whose parameter count is closest to ``params``."""
    best = None
    for w in range(4, 257, 2):
        n = baseline(w, input_shape, stem).count_params()
        if best is None or abs(n - params) < abs(best[1] - params):
            best = (w, n)
        if n > params:
            break
    return best[0]


def train_and_measure(model, train, test, args):
    keras.utils.set_random_seed(args.seed)
    t = time.perf_counter()
    model.fit(train[0], train[1], batch_size=args.batch_size, epochs=args.train_epochs, verbose=0)
    train_s = time.perf_counter() - t
    keras_acc = float((model.predict(test[0], batch_size=512, verbose=0).argmax(-1) == test[1]).mean())
    s = summary(model)
    row = {"params": int(model.count_params()), "binary_op_ratio": s.totals["bops_share"],
           "macs": s.totals["macs"], "train_seconds": train_s, "keras_accuracy": keras_acc}
    res = tfcompress.convert(model, target="lce")
    rep = res.verify(test[0], test[1], latency_runs=20, warmup=3)
    row.update(lce_bytes=res.size, lce_accuracy=rep.accuracy, agreement=rep.agreement,
               max_abs_diff=rep.max_abs_diff, lce_bconv=res.ops.count("LceBconv2d"),
               lce_latency_ms=rep.latency.get("median_ms"))
    return row


def run(args):
    t0, cpu0 = time.perf_counter(), time.process_time()
    (x, y), test = load(args)
    half = len(x) // 2
    train_w, val_a = (x[:half], y[:half]), (x[half:], y[half:])
    rows, genotypes = [], {}
    for method in args.methods.split(","):
        space, geno, secs, acc, alive = search(method.strip().lower(), train_w, val_a, args)
        print(f"[{method}] search {secs:.0f} s, supernet acc {acc:.3f}, alive ops/edge {alive}\n"
              f"  {geno}", flush=True)
        genotypes[method] = geno.to_dict()
        keras.utils.set_random_seed(args.seed)
        model = space.derive(geno, num_cells=args.cells, channels=args.channels, num_classes=10,
                             input_shape=x.shape[1:])
        label = "DARTS 2nd order" if method.strip().lower() == "darts2" else geno.meta["strategy"]
        row = {"method": f"{label} search -> derived", "kind": method,
               "search_seconds": secs, "search_steps": args.search_epochs * args.steps_per_epoch,
               "supernet_accuracy": acc, "genotype": str(geno)}
        row.update(train_and_measure(model, (x, y), test, args))
        rows.append(row)
        print(f"  derived: {row['params']} params, test acc {row['keras_accuracy']:.3f} (LCE "
              f"{row['lce_accuracy']:.3f}), binary ops {row['binary_op_ratio']:.1%}", flush=True)
    target = int(np.median([r["params"] for r in rows]))
    width = matched_baseline(target, x.shape[1:], 3 * args.channels)
    keras.utils.set_random_seed(args.seed)
    row = {"method": f"hand-made binary CNN (width {width})", "kind": "baseline"}
    row.update(train_and_measure(baseline(width, x.shape[1:], 3 * args.channels), (x, y), test, args))
    rows.append(row)
    print(f"[baseline] {row['params']} params, test acc {row['keras_accuracy']:.3f}", flush=True)
    base = rows[-1]
    for r in rows:
        r["accuracy_vs_baseline"] = r["keras_accuracy"] - base["keras_accuracy"]
        r["params_vs_baseline"] = r["params"] / base["params"]
    columns = (("method", "method", "{}"), ("search_seconds", "search s", "{:.0f}"),
               ("supernet_accuracy", "supernet acc. (arch split)", "{:.2%}"),
               ("params", "params", "{:,}"), ("params_vs_baseline", "params / baseline", "{:.2f}"),
               ("lce_bytes", "LCE KiB", "{:.1f}", 1 / 1024),
               ("binary_op_ratio", "binary-op ratio (MACs)", "{:.1%}"),
               ("train_seconds", "train s", "{:.0f}"), ("keras_accuracy", "test acc. (Keras)", "{:.2%}"),
               ("lce_accuracy", "test acc. (LCE)", "{:.2%}"), ("agreement", "agreement", "{:.2%}"),
               ("accuracy_vs_baseline", "acc. - baseline", "{:+.2%}"))
    wall = time.perf_counter() - t0
    meta = {
        "dataset": f"CIFAR-10, images average-pooled to {args.image_size}x{args.image_size}; "
                   f"{len(x)} random training images (seed {args.seed}): search weights on "
                   f"{half}, architecture on {len(x) - half}; derived models train on all "
                   f"{len(x)}; test: the first {len(test[0])} images of the official test split",
        "search_space": make_space(args).get_config(),
        "search_budget": f"{args.search_epochs} epochs x {args.steps_per_epoch} steps, batch "
                         f"{args.search_batch} (weights and architecture), warm-up {args.warmup} (BNAS/PC-DARTS), BNAS "
                         f"samples/epoch {args.samples} on {args.eval_size} images",
        "derived": f"num_cells={args.cells}, channels={args.channels}; trained "
                   f"{args.train_epochs} epochs, batch {args.batch_size}, Adam 1e-3",
        "baseline": f"width {width}: float 3x3 stem, 2 binary 3x3 convs x 3 stages, float dense",
        "command": "python tools/bench_nas.py " + " ".join(sys.argv[1:]),
        "seed": args.seed, "quick": bool(args.quick), "wall_seconds": round(wall, 1),
        "cpu_seconds": round(time.process_time() - cpu0, 1),
        "load_average_at_end": " ".join(f"{v:.1f}" for v in os.getloadavg()),
        "genotypes": genotypes,
    }
    notes = [
        "Binary-op ratio: share of the model's multiply-accumulates whose two operands are 1-bit "
        "(tfcompress.report.summary's BOPs / MACs). LCE runs the binary 1x1/3x3/dilated convs "
        "as LceBconv2d; the binary depthwise convs of sep_conv run as float DEPTHWISE_CONV_2D on "
        "+-1 values, since LCE has no binary depthwise kernel.",
        "One small search budget on a 2-core CPU: absolute accuracies are far below the papers' "
        "(600-epoch, 20-cell evaluation on 32x32 images); compare the rows with each other.",
    ]
    path = write_benchmark(args.name, rows, columns, meta, out_dir=args.out_dir,
                           title="Binary architecture search on CIFAR-10 ("
                                 + " vs ".join(r["method"].split(" search")[0] for r in rows[:-1])
                                 + " vs a hand-made binary CNN)", notes=notes)
    print(f"wrote {path} in {wall:.0f} s", flush=True)
    return rows


def run_detection(args):
    """BDetNAS on multi-digit MNIST: search, derive, train, LCE, against a hand-made binary
    TinyYOLO (Bi-Real backbone) of about the same size, with one training budget."""
    from tfcompress import detection, models

    t0, cpu0 = time.perf_counter(), time.process_time()
    kw = dict(canvas_size=args.canvas, digits=(1, 3), digit_size=(10, 16))
    x, b, l = detection.multi_mnist(args.det_train, split="train", seed=args.seed, **kw)
    xt, bt, lt = detection.multi_mnist(args.det_test, split="test", seed=args.seed + 1, **kw)
    half = len(x) // 2
    keras.utils.set_random_seed(args.seed)
    space = make_space(args)
    supernet = space.build(x.shape[1:], 10, head=args.det_head)
    two_scale = args.det_head == "detection2"
    strides = space.grid_strides() if two_scale else None
    if two_scale:
        y = detection.encode_scales(b[:half], l[:half], input_shape=x.shape[1:3], strides=strides,
                                    num_classes=10)
    else:
        stride = space.grid_stride()
        grid = (x.shape[1] // stride, x.shape[2] // stride)
        y = detection.encode_targets(b[:half], l[:half], input_shape=x.shape[1:3], grid_shape=grid,
                                     num_classes=10)
    search = nas.BDetNAS(space, (x[half:], b[half:], l[half:]), warmup_epochs=args.warmup,
                         samples=args.samples, eval_size=args.eval_size, rounds=1,
                         batch_size=args.search_batch, seed=args.seed, verbose=int(args.verbose))
    ds = (tf.data.Dataset.from_tensor_slices((x[:half], y)).shuffle(half, seed=args.seed)
          .repeat().batch(args.search_batch))
    t = time.perf_counter()
    supernet.fit(ds, epochs=args.search_epochs, steps_per_epoch=args.steps_per_epoch, verbose=0,
                 callbacks=[search])
    search_s = time.perf_counter() - t
    geno = search.genotype()
    sup_map = detection.evaluate(supernet, x[half:], b[half:], l[half:], strides=strides).map50
    print(f"[bdetnas] search {search_s:.0f} s, supernet mAP@0.5 {sup_map:.3f}\n  {geno}", flush=True)

    def measure(model, name, extra, strides=None):
        keras.utils.set_random_seed(args.seed)
        t = time.perf_counter()
        detection.fit_detector(model, x, b, l, epochs=args.train_epochs, learning_rate=5e-3,
                               strides=strides)
        train_s = time.perf_counter() - t
        km = detection.evaluate(model, xt, bt, lt, strides=strides)
        res = tfcompress.convert(model, target="lce")
        fm = detection.evaluate(res, xt, bt, lt, strides=strides)
        lat = res.interpreter().latency(xt[:1], runs=20)
        s = summary(model)
        row = {"method": name, "params": int(model.count_params()),
               "binary_op_ratio": s.totals["bops_share"], "train_seconds": train_s,
               "keras_map50": km.map50, "lce_map50": fm.map50, "keras_map": km.map50_95,
               "lce_map": fm.map50_95, "lce_bytes": res.size,
               "lce_bconv": res.ops.count("LceBconv2d"), "lce_latency_ms": lat["median_ms"]}
        row.update(extra)
        print(f"  {name}: {row['params']} params, mAP@0.5 Keras {km.map50:.3f} / LCE {fm.map50:.3f}",
              flush=True)
        return row

    keras.utils.set_random_seed(args.seed)
    derived = space.derive(geno, num_cells=args.cells, channels=args.channels,
                           input_shape=x.shape[1:], num_classes=10, head=args.det_head)
    rows = [measure(derived, "BDetNAS search -> derived detector"
                    + (" (two-scale head)" if two_scale else ""),
                    {"search_seconds": search_s, "supernet_map50": sup_map}, strides)]
    best = None
    for w in range(2, 65):
        n = models.TinyYOLO(input_shape=x.shape[1:], num_classes=10, width=w,
                            backbone="bireal").count_params()
        if best is None or abs(n - rows[0]["params"]) < abs(best[1] - rows[0]["params"]):
            best = (w, n)
        if n > rows[0]["params"]:
            break
    keras.utils.set_random_seed(args.seed)
    baseline_model = models.TinyYOLO(input_shape=x.shape[1:], num_classes=10, width=best[0],
                                     backbone="bireal")
    rows.append(measure(baseline_model, f"hand-made TinyYOLO, Bi-Real backbone (width {best[0]})", {}))
    for r in rows:
        r["params_vs_baseline"] = r["params"] / rows[-1]["params"]
        r["map_vs_baseline"] = r["keras_map50"] - rows[-1]["keras_map50"]
    columns = (("method", "method", "{}"), ("search_seconds", "search s", "{:.0f}"),
               ("supernet_map50", "supernet mAP@.5 (arch split)", "{:.2%}"),
               ("params", "params", "{:,}"), ("params_vs_baseline", "params / baseline", "{:.2f}"),
               ("lce_bytes", "LCE KiB", "{:.1f}", 1 / 1024),
               ("binary_op_ratio", "binary-op ratio (MACs)", "{:.1%}"),
               ("train_seconds", "train s", "{:.0f}"),
               ("keras_map50", "mAP@.5 Keras", "{:.2%}"), ("lce_map50", "mAP@.5 LCE", "{:.2%}"),
               ("keras_map", "mAP@.5:.95 Keras", "{:.2%}"), ("lce_map", "mAP@.5:.95 LCE", "{:.2%}"),
               ("lce_latency_ms", "LCE ms", "{:.2f}"),
               ("map_vs_baseline", "mAP@.5 - baseline", "{:+.2%}"))
    wall = time.perf_counter() - t0
    meta = {
        "dataset": f"multi-digit MNIST {args.canvas}x{args.canvas}, 1-3 digits of 10-16 px: "
                   f"{len(x)} training canvases (MNIST-train digits, seed {args.seed}): search "
                   f"weights on {half}, architecture and scoring on {len(x) - half}; both "
                   f"detectors train on all {len(x)}; test: {len(xt)} canvases of MNIST-test "
                   f"digits (seed {args.seed + 1})",
        "search_space": make_space(args).get_config(),
        "search_budget": f"{args.search_epochs} epochs x {args.steps_per_epoch} steps, batch "
                         f"{args.search_batch}, warm-up {args.warmup}, {args.samples} sampled "
                         f"sub-networks/epoch scored by mAP@0.5 on {args.eval_size} canvases",
        "derived": f"num_cells={args.cells}, channels={args.channels}, "
                   f"{f'two-scale head (strides {strides})' if two_scale else 'TinyYOLO head'}; "
                   f"fit_detector {args.train_epochs} epochs, Adam 5e-3 cosine",
        "baseline": f"TinyYOLO(backbone='bireal', width={best[0]}), same training",
        "mAP": "COCO 101-point (pycocotools), score threshold 0.001, class-wise NMS 0.5",
        "latency": "LCE interpreter, batch 1, 1 thread, median of 20 runs",
        "command": "python tools/bench_nas.py " + " ".join(sys.argv[1:]),
        "seed": args.seed, "quick": bool(args.quick), "wall_seconds": round(wall, 1),
        "cpu_seconds": round(time.process_time() - cpu0, 1),
        "load_average_at_end": " ".join(f"{v:.1f}" for v in os.getloadavg()),
        "genotype": geno.to_dict(),
    }
    notes = ["BDetNAS is card B5's design proposal (no primary source): BNAS's search on a "
             "binarized DARTS backbone under a TinyYOLO head, alpha trained on the YOLO loss, "
             "sampled sub-networks scored by mAP@0.5.",
             "One small budget on a 2-core CPU; compare the rows with each other."]
    path = write_benchmark("nas_detection" + ("_2scale" if two_scale else ""), rows, columns, meta,
                           out_dir=args.out_dir,
                           title="BDetNAS on multi-digit MNIST (searched binary detector vs a "
                                 "hand-made binary TinyYOLO)", notes=notes)
    print(f"wrote {path} in {wall:.0f} s", flush=True)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run (tiny budget)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", default="benchmarks")
    p.add_argument("--name", default="nas", help="table file name (classification task)")
    p.add_argument("--methods", default="darts,bnas",
                   help="comma list of darts, darts2, pcdarts, idarts, bnas, abanditnas, evolution")
    p.add_argument("--train", type=int, default=10000)
    p.add_argument("--test", type=int, default=0, help="test images (0: the full test split)")
    p.add_argument("--image-size", type=int, default=16, choices=(8, 16, 32))
    p.add_argument("--search-cells", type=int, default=3)
    p.add_argument("--search-channels", type=int, default=8)
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--partial-channels", type=int, default=2)
    p.add_argument("--search-epochs", type=int, default=30)
    p.add_argument("--steps-per-epoch", type=int, default=15)
    p.add_argument("--warmup", type=int, default=4)
    p.add_argument("--samples", type=int, default=3)
    p.add_argument("--eval-size", type=int, default=256)
    p.add_argument("--cells", type=int, default=4)
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--train-epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64, help="training batch of derived models")
    p.add_argument("--search-batch", type=int, default=32)
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--task", default="classification", choices=("classification", "detection"),
                   help="detection: BDetNAS on multi-digit MNIST (writes nas_detection.md)")
    p.add_argument("--canvas", type=int, default=32, help="detection canvas side")
    p.add_argument("--det-train", type=int, default=4000, help="detection training canvases")
    p.add_argument("--det-test", type=int, default=500)
    p.add_argument("--det-head", default="detection", choices=("detection", "detection2"),
                   help="BDetNAS head: one grid, or two scales (writes nas_detection_2scale.md)")
    args = p.parse_args(argv)
    if args.quick:
        args.train, args.test = 384, 128
        args.search_cells, args.nodes, args.search_epochs, args.steps_per_epoch = 2, 2, 2, 2
        args.warmup, args.samples, args.eval_size = 0, 1, 64
        args.cells, args.channels, args.train_epochs = 2, 8, 1
        args.det_train, args.det_test = 64, 16
    if args.task == "detection":
        if args.quick:
            args.search_cells = args.cells = 3      # two reductions: a stride-4 grid
        return run_detection(args)
    return run(args)


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
