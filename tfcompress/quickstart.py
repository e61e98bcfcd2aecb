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
(ai-edge-litert for TFLite, LCE's interpreter for LCE) and the job writes a table of Keras
accuracy, interpreter accuracy, agreement, size and median single-thread latency as
``results.md`` and ``results.json`` beside the three ``.tflite`` files.

The dense head is written as a convolution over the whole 3x3 feature map (equivalent to
Flatten + Dense) because LCE binarizes convolutions but not fully-connected layers.
"""

import json
import time
from pathlib import Path

import numpy as np

from tfcompress._keras import keras
from tfcompress.conversion import convert
from tfcompress.data import load
from tfcompress.data.preprocess import for_model
from tfcompress.report import environment, markdown_table

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
        ("binary (LCE)", models["binary"], dict(target="lce")),
    )
    rows = []
    for name, model, options in jobs:
        log(f"converting {name}")
        result = convert(model, **options)
        path = result.save(out / f"mnist_{name.split()[0]}.tflite")
        log(f"verifying {path.name} in {result.runtime} on {len(x_test)} test images")
        rep = result.verify(x_test, y_test, latency_runs=latency_runs, progress=bool(verbose))
        rows.append({
            "model": name, "file": path.name, "runtime": f"{rep.runtime} ({rep.kernel})",
            "keras_accuracy": rep.keras_accuracy, "tflite_accuracy": rep.accuracy,
            "agreement": rep.agreement, "max_abs_diff": rep.max_abs_diff,
            "size_bytes": rep.size_bytes, "latency_median_ms": rep.latency["median_ms"],
            "latency_p10_ms": rep.latency["p10_ms"], "latency_p90_ms": rep.latency["p90_ms"],
            "train_seconds": train_time["binary" if "binary" in name else "float"],
        })
    float_size = rows[0]["size_bytes"]
    for row in rows:
        row["size_ratio_vs_float32"] = float_size / row["size_bytes"]
    meta = environment()
    meta.update({
        "job": "tfcompress quickstart", "dataset": "MNIST (official split)",
        "train_examples": len(x_train), "test_examples": len(x_test),
        "epochs": {"float": epochs_float, "binary": epochs_binary}, "batch_size": batch_size,
        "seed": seed, "latency": f"batch 1, 1 thread, {latency_runs} runs after 10 warm-up",
        "wall_seconds": round(time.perf_counter() - t_start, 1),
    })
    _write(out, rows, meta)
    print(format_table(rows))
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


def _write(out, rows, meta):
    md = ["# tfcompress quickstart: MNIST CNN as float32, int8 and binary", "",
          format_table(rows), "", "## How this was made", ""]
    md += [f"- {k}: {v}" for k, v in meta.items()]
    (out / "results.md").write_text("\n".join(md) + "\n")
    (out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))


__all__ = ["build_cnn", "format_table", "preprocess", "run"]
