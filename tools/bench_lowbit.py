"""Benchmark of issue 14: low-bit and mixed-precision models deployed with their trained grids.

For every quantizer family and bit width, on real MNIST and CIFAR-10: a float CNN is trained,
its quantized copy (hidden layers at the row's bits, first and last layers LSQ 8-bit, the LSQ
recipe) is fine-tuned, and the model is converted with ``tfcompress.convert(target="int8")``
(the exact-grid exporter: trained scales and zero points, clamps folded into the producing op,
<= 4-bit kernels packed where the runtime runs them exactly). Columns: Keras and file accuracy
on the full test split (file in LiteRT with XNNPACK), agreement, agreement in TFLite Micro on
the first ``--micro-examples`` test images, kernel bytes as stored, file KiB, and single-image
latency per runtime.

Two more tables: an OMPQ bit plan under a size budget beside the uniform 4-bit plan of the same
size, deployed end to end; and binary-input TRQ/ternary layers converted for LCE as sums of
binary convolutions, timed in LCE's interpreter and tfcompress's kernels beside the same
network shape in int8 XNNPACK.

    python tools/bench_lowbit.py             # full budget (about an hour on 2 shared cores)
    python tools/bench_lowbit.py --quick     # smoke run (MNIST, 1 row; about a minute)
"""

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

import tfcompress  # noqa: E402  (sets up Keras 2 before larq imports TensorFlow)
import larq as lq  # noqa: E402,I001
from tfcompress import layers as QL  # noqa: E402
from tfcompress import quantizers as Q  # noqa: E402
from tfcompress._keras import keras  # noqa: E402
from tfcompress.data.preprocess import for_model  # noqa: E402
from tfcompress.mixed_precision import apply, ompq, uniform_plan  # noqa: E402
from tfcompress.report import write_benchmark  # noqa: E402
from tfcompress.report.tables import commit_at_start  # noqa: E402

L = keras.layers
AGREEMENT_NEED = 0.995
# float I/O (QUANTIZE / DEQUANTIZE at the edges) lets the exporter run the classifier's last
# Dense and Softmax in 16x8: an int8 softmax output has steps of 1/256 and ties near-equal classes
IO_TYPE = "float32"
ACCURACY_GAP_PT = 0.3
# the reason a row below the agreement target carries (tools/lowbit_precision_probe.py)
BELOW_TARGET = ("below the agreement target with int8 compute: accumulator rounding moves "
                "0.01-0.2% of a 4-bit grid's integers by one level per layer and a weak model "
                "amplifies them; compute='16x8' removes it (benchmarks/lowbit_16x8)")
RELU_METHODS = ("float", "pact", "dorefa", "affine", "power_of_two", "ste_tern", "trq", "trq2")

# (method, bit widths): what each family can store exactly in int8 (power-of-two spans
# 2^(2^(b-1)-2) : 1, so at most 4 bits; DoReFa and PACT's DoReFa weights are odd integers
# up to 2^b - 1, so at most 7 bits; affine 8-bit weights need a zero point of 128).
ROWS = {
    "mnist": [("lsq", 2), ("lsq", 3), ("lsq", 4), ("lsq", 8), ("uniform", 2), ("uniform", 4),
              ("uniform", 8), ("affine", 2), ("affine", 4), ("power_of_two", 2),
              ("power_of_two", 3), ("power_of_two", 4), ("dorefa", 2), ("dorefa", 4),
              ("pact", 2), ("pact", 4), ("lsq_plus", 2), ("lsq_plus", 4), ("lsq_plus", 8),
              ("ste_tern", 2), ("trq", 2), ("trq2", 2)],
    "cifar10": [("lsq", 2), ("lsq", 4), ("lsq", 8), ("uniform", 4), ("affine", 4),
                ("power_of_two", 3), ("dorefa", 2), ("pact", 4), ("lsq_plus", 4),
                ("ste_tern", 2), ("trq", 2)],
}
QUICK_ROWS = {"mnist": [("lsq", 2)]}


