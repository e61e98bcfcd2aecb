"""Benchmark: generated C for microcontrollers (tfcompress.codegen) on an emulated Cortex-M4.

    python tools/bench_mcu.py                # default budget (about 40 min on 2 cores)
    python tools/bench_mcu.py --quick        # smoke run: tiny nets and data, a few images

Models (trained here, one seed):

- MNIST, the quickstart CNN (``tfcompress.quickstart.build_cnn``: conv3x3 64 -> pool -> 128 ->
  pool -> 256 -> 256 -> conv1x1 10, BatchNorm, softmax) as float32, full int8 (post-training,
  500 calibration images) and binary (larq ``QuantConv2D``, Larq Compute Engine file);
- CIFAR-10, ``tfcompress.models.BinaryResNet(depth=10, width=16)`` binary (LCE file) and the
  same ResNet-10 layout with real-valued convolutions and ReLUs (built from the zoo's stem,
  shortcut and head, :func:`real_resnet10`) trained in float and converted to full int8.

Each file goes through ``ConversionResult.to_c(cpu="cortex-m4")``; figures per model:

- flash: code + read-only data + initialised data of the library's objects, ``-Os`` for
  Cortex-M4 (``arm-none-eabi-gcc``), from the linker map of a probe program;
- peak RAM: the library's ``.bss``/``.data`` (the planned arena and statics) + the stack
  measured in QEMU (painted stack, first inference; it includes the SysTick exception frame)
  and, beside it, the compiler's call-graph bound (``-fcallgraph-info=su``);
- instructions per inference: ``qemu-system-arm -M mps2-an386 -icount shift=0``, SysTick
  counts (40 instructions per tick, calibrated), median over the timed test images; QEMU counts
  instructions, not cycles;
- accuracy on the full official test split from the host build of the same C, beside the
  Keras model's, the interpreter's (LiteRT with its default kernels, LCE's interpreter) and
  the agreement between the C and the interpreter;
- int8 models: CMSIS-NN build (the portable build's instruction count beside it) and TFLite
  Micro's figures: the flatbuffer's bytes and the smallest arena tflite-micro's interpreter
  runs it with (bisection, 256-byte steps).

Outputs of the QEMU runs are compared with the host build (must be identical). Writes
``<out-dir>/mcu.md`` and ``<out-dir>/mcu.json`` with ``meta.checks`` for the figures of issue 13.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

import tfcompress  # noqa: E402,F401  (selects Keras 2 before TensorFlow loads)
from tfcompress._keras import keras  # noqa: E402
from tfcompress.conversion import convert  # noqa: E402
from tfcompress.conversion.micro import measure_arena  # noqa: E402
from tfcompress.data import load  # noqa: E402
from tfcompress.data.preprocess import for_model  # noqa: E402
from tfcompress.models import BinaryResNet  # noqa: E402
from tfcompress.quickstart import _train, build_cnn  # noqa: E402
from tfcompress.report import write_benchmark  # noqa: E402
from tfcompress.runtime import Interpreter  # noqa: E402

NEED_BINARY_ACCURACY = 0.975
NEED_FLASH_RATIO = 4.0      # int8 TFLM flatbuffer bytes / binary flash bytes
NEED_RAM_RATIO = 1.0        # TFLM int8 arena / binary peak RAM
NEED_INSTR_RATIO = 2.0      # int8 (CMSIS-NN) instructions / binary instructions

COLUMNS = (
    ("model", "model", "{}"),
    ("flash_bytes", "flash KiB (code+weights)", "{:.1f}", 1 / 1024),
    ("ram_bytes", "peak RAM KiB (arena+stack)", "{:.1f}", 1 / 1024),
    ("arena_bytes", "arena KiB", "{:.1f}", 1 / 1024),
    ("stack_measured", "stack B (QEMU)", "{}"),
    ("stack_static", "stack B (call graph)", "{}"),
    ("instructions", "instructions / inference (M4)", "{:,.0f}"),
    ("instructions_portable", "portable int8 instr.", "{:,.0f}"),
    ("keras_accuracy", "accuracy (Keras)", "{:.2%}"),
    ("accuracy", "accuracy (C, host)", "{:.2%}"),
    ("reference_accuracy", "accuracy (interpreter)", "{:.2%}"),
    ("agreement", "agreement", "{:.2%}"),
    ("qemu_identical", "QEMU == host", "{}"),
    ("tflm_flatbuffer_bytes", "TFLM flatbuffer KiB", "{:.1f}", 1 / 1024),
    ("tflm_arena_bytes", "TFLM arena KiB", "{:.1f}", 1 / 1024),
)


def log(msg):
    print(f"[bench_mcu] {msg}", flush=True)


def train_mnist(x, y, args):
    models = {}
    for kind, epochs, lr in (("float", args.epochs_float, 2e-3), ("binary", args.epochs_binary, 5e-3)):
        keras.utils.set_random_seed(args.seed)
        m = build_cnn(kind, filters=args.mnist_filters)
        t0 = time.perf_counter()
        _train(m, x, y, epochs, lr, 128, 0)
        log(f"MNIST {kind}: {epochs} epoch(s) in {time.perf_counter() - t0:.0f} s")
        models[kind] = m
    return models


def real_resnet10(width, num_classes=10):
    """The ResNet-10 layout of ``BinaryResNet(depth=10)`` built from the zoo's own stem,
    shortcut and head (``tfcompress.models._common``) with real-valued convolutions and ReLUs.

    (``BinaryResNet(input_quantizer=None, kernel_quantizer=None)`` has the same shapes but no
    nonlinearity at all: its binary version relies on the sign, so it would be a linear model.)
    """
    from tfcompress.models._common import bn, classifier_head, real_shortcut, resnet_stem, stage_plan

    inputs = keras.Input((32, 32, 3))
    x = resnet_stem(inputs, width, False, relu=True)
    for i, (filters, strides) in enumerate(stage_plan(10, width, 2)):
        name = f"block{i + 1}"
        sc = real_shortcut(x, filters, strides, name)
        y = keras.layers.Conv2D(filters, 3, strides, padding="same", use_bias=False,
                                name=f"{name}_conv1")(x)
        y = keras.layers.ReLU(name=f"{name}_relu1")(bn(f"{name}_bn1")(y))
        y = keras.layers.Conv2D(filters, 3, 1, padding="same", use_bias=False,
                                name=f"{name}_conv2")(y)
        y = bn(f"{name}_bn2")(y)
        x = keras.layers.ReLU(name=f"{name}_relu2")(keras.layers.Add(name=f"{name}_add")([y, sc]))
    return keras.Model(inputs, classifier_head(x, num_classes, "softmax"), name="resnet10_real")


def train_cifar(x, y, args):
    models = {}
    for kind in ("binary", "float"):
        keras.utils.set_random_seed(args.seed)
        if kind == "binary":
            m = BinaryResNet(input_shape=(32, 32, 3), num_classes=10, depth=10, width=args.cifar_width)
        else:
            m = real_resnet10(args.cifar_width)
        t0 = time.perf_counter()
        _train(m, x, y, args.epochs_cifar, 2e-3, 64, 0)
        log(f"CIFAR-10 {kind} ResNet-10: {args.epochs_cifar} epoch(s) in {time.perf_counter() - t0:.0f} s")
        models[kind] = m
    return models


def host_accuracy(lib, x, y, cmsis_nn, batch=1000):
    outs = []
    for i in range(0, len(x), batch):
        out = lib.predict(x[i:i + batch], cmsis_nn=cmsis_nn)
        outs.append(out.reshape(len(out), -1))
    pred = np.concatenate(outs)
    return float(np.mean(pred.argmax(-1) == y)), pred


def keras_accuracy(model, x, y):
    pred = model.predict(x, batch_size=500, verbose=0)
    return float(np.mean(pred.reshape(len(x), -1).argmax(-1) == y))


def measure(name, result, x_test, y_test, args, workdir, int8):
    """Generate, size, run in QEMU and evaluate one converted model; returns a table row."""
    t0 = time.perf_counter()
    lib = result.to_c(Path(workdir) / name.replace(" ", "_"), cpu="cortex-m4",
                      cmsis_nn=True if int8 else None)
    sizes = lib.sizes()
    n = args.qemu_images
    xq = x_test[:n]
    res = lib.run_qemu(xq, cmsis_nn=int8, icount=True)
    host = lib.host(cmsis_nn=int8).run_raw(lib.quantize(xq))
    identical = bool(np.array_equal(res.outputs, host))
    acc, pred = host_accuracy(lib, x_test, y_test, int8)
    it = Interpreter(result.flatbuffer, runtime="lce" if result.target == "lce" else "litert")
    ref = it.predict(x_test).reshape(len(x_test), -1)
    row = {
        "model": name, "file": result.target, "flash_bytes": sizes["flash_bytes"],
        "code_bytes": sizes["text"], "const_bytes": sizes["rodata"] + sizes["data"],
        "arena_bytes": lib.arena_bytes, "static_ram_bytes": sizes["data"] + sizes["bss"],
        "stack_static": sizes["stack_bytes"], "stack_measured": res.stack_bytes,
        "ram_bytes": sizes["data"] + sizes["bss"] + res.stack_bytes,
        "instructions": float(np.median(res.instructions)),
        "instructions_p10": float(np.percentile(res.instructions, 10)),
        "instructions_p90": float(np.percentile(res.instructions, 90)),
        "qemu_images": n, "qemu_identical": identical,
        "keras_accuracy": keras_accuracy(result.model, x_test, y_test),
        "accuracy": acc, "reference_accuracy": float(np.mean(ref.argmax(-1) == y_test)),
        "agreement": float(np.mean(ref.argmax(-1) == pred.argmax(-1))),
        "reference_runtime": f"{it.runtime} ({it.kernel})", "test_examples": len(x_test),
        "cmsis_nn": bool(int8), "tflite_bytes": len(result.flatbuffer),
        "schedule": lib.meta["schedule"],
        "step_instructions": [float(v) for v in res.step_instructions],
    }
    if int8:
        port = lib.run_qemu(xq[: max(1, min(3, n))], cmsis_nn=False, icount=True)
        row["instructions_portable"] = float(np.median(port.instructions))
        row["portable_identical"] = bool(np.array_equal(port.outputs, host[: len(port.outputs)]))
        example = Interpreter(result.flatbuffer, runtime="micro")._prepare(
            [np.zeros(lib.input["shape"], np.float32)])
        row["tflm_flatbuffer_bytes"] = len(result.flatbuffer)
        row["tflm_arena_bytes"] = measure_arena(result.flatbuffer, example)
    log(f"{name}: flash {row['flash_bytes']} B, RAM {row['ram_bytes']} B, "
        f"{row['instructions']:,.0f} instr, acc {acc:.4f}, QEMU==host {identical} "
        f"({time.perf_counter() - t0:.0f} s)")
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run (tiny nets, few images)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-dir", default="benchmarks")
    ap.add_argument("--name", default="mcu")
    ap.add_argument("--qemu-images", type=int, default=None)
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    if args.quick:
        args.epochs_float, args.epochs_binary, args.epochs_cifar = 1, 1, 1
        args.mnist_train, args.cifar_train, args.test = 1000, 500, 200
        args.mnist_filters, args.cifar_width = (16, 32, 32, 32), 4
        args.qemu_images = args.qemu_images or 2
    else:
        args.epochs_float, args.epochs_binary, args.epochs_cifar = 2, 3, 4
        args.mnist_train, args.cifar_train, args.test = None, 20000, None
        args.mnist_filters, args.cifar_width = (64, 128, 256, 256), 16
        args.qemu_images = args.qemu_images or 20
    keras.utils.set_random_seed(args.seed)

    (xm, ym), (xmt, ymt) = load("mnist")
    xm, ym = for_model("mnist", xm[:args.mnist_train]), ym[:args.mnist_train]
    xmt, ymt = for_model("mnist", xmt[:args.test]), ymt[:args.test]
    (xc, yc), (xct, yct) = load("cifar10")
    xc, yc = for_model("cifar10", xc[:args.cifar_train]), yc[:args.cifar_train]
    xct, yct = for_model("cifar10", xct[:args.test]), yct[:args.test]
    log(f"MNIST {len(xm)}/{len(xmt)}, CIFAR-10 {len(xc)}/{len(xct)} train/test images")

    mnist = train_mnist(xm, ym, args)
    cifar = train_cifar(xc, yc, args)
    calib_m = xm[np.random.default_rng(args.seed).permutation(len(xm))[:500]]
    calib_c = xc[np.random.default_rng(args.seed).permutation(len(xc))[:500]]
    jobs = [
        ("MNIST float32", convert(mnist["float"], target="float32"), xmt, ymt, False),
        ("MNIST int8", convert(mnist["float"], target="int8", representative_data=calib_m), xmt, ymt, True),
        ("MNIST binary", convert(mnist["binary"], target="lce"), xmt, ymt, False),
        ("CIFAR-10 int8 ResNet-10 (real)", convert(cifar["float"], target="int8", representative_data=calib_c), xct, yct, True),
        ("CIFAR-10 binary ResNet-10", convert(cifar["binary"], target="lce"), xct, yct, False),
    ]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-mcu-") as work:
        for name, result, xt, yt, int8 in jobs:
            rows.append(measure(name, result, xt, yt, args, work, int8))
    by = {r["model"]: r for r in rows}
    b, i8 = by["MNIST binary"], by["MNIST int8"]
    checks = [
        {"check": "binary MNIST accuracy (full test set, host build) >= 97.5%",
         "value": b["accuracy"], "need": NEED_BINARY_ACCURACY},
        {"check": "int8 TFLite Micro flatbuffer bytes / binary flash bytes >= 4",
         "value": i8["tflm_flatbuffer_bytes"] / b["flash_bytes"], "need": NEED_FLASH_RATIO},
        {"check": "TFLite Micro int8 arena / binary peak RAM (arena + measured stack) >= 1",
         "value": i8["tflm_arena_bytes"] / b["ram_bytes"], "need": NEED_RAM_RATIO},
        {"check": "int8 CMSIS-NN instructions / binary instructions (Cortex-M4, QEMU) >= 2",
         "value": i8["instructions"] / b["instructions"], "need": NEED_INSTR_RATIO},
        {"check": "every QEMU run identical to the host build (1 = yes)",
         "value": float(all(r["qemu_identical"] for r in rows)), "need": 1.0},
    ]
    notes = ["Checks (issue 13):", ""]
    notes += [f"- {'PASS' if c['value'] >= c['need'] else 'FAIL'}: {c['check']}: "
              f"{c['value']:.4g} (need {c['need']})" for c in checks]
    notes += ["", "Instructions are QEMU instruction counts (`-icount shift=0`, SysTick), not "
              "cycles. Peak RAM = the library's static RAM (arena, statics) + the stack measured "
              "in QEMU during the first inference (it includes the SysTick exception frame); "
              "TFLite Micro's arena is the smallest `arena_size` its Python interpreter runs the "
              "int8 file with (the interpreter's own stack and objects are not in it)."]
    try:
        load_avg = os.getloadavg()
    except OSError:
        load_avg = None
    meta = {
        "job": "tools/bench_mcu.py" + (" --quick" if args.quick else ""), "seed": args.seed,
        "quick": args.quick, "checks": checks,
        "datasets": {"mnist": "official split", "cifar10": "JPEG copy (shared/data), official test split"},
        "budget": {"mnist_train": len(xm), "cifar_train": len(xc), "test": {"mnist": len(xmt), "cifar10": len(xct)},
                   "epochs": {"mnist_float": args.epochs_float, "mnist_binary": args.epochs_binary,
                              "cifar": args.epochs_cifar},
                   "mnist_filters": list(args.mnist_filters), "cifar_width": args.cifar_width,
                   "qemu_images": args.qemu_images},
        "target": "Cortex-M4 (qemu-system-arm -M mps2-an386 -icount shift=0), arm-none-eabi-gcc -Os",
        "toolchain": _toolchain(), "load_average": load_avg,
        "wall_s": round(time.perf_counter() - t_start, 1),
    }
    path = write_benchmark(args.name, rows, COLUMNS, meta, out_dir=args.out_dir,
                           title="Generated C on a Cortex-M4 (emulated): MNIST and CIFAR-10, "
                                 "float32 / int8 / binary", notes=notes)
    log(f"wrote {path}")
    for c in checks:
        log(f"{'PASS' if c['value'] >= c['need'] else 'FAIL'} {c['check']}: {c['value']:.4g}")
    return 0


def _toolchain():
    out = {}
    for tool in ("arm-none-eabi-gcc", "qemu-system-arm"):
        try:
            r = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=30)
            out[tool] = r.stdout.splitlines()[0] if r.stdout else ""
        except (OSError, subprocess.SubprocessError):
            out[tool] = None
    return out


if __name__ == "__main__":
    sys.exit(main())
