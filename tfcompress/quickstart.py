"""The main job: one small CNN on real MNIST as float32, int8 and binarized, converted and
verified in the real interpreters.

``tfcompress quickstart --out quickstart_out`` trains

- **float32**: a plain Keras CNN, converted with the TFLite converter;
- **int8**: the same trained float model, post-training quantized to full int8 (int8 I/O)
  with 500 training images as calibration data;
- **binary**: the same architecture with larq ``QuantConv2D`` layers (``ste_sign`` inputs
  and kernels, ``weight_clip``; the first layer keeps real-valued pixel inputs), converted
  with Larq Compute Engine.

Every file runs on the full MNIST test set (10,000 images) in its real interpreter
(ai-edge-litert for TFLite; for the binary file the runtime ``runtime="auto"`` picks:
tfcompress's x86 kernels when they are built, else LCE's interpreter) and, in one extra row,
the binary file again in LCE's interpreter, so the two binary runtimes stand side by side.
The job writes a table of Keras accuracy, interpreter accuracy, agreement, size and median
single-thread latency as ``results.md`` and ``results.json`` beside the three ``.tflite``
files. Latencies are measured after all conversions, side by side (interleaved rounds, see
:func:`tfcompress.runtime.latency_interleaved`), so the ratios between rows are fair even on
a busy machine.

Acceptance figures go into ``results.json`` as ``meta.checks`` (``{check, value, need}``,
met when ``value >= need``) and are printed with PASS/FAIL: the binary model (in the runtime
``auto`` picks) must be faster than the int8 model on this CPU (issue 18), and the float32
file at least 20x larger than the binary one. Timing figures depend on the machine and its
load: read them from a quiet machine.

The dense head is written as a convolution over the whole 3x3 feature map (equivalent to
Flatten + Dense) because LCE binarizes convolutions but not fully-connected layers.
"""

import json
import os
import time
from pathlib import Path

import numpy as np

from tfcompress._keras import keras
from tfcompress.conversion import convert
from tfcompress.data import load
from tfcompress.data.preprocess import for_model
from tfcompress.report import environment, markdown_table
from tfcompress.runtime import Interpreter, auto_runtime, latency_interleaved

FILTERS = (64, 128, 256, 256)


def build_cnn(kind, *, input_shape=(28, 28, 1), num_classes=10, filters=FILTERS):
    """The quickstart CNN as ``kind="float"`` (Keras layers) or ``"binary"`` (larq layers).

    Both have identical shapes: conv3x3 -> pool -> conv3x3 -> pool -> conv3x3 -> conv3x3
    (the "dense" layer over the 3x3 map) -> conv1x1 to the classes, each followed by
    BatchNormalization, then softmax.
    """
    import larq as lq

    if kind not in ("float", "binary"):
        raise ValueError(f"kind must be 'float' or 'binary', got {kind!r}.")
    binary = kind == "binary"
    bn = dict(momentum=0.9, scale=False)

    def conv(f, k, first=False):
        if not binary:
            return keras.layers.Conv2D(f, k, use_bias=False)
        return lq.layers.QuantConv2D(
            f, k, use_bias=False, kernel_quantizer="ste_sign", kernel_constraint="weight_clip",
            input_quantizer=None if first else "ste_sign",
        )

    f1, f2, f3, f4 = filters
    layers = [
        keras.Input(input_shape),
        conv(f1, 3, first=True), keras.layers.MaxPool2D(2), keras.layers.BatchNormalization(**bn),
        conv(f2, 3), keras.layers.MaxPool2D(2), keras.layers.BatchNormalization(**bn),
        conv(f3, 3), keras.layers.BatchNormalization(**bn),
        conv(f4, 3), keras.layers.BatchNormalization(**bn),
        conv(num_classes, 1), keras.layers.BatchNormalization(**bn),
        keras.layers.Flatten(), keras.layers.Activation("softmax"),
    ]
    if not binary:  # real-valued CNNs want a nonlinearity after each BN
        layers = _insert_relu(layers)
    return keras.Sequential(layers, name=f"mnist_cnn_{kind}")


def _insert_relu(layers):
    out = []
    for i, layer in enumerate(layers):
        out.append(layer)
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        if isinstance(layer, keras.layers.BatchNormalization) and not isinstance(nxt, keras.layers.Flatten):
            out.append(keras.layers.ReLU())
    return out


def preprocess(x):
    """uint8 MNIST images -> float32 in [-1, 1] with a channel axis."""
    return for_model("mnist", x)


