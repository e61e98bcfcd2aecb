"""Benchmark of issue 7 on real MNIST with one budget and seed: OMPQ mixed precision vs uniform
4-bit (and a sensitivity baseline) at equal kernel size, a student with and without knowledge
distillation, and low-rank decomposition at ~50% of the parameters with fine-tuning.

    python tools/bench_compression.py            # full budget (about 10 minutes on 2 cores)
    python tools/bench_compression.py --quick    # smoke run
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import tfcompress  # noqa: E402
from tfcompress import mixed_precision as MP  # noqa: E402
from tfcompress import keras  # noqa: E402
from tfcompress.data.preprocess import for_model  # noqa: E402
from tfcompress.distill import Distiller  # noqa: E402
from tfcompress.lowrank import decompose, fine_tune  # noqa: E402
from tfcompress.report import write_benchmark  # noqa: E402


def cnn(widths, name, dense=128, input_shape=(28, 28, 1)):
    layers = [keras.Input(input_shape)]
    for i, w in enumerate(widths):
        layers += [keras.layers.Conv2D(w, 3, padding="same", activation="relu", name=f"conv{i}")]
        if i < 2:
            layers.append(keras.layers.MaxPool2D(2))
    layers += [keras.layers.Flatten(), keras.layers.Dense(dense, activation="relu", name="fc"),
               keras.layers.Dense(10, activation="softmax", name="out")]
    return keras.Sequential(layers, name=name)


def acc(model, x, y):
    return float((model.predict(x, batch_size=512, verbose=0).argmax(-1) == y).mean())


def fit(model, x, y, epochs, lr, batch_size):
    model.compile(keras.optimizers.Adam(lr), "sparse_categorical_crossentropy", ["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0)
    return model


def run(args):
    t0 = time.perf_counter()
    keras.utils.set_random_seed(args.seed)
    (x, y), (xt, yt) = tfcompress.data.load("mnist")
    n = 2000 if args.quick else args.train_examples
    x, y = for_model("mnist", x[:n]), y[:n]
    xt, yt = for_model("mnist", xt[: 300 if args.quick else None]), yt[: 300 if args.quick else None]
    ep = 1 if args.quick else args.epochs
    widths = (8, 16, 16) if args.quick else (32, 64, 64)
    rows = []

    teacher = fit(cnn(widths, "teacher"), x, y, ep, 1e-3, args.batch_size)
    rows.append({"experiment": "baseline", "model": "float32 CNN (teacher)", "accuracy": acc(teacher, xt, yt),
                 "params": teacher.count_params(), "kernel_kib": MP.uniform_plan(teacher, 16).size_bytes * 2 / 1024})

    # --- mixed precision at equal size -----------------------------------------------------
    sample = x[np.random.default_rng(args.seed).permutation(len(x))[:32]]
    uni = MP.uniform_plan(teacher, 4)
    budget = uni.size_bytes / 1024
    choices = (2, 3, 4, 5, 6, 8)
    plans = [uni, MP.ompq(teacher, sample, bit_choices=choices, size_budget_kb=budget, beta=10.0),
             MP.sensitivity_plan(teacher, sample, bit_choices=choices, size_budget_kb=budget)]
    for plan in plans:
        keras.utils.set_random_seed(args.seed)
        q = MP.apply(teacher, plan)
        before = acc(q, xt, yt)
        fit(q, x, y, args.qat_epochs if not args.quick else 1, 2e-4, args.batch_size)
        bits = ",".join(str(plan.bits[la.name]) for la in MP.quantizable_layers(teacher))
        rows.append({"experiment": "mixed precision", "model": f"{plan.method} (bits {bits})",
                     "accuracy": acc(q, xt, yt), "accuracy_before_finetune": before,
                     "params": q.count_params(), "kernel_kib": plan.size_bytes / 1024})

    # --- distillation ----------------------------------------------------------------------
    small = tuple(max(4, w // 4) for w in widths)
    for kd in (False, True):
        keras.utils.set_random_seed(args.seed)
        student = cnn(small, "student", dense=32)
        if kd:
            d = Distiller(student=student, teacher=teacher, temperature=4.0, alpha=0.9)
            d.compile(keras.optimizers.Adam(1e-3), metrics=["accuracy"])
            d.fit(x, y, epochs=ep, batch_size=args.batch_size, verbose=0)
        else:
            fit(student, x, y, ep, 1e-3, args.batch_size)
        rows.append({"experiment": "distillation", "model": "student + KD (T=4, alpha=0.9)" if kd else "student alone",
                     "accuracy": acc(student, xt, yt), "params": student.count_params(),
                     "kernel_kib": MP.uniform_plan(student, 16).size_bytes * 2 / 1024})

    # --- low-rank --------------------------------------------------------------------------
    low = decompose(teacher, param_ratio=0.5, method="tucker2", min_params=5000)
    before = acc(low, xt, yt)
    fine_tune(low, x, y, epochs=1, learning_rate=2e-4, batch_size=args.batch_size)
    ranks = "; ".join(f"{r['layer']}:{r['rank']}" for r in low.lowrank_report)
    rows.append({"experiment": "low-rank", "model": f"Tucker-2/SVD at <=50% params ({ranks})",
                 "accuracy": acc(low, xt, yt), "accuracy_before_finetune": before,
                 "params": low.count_params(), "kernel_kib": None})
    res = tfcompress.convert(low, target="int8", representative_data=x[:200])
    rows[-1]["int8_tflite_kib"] = res.size / 1024

    ompq_row = next(r for r in rows if r["model"].startswith("OMPQ"))
    uni_row = next(r for r in rows if r["model"].startswith("uniform"))
    alone = next(r for r in rows if r["model"] == "student alone")
    kd_row = next(r for r in rows if r["model"].startswith("student + KD"))
    notes = [
        f"- OMPQ >= uniform 4-bit at equal size: {ompq_row['accuracy']:.4f} vs {uni_row['accuracy']:.4f} -> "
        f"{'PASS' if ompq_row['accuracy'] >= uni_row['accuracy'] else 'FAIL'}",
        f"- KD student >= student alone: {kd_row['accuracy']:.4f} vs {alone['accuracy']:.4f} -> "
        f"{'PASS' if kd_row['accuracy'] >= alone['accuracy'] else 'FAIL'}",
        "- Mixed-precision rows: LSQ fake-quantized kernels (per output channel), activations float, "
        "QAT fine-tune at lr 2e-4; kernel KiB is at the planned bits (first/last layers at 8 bits).",
        "- Low-rank: decompose(param_ratio=0.5, min_params=5000): each layer with > 5000 kernel weights "
        "at <= 50% of its parameters, then one fine-tuning epoch; int8 file size shown.",
        "- Bit choices for OMPQ/sensitivity: 2, 3, 4, 5, 6, 8 (first and last layers fixed at 8).",
    ]
    columns = (("experiment", "experiment", "{}"), ("model", "model", "{}"), ("accuracy", "test acc.", "{:.2%}"),
               ("accuracy_before_finetune", "before fine-tune", "{:.2%}"), ("params", "params", "{:,}"),
               ("kernel_kib", "kernel KiB", "{:.1f}"), ("int8_tflite_kib", "int8 .tflite KiB", "{:.1f}"))
    meta = {"dataset": f"MNIST, first {len(x)} train / {len(xt)} test images", "epochs": ep,
            "qat_epochs": args.qat_epochs, "batch_size": args.batch_size, "seed": args.seed,
            "wall_seconds": round(time.perf_counter() - t0, 1)}
    path = write_benchmark("compression", rows, columns, meta, out_dir=args.out_dir,
                           title="Mixed precision, distillation and low-rank on MNIST (issue 7)", notes=notes)
    print(open(path).read())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--qat-epochs", type=int, default=1)
    p.add_argument("--train-examples", type=int, default=20000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--out-dir", default="benchmarks")
    run(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