def method_quantizers(method, bits):
    """(kernel quantizer, input quantizer) of a hidden layer."""
    a8 = Q.LSQ(bits=8, signed=True)
    return {
        "uniform": lambda: (Q.Uniform(bits=bits, per_channel=True), Q.Uniform(bits=bits, ema_decay=0.9)),
        "affine": lambda: (Q.Uniform(bits=bits, symmetric=False, per_channel=True),
                           Q.Uniform(bits=bits, symmetric=False, ema_decay=0.9)),
        "power_of_two": lambda: (Q.PowerOfTwo(bits=bits, per_channel=True), a8),
        "dorefa": lambda: (lq.quantizers.DoReFa(k_bit=bits, mode="weights"),
                           lq.quantizers.DoReFa(k_bit=bits, mode="activations")),
        "pact": lambda: (lq.quantizers.DoReFa(k_bit=bits, mode="weights"), Q.PACT(bits=bits, init=3.0)),
        "lsq": lambda: (Q.LSQ(bits=bits, per_channel=True), Q.LSQ(bits=bits, signed=True)),
        "lsq_plus": lambda: (Q.LSQ(bits=bits, per_channel=True), Q.LSQPlus(bits=bits)),
        "ste_tern": lambda: (Q.ste_tern(), a8),
        "trq": lambda: (Q.TRQ(residuals=1, per_channel=True), a8),
        "trq2": lambda: (Q.TRQ(residuals=2, per_channel=True), a8),
    }[method]()


def bits_label(method, bits):
    if method in ("power_of_two", "ste_tern", "trq", "trq2"):
        return f"W{bits}/A8"
    return f"W{bits}/A{bits}"


def build(dataset, method="float", bits=4, widths=None):
    """Stem (LSQ 8-bit) -> hidden convs at ``bits`` -> LSQ 8-bit Dense head -> softmax."""
    q = method != "float"
    relu = method in RELU_METHODS
    shape = (28, 28, 1) if dataset == "mnist" else (32, 32, 3)
    widths = widths or ((16, 32, 32) if dataset == "mnist" else (32, 64, 64, 128))
    inp = keras.Input(shape)

    def conv(f, spec, name):
        if not q:
            return L.Conv2D(f, 3, padding="same", use_bias=False, name=name)
        kq, iq = spec
        return QL.QuantConv2D(f, 3, padding="same", use_bias=False, kernel_quantizer=kq,
                              input_quantizer=iq, name=name)

    h = conv(widths[0], (Q.LSQ(bits=8, per_channel=True), Q.LSQ(bits=8, signed=True)), "stem")(inp)
    h = L.BatchNormalization(momentum=0.9, name="stem_bn")(h)
    h = L.ReLU(name="stem_relu")(h)
    for i, f in enumerate(widths[1:]):
        h = conv(f, method_quantizers(method, bits) if q else None, f"hidden{i}")(h)
        h = L.BatchNormalization(momentum=0.9, name=f"hidden{i}_bn")(h)
        if relu:
            h = L.ReLU(name=f"hidden{i}_relu")(h)
        if i < 2:
            h = L.MaxPool2D(2)(h)
    h = L.GlobalAveragePooling2D()(h) if dataset == "cifar10" else L.Flatten()(L.MaxPool2D(2)(h))
    dense = QL.QuantDense(10, kernel_quantizer=Q.LSQ(bits=8, per_channel=True),
                          input_quantizer=Q.LSQ(bits=8, signed=True), name="head") if q \
        else L.Dense(10, name="head")
    return keras.Model(inp, L.Softmax()(dense(h)), name=f"{dataset}_{method}_{bits}")


def transfer(src, dst):
    """Copy float weights into the same-named layers (quantizer variables untouched)."""
    for layer in dst.layers:
        try:
            other = src.get_layer(layer.name)
        except ValueError:
            continue
        own = {w.name.split("/")[-1]: w for w in layer.weights if "quantizer" not in w.name}
        for w in other.weights:
            key = w.name.split("/")[-1]
            if key in own and tuple(own[key].shape) == tuple(w.shape):
                own[key].assign(w)