def _train(model, x, y, epochs, lr, batch_size, verbose):
    steps = epochs * int(np.ceil(len(x) / batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(lr, steps, alpha=0.02)
    model.compile(keras.optimizers.Adam(schedule), "sparse_categorical_crossentropy", ["accuracy"])
    t0 = time.perf_counter()
    model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=verbose, shuffle=True)
    return time.perf_counter() - t0


def run(out_dir="quickstart_out", *, epochs_float=2, epochs_binary=5, batch_size=128,
        train_examples=None, test_examples=None, seed=0, data_dir=None, latency_runs=200,
        verbose=1, filters=FILTERS):
    """Train, convert and verify the three models; write files and tables to ``out_dir``.

    ``train_examples``/``test_examples`` take the first N examples (for smoke tests); the
    defaults use the full official splits. Returns the list of table rows.
    """
    t_start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(seed)
    (x_train, y_train), (x_test, y_test) = load("mnist", data_dir=data_dir)
    x_train, y_train = preprocess(x_train[:train_examples]), y_train[:train_examples]
    x_test, y_test = preprocess(x_test[:test_examples]), y_test[:test_examples]

    def log(msg):
        if verbose:
            print(f"[quickstart] {msg}", flush=True)

    log(f"MNIST: {len(x_train)} train / {len(x_test)} test images")
    models = {}
    train_time = {}
    for kind, epochs, lr in (("float", epochs_float, 2e-3), ("binary", epochs_binary, 5e-3)):
        log(f"training the {kind} CNN for {epochs} epoch(s)")
        models[kind] = build_cnn(kind, filters=filters)
        train_time[kind] = _train(models[kind], x_train, y_train, epochs, lr, batch_size, verbose)

    calib = x_train[np.random.default_rng(seed).permutation(len(x_train))[:500]]
    jobs = (
        ("float32", models["float"], dict(target="float32")),
        ("int8", models["float"], dict(target="int8", representative_data=calib)),
        ("binary", models["binary"], dict(target="lce")),
    )
    rows, interpreters = [], []
    for name, model, options in jobs:
        log(f"converting {name}")
        result = convert(model, **options)
        path = result.save(out / f"mnist_{name}.tflite")
        runtimes = ["auto"]
        if name == "binary" and auto_runtime(result.info) != "lce":
            runtimes.append("lce")   # LCE's interpreter beside tfcompress's kernels
        for runtime in runtimes:
            label = name if runtime == "auto" else "binary (LCE)"
            it = Interpreter(result.flatbuffer, runtime=runtime)
            log(f"verifying {path.name} in {it.runtime} on {len(x_test)} test images")
            rep = result.verify(x_test, y_test, runtime=runtime, latency_runs=0,
                                progress=bool(verbose))
            interpreters.append(it)
            rows.append({
                "model": label, "file": path.name, "runtime": f"{rep.runtime} ({rep.kernel})",
                "keras_accuracy": rep.keras_accuracy, "tflite_accuracy": rep.accuracy,
                "agreement": rep.agreement, "max_abs_diff": rep.max_abs_diff,
                "size_bytes": rep.size_bytes,
                "train_seconds": train_time["binary" if "binary" in name else "float"],
            })
    log(f"timing the {len(rows)} rows side by side ({latency_runs} runs each)")
    for row, lat in zip(rows, latency_interleaved(interpreters, x_test[:1], runs=latency_runs,
                                                  warmup=10)):
        row.update({"latency_median_ms": lat["median_ms"], "latency_p10_ms": lat["p10_ms"],
                    "latency_p90_ms": lat["p90_ms"]})
    float_size = rows[0]["size_bytes"]
    for row in rows:
        row["size_ratio_vs_float32"] = float_size / row["size_bytes"]
    meta = environment()
    meta.update({
        "job": "tfcompress quickstart", "dataset": "MNIST (official split)",
        "train_examples": len(x_train), "test_examples": len(x_test),
        "epochs": {"float": epochs_float, "binary": epochs_binary}, "batch_size": batch_size,
        "seed": seed,
        "latency": (f"batch 1, 1 thread, {latency_runs} runs per row after 10 warm-up, "
                    "interleaved across the rows in 5 rounds"),
        "checks": acceptance_checks(rows),
        "wall_seconds": round(time.perf_counter() - t_start, 1),
    })
    try:
        meta["load_average_1min"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    _write(out, rows, meta)
    print(format_table(rows))
    print("\n".join(format_checks(meta["checks"])))
    log(f"wrote {out}/results.md, results.json and three .tflite files "
        f"in {meta['wall_seconds']:.0f} s")
    return rows


COLUMNS = (
    ("model", "model", "{}"), ("runtime", "interpreter", "{}"),
    ("keras_accuracy", "Keras acc.", "{:.2%}"), ("tflite_accuracy", ".tflite acc.", "{:.2%}"),
    ("agreement", "agreement", "{:.2%}"), ("size_bytes", "size (KiB)", "{:.1f}", 1 / 1024),
    ("size_ratio_vs_float32", "x smaller", "{:.1f}"),
    ("latency_median_ms", "latency ms (median)", "{:.3f}"),
)


def format_table(rows):
    return markdown_table(rows, COLUMNS)


def acceptance_checks(rows):
    """``meta.checks`` of the quickstart: ``{check, value, need}``, met when value >= need.

    - int8 latency / binary latency >= 1: the binary model, in the runtime ``auto`` picks
      (tfcompress's kernels when built), is faster than the int8 model on this CPU (issue 18).
    - float32 bytes / binary bytes >= 20.
    """
    by = {r["model"]: r for r in rows}
    binary = by["binary"]
    return [
        {"check": f"int8 median latency / binary median latency (binary in {binary['runtime']})"
                  " >= 1: binary faster than int8 on this CPU",
         "value": round(by["int8"]["latency_median_ms"] / binary["latency_median_ms"], 3),
         "need": 1.0},
        {"check": "float32 bytes / binary bytes >= 20",
         "value": round(by["float32"]["size_bytes"] / binary["size_bytes"], 2), "need": 20.0},
    ]


def format_checks(checks):
    """One line per check: PASS/FAIL, the figure and what it needs."""
    return [f"{'PASS' if c['value'] >= c['need'] else 'FAIL'}  {c['check']}: {c['value']:g} "
            f"(need >= {c['need']:g})" for c in checks]


def _write(out, rows, meta):
    md = ["# tfcompress quickstart: MNIST CNN as float32, int8 and binary", "",
          format_table(rows), ""]
    md += ["## Checks", ""] + [f"- {line}" for line in format_checks(meta["checks"])] + [""]
    md += ["## How this was made", ""]
    md += [f"- {k}: {v}" for k, v in meta.items() if k != "checks"]
    (out / "results.md").write_text("\n".join(md) + "\n")
    (out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))


__all__ = ["acceptance_checks", "build_cnn", "format_checks", "format_table", "preprocess",
           "run"]