def fit(model, x, y, epochs, lr, batch_size, seed):
    keras.utils.set_random_seed(seed)
    steps = epochs * int(np.ceil(len(x) / batch_size))
    opt = keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(lr, steps, alpha=0.05))
    model.compile(opt, "sparse_categorical_crossentropy", ["accuracy"])
    model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0)
    return model


def quantize_from(float_model, dataset, method, bits, x, y, budget, seed):
    keras.utils.set_random_seed(seed)
    model = build(dataset, method, bits)
    model(x[:256], training=True)              # build and initialize every quantizer on data
    transfer(float_model, model)
    model(x[:256], training=False)
    return fit(model, x[: budget["qat_examples"]], y[: budget["qat_examples"]], budget["qat_epochs"],
               budget["qat_lr"], budget["batch_size"], seed)


def deploy(model, target, x_calib, xt, yt, args, plan=None, pack_weights=True):
    """Convert and measure one model: accuracy, agreement, bytes and latency per runtime."""
    t = time.perf_counter()
    res = tfcompress.convert(model, target=target, representative_data=x_calib, plan=plan,
                             allow_low_bit=True, pack_weights=pack_weights, io_type=IO_TYPE)
    convert_s = time.perf_counter() - t
    rep = res.verify(xt, yt, latency_runs=args.latency_runs, warmup=10)
    n_micro = min(args.micro_examples, len(xt))
    mic = res.verify(xt[:n_micro], yt[:n_micro], runtime="micro",
                     latency_runs=max(args.latency_runs // 5, 5), warmup=2)
    rows = res.report()["layers"]
    kernels = [r for r in rows if r["role"] in ("kernel", "depthwise_kernel")]
    hidden = [r for r in kernels if r["layer"].startswith("hidden")]
    return res, {
        "keras_accuracy": rep.keras_accuracy, "file_accuracy": rep.accuracy,
        "agreement": rep.agreement, "accuracy_gap_pt": 100 * (rep.accuracy - rep.keras_accuracy),
        "micro_agreement": mic.agreement, "micro_examples": n_micro,
        "weight_bytes": sum(r["weight_bytes"] for r in kernels),
        "weight_bytes_trained": int(sum(np.ceil(r["params"] * r["trained_bits"] / 8) for r in kernels)),
        "hidden_stored_bits": "/".join(str(r["stored_bits"]) for r in hidden),
        "file_bytes": res.size, "litert_ms": rep.latency.get("median_ms"),
        "micro_ms": mic.latency.get("median_ms"), "convert_s": convert_s,
        "exact_layers": f"{sum(bool(r.get('exact')) for r in rows)}/{len(rows)}",
        "notes": sorted({n for r in rows for n in r.get("notes", []) if "widened" not in n}),
    }


def load(dataset, args):
    (x, y), (xt, yt) = tfcompress.data.load(dataset)
    n_train = args.train_examples or (2000 if args.quick else (20000 if dataset == "mnist" else 25000))
    n_test = 200 if args.quick else None
    x, y = for_model(dataset, x[:n_train]), y[:n_train].astype(np.int64)
    xt, yt = for_model(dataset, xt[:n_test]), yt[:n_test].astype(np.int64)
    return x, y, xt, yt


def budget_for(dataset, args):
    if args.quick:
        return {"float_epochs": 1, "qat_epochs": 1, "qat_examples": 1000, "batch_size": 64,
                "float_lr": 3e-3, "qat_lr": 1e-3}
    return {"float_epochs": 3 if dataset == "mnist" else 6, "qat_epochs": 1 if dataset == "mnist" else 2,
            "qat_examples": 10000 if dataset == "mnist" else 25000, "batch_size": 64,
            "float_lr": 3e-3, "qat_lr": 1e-3}


def log(msg):
    print(msg, flush=True)


def load_average():
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "-"


def run_methods(dataset, args, rows, data, floats):
    x, y, xt, yt = data
    budget = budget_for(dataset, args)
    t = time.perf_counter()
    fmodel = fit(build(dataset), x, y, budget["float_epochs"], budget["float_lr"],
                 budget["batch_size"], args.seed)
    floats[dataset] = fmodel
    acc = float((fmodel.predict(xt, batch_size=256, verbose=0).argmax(1) == yt).mean())
    log(f"[{dataset}] float model: test accuracy {acc:.4f} ({time.perf_counter() - t:.0f} s)")
    rows.append({"dataset": dataset, "method": "float (reference)", "bits": "32/32",
                 "keras_accuracy": acc})
    for method, bits in (QUICK_ROWS if args.quick else ROWS)[dataset]:
        t = time.perf_counter()
        row = {"dataset": dataset, "method": method, "bits": bits_label(method, bits), "bit_width": bits}
        try:
            model = quantize_from(fmodel, dataset, method, bits, x, y, budget, args.seed)
            _, info = deploy(model, "int8", x[:300], xt, yt, args)
            row.update(info)
            # the same model with every <= 4-bit kernel packed (size first)
            packed = tfcompress.convert(model, target="int8", representative_data=x[:300],
                                        allow_low_bit=True, pack_weights="always", io_type=IO_TYPE)
            prep = packed.verify(xt, yt, latency_runs=args.latency_runs, warmup=10)
            kernels = [r for r in packed.report()["layers"] if r["role"] == "kernel"]
            row.update(always_weight_bytes=sum(r["weight_bytes"] for r in kernels),
                       always_agreement=prep.agreement, always_file_accuracy=prep.accuracy,
                       always_litert_ms=prep.latency.get("median_ms"))
            if args.compute16:
                # the same model with compute="16x8" (exact first: int16 activations)
                e16 = tfcompress.convert(model, target="int8", representative_data=x[:300],
                                         allow_low_bit=True, compute="16x8", io_type=IO_TYPE)
                erep = e16.verify(xt, yt, latency_runs=args.latency_runs, warmup=10)
                n_micro = min(args.micro_examples, len(xt))
                emic = e16.verify(xt[:n_micro], yt[:n_micro], runtime="micro", latency_runs=0)
                row.update(x16_agreement=erep.agreement, x16_file_accuracy=erep.accuracy,
                           x16_micro_agreement=emic.agreement, x16_file_bytes=e16.size,
                           x16_litert_ms=erep.latency.get("median_ms"))
        except Exception as err:   # recorded in the table with its reason, never hidden
            row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"
        row["seconds"] = time.perf_counter() - t
        rows.append(row)
        log(f"[{dataset}] {method:12s} {row['bits']:7s} " + (
            f"keras {row['keras_accuracy']:.4f} file {row['file_accuracy']:.4f} agree "
            f"{row['agreement']:.4f} micro {row['micro_agreement']:.4f} weights "
            f"{row['weight_bytes']} B file {row['file_bytes']} B"
            + (f" | 16x8 agree {row['x16_agreement']:.4f} micro {row['x16_micro_agreement']:.4f}"
               if "x16_agreement" in row else "") + f" ({row['seconds']:.0f} s)"
            if "error" not in row else row["error"]))


def run_ompq(dataset, args, fmodel, data):
    """OMPQ plan under the size of the uniform 4-bit plan, both deployed end to end."""
    x, y, xt, yt = data
    budget = budget_for(dataset, args)
    uni = uniform_plan(fmodel, 4)
    budget_kb = uni.size_bytes / 1024
    plans = {"OMPQ": ompq(fmodel, x[:32], bit_choices=(2, 4, 8), size_budget_kb=budget_kb),
             "uniform 4-bit": uni}
    out = []
    for name, plan in plans.items():
        t = time.perf_counter()
        keras.utils.set_random_seed(args.seed)
        qmodel = apply(fmodel, plan, activation_bits=8, x_sample=x[:256])
        fit(qmodel, x[: budget["qat_examples"]], y[: budget["qat_examples"]], budget["qat_epochs"],
            budget["qat_lr"], budget["batch_size"], args.seed)
        for pack in (True, "always"):
            res, info = deploy(qmodel, "int8", x[:300], xt, yt, args, plan=plan, pack_weights=pack)
            info.update(dataset=dataset, plan=name, bits=" ".join(f"{k}:{b}" for k, b in plan.bits.items()),
                        plan_bytes=plan.size_bytes, budget_bytes=budget_kb * 1024,
                        packing="where exact" if pack is True else "always",
                        seconds=time.perf_counter() - t)
            out.append(info)
            log(f"[{dataset}] plan {name:14s} pack {info['packing']:10s} {info['bits']} acc "
                f"{info['file_accuracy']:.4f} agree {info['agreement']:.4f} micro "
                f"{info['micro_agreement']:.4f} weights {info['weight_bytes']} B")
    return out


def bitplane_model(method, binary=True, widths=(32, 64, 64)):
    """Float stem, two binary-input layers with ternary weights, float head (MNIST)."""
    inp = keras.Input((28, 28, 1))
    h = L.Conv2D(widths[0], 3, padding="same", use_bias=False)(inp)
    h = L.BatchNormalization(momentum=0.9)(h)
    for i, f in enumerate(widths[1:]):
        kq = Q.TRQ(residuals=1, per_channel=True) if method == "trq" else Q.ste_tern()
        iq = "ste_sign" if binary else Q.LSQ(bits=8, signed=True)
        h = QL.QuantConv2D(f, 3, padding="same", pad_values=1.0 if binary else 0.0, use_bias=False,
                           input_quantizer=iq, kernel_quantizer=kq, name=f"tern{i}")(h)
        h = L.BatchNormalization(momentum=0.9)(h)
        h = L.MaxPool2D(2)(h)
    h = L.GlobalAveragePooling2D()(h)
    return keras.Model(inp, L.Dense(10, activation="softmax")(h))


def run_bitplanes(args, data):
    """Part 3: sums of LceBconv2d in LCE and tfcompress kernels beside int8 XNNPACK."""
    budget = budget_for("mnist", args)
    out = []
    for method in ("trq",) if args.quick else ("trq", "ste_tern"):
        try:
            out.append(bitplane_row(method, args, data, budget))
        except Exception as err:   # recorded, never hidden
            out.append({"method": method, "error": f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"})
            log(f"[bitplanes] {method}: {out[-1]['error']}")
    return out


def bitplane_row(method, args, data, budget):
    """One method of part 3: the LCE file in both runtimes and its int8 XNNPACK twin."""
    x, y, xt, yt = data
    t = time.perf_counter()
    keras.utils.set_random_seed(args.seed)
    model = fit(bitplane_model(method), x, y, budget["float_epochs"], budget["float_lr"],
                budget["batch_size"], args.seed)
    res = tfcompress.convert(model, target="lce")
    row = {"method": method, "planes": "+".join(str(p["planes"]) for p in res.extras["bitplanes"]),
           "lce_ops": res.info.op_counts.get("LceBconv2d", 0), "file_bytes": res.size}
    for runtime in ("lce", "tfcompress"):
        rep = res.verify(xt, yt, runtime=runtime, latency_runs=args.latency_runs, warmup=10)
        row.update({f"{runtime}_agreement": rep.agreement, f"{runtime}_accuracy": rep.accuracy,
                    f"{runtime}_ms": rep.latency.get("median_ms"), "keras_accuracy": rep.keras_accuracy})
    # the same network shape with 8-bit activations, deployed int8 and run with XNNPACK
    twin = bitplane_model(method, binary=False)
    twin(x[:256], training=True)
    transfer(model, twin)
    tres = tfcompress.convert(twin, target="int8", representative_data=x[:300], io_type="float32",
                              allow_low_bit=True)
    trep = tres.verify(xt[:200], latency_runs=args.latency_runs, warmup=10)
    row.update(int8_ms=trep.latency.get("median_ms"), int8_file_bytes=tres.size,
               seconds=time.perf_counter() - t)
    log(f"[bitplanes] {method}: planes {row['planes']} lce {row['lce_agreement']:.4f} "
        f"({row['lce_ms']:.3f} ms) tfcompress {row['tfcompress_agreement']:.4f} "
        f"({row['tfcompress_ms']:.3f} ms) int8 XNNPACK {row['int8_ms']:.3f} ms")
    return row


def checks(rows, plans, planes):
    ok = [r for r in rows if "agreement" in r]
    failed = [f"{r['dataset']} {r['method']} {r['bits']}" for r in rows if "error" in r]
    out = [
        {"check": "every method row converts", "value": len(ok), "need": len(ok) + len(failed),
         "detail": "; ".join(failed)},
        {"check": f"min agreement (LiteRT) >= {AGREEMENT_NEED:.1%}",
         "value": min((r["agreement"] for r in ok), default=0.0), "need": AGREEMENT_NEED},
        {"check": f"- max |file - Keras accuracy| (pt) >= -{ACCURACY_GAP_PT}",
         "value": -max((abs(r["accuracy_gap_pt"]) for r in ok), default=99.0), "need": -ACCURACY_GAP_PT},
    ]
    for p in plans:
        if p["packing"] != "where exact":
            continue
        if p["plan"] == "OMPQ":
            out.append({"check": f"{p['dataset']} OMPQ plan bytes <= budget (budget / plan >= 1)",
                        "value": p["budget_bytes"] / p["plan_bytes"], "need": 1.0})
        out.append({"check": f"{p['dataset']} {p['plan']} plan agreement >= {AGREEMENT_NEED:.1%}",
                    "value": p["agreement"], "need": AGREEMENT_NEED})
    for r in planes:
        if "error" in r:
            out.append({"check": f"bit planes {r['method']} converts", "value": 0, "need": 1,
                        "detail": r["error"]})
            continue
        for runtime in ("lce", "tfcompress"):
            out.append({"check": f"bit planes {r['method']} {runtime} agreement >= {AGREEMENT_NEED:.1%}",
                        "value": r[f"{runtime}_agreement"], "need": AGREEMENT_NEED})
    x16 = [r for r in ok if "x16_agreement" in r]
    if x16:
        out.append({"check": f"min agreement with compute='16x8' (LiteRT) >= {AGREEMENT_NEED:.1%}",
                    "value": min(r["x16_agreement"] for r in x16), "need": AGREEMENT_NEED})
        out.append({"check": f"min agreement with compute='16x8' (Micro) >= {AGREEMENT_NEED:.1%}",
                    "value": min(r["x16_micro_agreement"] for r in x16), "need": AGREEMENT_NEED})
        out.append({"check": f"- max |16x8 file - Keras accuracy| (pt) >= -{ACCURACY_GAP_PT}",
                    "value": -max(100 * abs(r["x16_file_accuracy"] - r["keras_accuracy"]) for r in x16),
                    "need": -ACCURACY_GAP_PT})
    return out


def write_tables(args, rows, plans, planes, meta):
    """Checks, notes and the markdown/JSON tables (also from a saved JSON: --table-from)."""
    compute16 = any("x16_agreement" in r for r in rows)
    checks_ = checks(rows, plans, planes)
    for r in rows:
        r["notes"] = "; ".join(r.get("notes", [])) if isinstance(r.get("notes"), list) else r.get("notes")
        if "error" in r:
            r["notes"] = "not converted: " + r["error"]
        elif r.get("agreement") is not None and r["agreement"] < AGREEMENT_NEED \
                and BELOW_TARGET not in (r["notes"] or ""):
            r["notes"] = "; ".join(filter(None, [BELOW_TARGET, r["notes"]]))
    columns = (("dataset", "dataset", "{}"), ("method", "method", "{}"), ("bits", "W/A bits", "{}"),
               ("keras_accuracy", "Keras acc.", "{:.2%}"), ("file_accuracy", "file acc.", "{:.2%}"),
               ("agreement", "agreement", "{:.2%}"), ("micro_agreement", "agreement (Micro)", "{:.2%}"),
               ("weight_bytes", "weight bytes stored", "{:,}"),
               ("weight_bytes_trained", "weight bytes at trained bits", "{:,}"),
               ("hidden_stored_bits", "hidden stored bits", "{}"), ("file_bytes", "file KiB", "{:.1f}", 1 / 1024),
               ("litert_ms", "LiteRT ms", "{:.3f}"), ("micro_ms", "Micro ms", "{:.3f}"),
               ("always_weight_bytes", "all packed: weight bytes", "{:,}"),
               ("always_agreement", "all packed: agreement", "{:.2%}"),
               ("always_litert_ms", "all packed: LiteRT ms", "{:.3f}"),
               ) + ((("x16_agreement", "16x8: agreement", "{:.2%}"),
                     ("x16_micro_agreement", "16x8: agreement (Micro)", "{:.2%}"),
                     ("x16_file_bytes", "16x8: file KiB", "{:.1f}", 1 / 1024),
                     ("x16_litert_ms", "16x8: LiteRT ms", "{:.3f}")) if compute16 else ()) + (
               ("notes", "notes", "{}"),)
    from tfcompress.report.tables import markdown_table

    plan_cols = (("dataset", "dataset", "{}"), ("plan", "plan", "{}"), ("bits", "bits per layer", "{}"),
                 ("packing", "packed", "{}"), ("hidden_stored_bits", "hidden stored bits", "{}"),
                 ("budget_bytes", "budget B", "{:,.0f}"), ("plan_bytes", "plan B", "{:,.0f}"),
                 ("weight_bytes", "weight bytes stored", "{:,}"), ("file_bytes", "file KiB", "{:.1f}", 1 / 1024),
                 ("keras_accuracy", "Keras acc.", "{:.2%}"), ("file_accuracy", "file acc.", "{:.2%}"),
                 ("agreement", "agreement", "{:.2%}"), ("micro_agreement", "agreement (Micro)", "{:.2%}"),
                 ("litert_ms", "LiteRT ms", "{:.3f}"))
    plane_cols = (("method", "weights (binary inputs)", "{}"), ("planes", "LceBconv2d per layer", "{}"),
                  ("keras_accuracy", "Keras acc.", "{:.2%}"), ("lce_agreement", "agreement (LCE)", "{:.2%}"),
                  ("tfcompress_agreement", "agreement (tfcompress)", "{:.2%}"),
                  ("file_bytes", "LCE file KiB", "{:.1f}", 1 / 1024), ("lce_ms", "LCE ms", "{:.3f}"),
                  ("tfcompress_ms", "tfcompress ms", "{:.3f}"), ("int8_ms", "same shape int8 XNNPACK ms", "{:.3f}"))
    notes = [
        "- One row per method and bit width: the hidden conv layers at the row's bits (weights / "
        "activations; power-of-two, ste_tern and TRQ quantize weights only, with 8-bit LSQ "
        "activations); stem and head LSQ 8-bit. Quantized copies of one float model per "
        "dataset, fine-tuned (LSQ recipe). 'file' = the int8 target's flatbuffer run in LiteRT "
        "with its default XNNPACK delegate on the full test split; 'agreement (Micro)' = the same "
        "file in TFLite Micro on the first test images (see meta).",
        "- 'weight bytes stored' counts the kernels as the file stores them (INT4/INT2 packed or "
        "int8); 'at trained bits' is what the trained widths alone would take. 'hidden stored "
        "bits' lists the hidden layers' storage; a hidden layer at <= 4 bits kept int8 says why "
        "in the notes (integers beyond INT4, or a requantization multiplier above 2^-9 where "
        "the runtimes' double rounding would move outputs). 'all packed' = the same model "
        "converted with `pack_weights=\"always\"` (every <= 4-bit kernel that fits INT4 packed): "
        "the size-first choice and what it costs in agreement.",
        "- Latency: batch 1, one thread, median of the timed runs after warm-up; LiteRT with "
        "XNNPACK (packed convolutions run in LiteRT's builtin kernels, XNNPACK does not take "
        "them); Micro = tflite-micro's Python interpreter (reference kernels).",
        "- Files have float inputs/outputs (QUANTIZE/DEQUANTIZE at the edges), so the exporter runs "
        "the classifier's last Dense and Softmax in 16x8 (int16 activations, int8 weights); with "
        "int8 outputs the softmax has steps of 1/256 and near-equal classes tie (see notes).",
        "",
        "## OMPQ plan beside the uniform plan of the same size",
        "",
        markdown_table(plans, plan_cols),
        "",
        "- Both plans: LSQ kernels at the plan's bits, LSQ 8-bit activations (the setting of the "
        "OMPQ paper's BOPs), fine-tuned with the same budget. 'where exact' = the default "
        "`pack_weights=True`; 'always' = `pack_weights=\"always\"` (every <= 4-bit kernel "
        "INT4, at the price of the runtimes' double rounding next to 8-bit activations).",
        "",
        "## Binary-input ternary layers as sums of binary convolutions (LCE)",
        "",
        markdown_table(planes, plane_cols) if planes else "(not run)",
        "",
        "- 'same shape int8 XNNPACK': the same network with 8-bit activations instead of the "
        "binary ones (weights copied), converted to int8 and run with XNNPACK: the latency "
        "reference, not the same numbers.",
        "",
        "## Acceptance checks",
        "",
    ] + [f"- {'PASS' if c['value'] >= c['need'] else 'FAIL'}: {c['check']}: {c['value']:.4g} "
         f"(need {c['need']:.4g})" + (f" [{c['detail']}]" if c.get("detail") else "") for c in checks_]
    meta = {**meta, "checks": checks_, "plans": plans, "bitplanes": planes}
    path = write_benchmark("lowbit", rows, columns, meta, out_dir=args.out_dir,
                           title="Low-bit and mixed-precision models deployed with their trained grids "
                                 "(issue 14)", notes=notes)
    print(open(path).read())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--datasets", default=None, help="comma-separated (default: mnist,cifar10)")
    p.add_argument("--train-examples", type=int, default=None)
    p.add_argument("--micro-examples", type=int, default=None)
    p.add_argument("--latency-runs", type=int, default=None)
    p.add_argument("--out-dir", default="benchmarks")
    p.add_argument("--compute16", action="store_true",
                   help="also convert each row with compute='16x8' (int16 activations)")
    p.add_argument("--no-extras", action="store_true",
                   help="method rows only (no OMPQ plan, no bit-plane table)")
    p.add_argument("--table-from", default=None,
                   help="rewrite the tables from a saved lowbit.json (no training)")
    args = p.parse_args(argv)
    if args.table_from:
        saved = json.load(open(args.table_from))
        meta = {k: v for k, v in saved["meta"].items() if k not in ("checks", "plans", "bitplanes")}
        meta["table_rewritten"] = (f"tables rewritten from the saved rows by --table-from "
                                   f"(code {commit_at_start()}); figures from the run above")
        write_tables(args, saved["rows"], saved["meta"].get("plans", []),
                     saved["meta"].get("bitplanes", []), meta)
        return 0
    args.micro_examples = args.micro_examples or (20 if args.quick else 1000)
    args.latency_runs = args.latency_runs or (3 if args.quick else 100)
    datasets = (args.datasets or ("mnist" if args.quick else "mnist,cifar10")).split(",")
    t0 = time.perf_counter()
    load_start = load_average()
    rows, floats, plans, planes, data = [], {}, [], [], {}
    for ds in datasets:
        data[ds] = load(ds, args)
        run_methods(ds, args, rows, data[ds], floats)
    plan_ds = "mnist" if "mnist" in datasets else datasets[0]
    try:
        plans = [] if args.no_extras else run_ompq(plan_ds, args, floats[plan_ds], data[plan_ds])
    except Exception as err:   # recorded, never hidden
        plans = []
        log(f"[plans] {type(err).__name__}: {err}")
    if "mnist" in datasets and not args.no_extras:
        planes = run_bitplanes(args, data["mnist"])
    meta = {
        "datasets": {ds: f"{len(data[ds][0])} train / {len(data[ds][2])} test images (official test "
                         "split" + (", first 200" if args.quick else "") + ")" for ds in datasets},
        "budget": {ds: budget_for(ds, args) for ds in datasets},
        "micro_examples": args.micro_examples, "latency_runs": args.latency_runs,
        "seed": args.seed, "quick": args.quick,
        "load_average_start": load_start, "load_average_end": load_average(),
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }
    write_tables(args, rows, plans, planes, meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
