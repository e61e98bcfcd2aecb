"""Where a low-bit CIFAR-10 file parts from Keras: per-grid agreement, and whether 16x8 helps.

Trains bench_lowbit's CIFAR-10 float CNN (4 epochs, 10,000 images), fine-tunes a uniform
4-bit copy (1 epoch), converts it with the exact-grid exporter twice: with the default
precision rule (16x8 only where the requantization multiplier exceeds 2^-10), with 16x8
wherever an 8-bit input grid allows it (threshold 0), and with ``compute="16x8"`` (every
quantized layer in 16x8), and prints for each: Keras/file accuracy
and agreement on the first 3,000 test images, the share of each activation grid's integers
equal to Keras's (tfcompress.conversion.lowbit.grid_agreement on 100 images), and the layers'
storage, compute precision and multipliers. Output of one run: benchmarks/lowbit_precision_probe.txt.

    python tools/lowbit_precision_probe.py      # about 10 minutes on 2 cores
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_lowbit as B  # noqa: E402
import tfcompress  # noqa: E402
from tfcompress.conversion import lowbit_emit as E  # noqa: E402
from tfcompress.conversion.lowbit import grid_agreement  # noqa: E402


class Args:
    quick = False
    train_examples = 10000
    seed = 0


def main():
    x, y, xt, yt = B.load("cifar10", Args)
    xt, yt = xt[:3000], yt[:3000]
    f = B.fit(B.build("cifar10"), x, y, 4, 3e-3, 64, 0)
    print("float accuracy", (f.predict(xt, verbose=0).argmax(1) == yt).mean(), flush=True)
    budget = B.budget_for("cifar10", Args)
    budget.update(qat_examples=10000, qat_epochs=1)
    m = B.quantize_from(f, "cifar10", "uniform", 4, x, y, budget, 0)
    default = E.PRECISION_MULTIPLIER
    try:
        for threshold, compute in ((default, "int8"), (0.0, "int8"), (default, "16x8")):
            E.PRECISION_MULTIPLIER = threshold
            r = tfcompress.convert(m, target="int8", representative_data=x[:300],
                                   io_type="float32", compute=compute)
            print(f"compute={compute!r}:", flush=True)
            rep = r.verify(xt, yt, latency_runs=0)
            print(f"16x8 threshold {threshold:g}: keras {rep.keras_accuracy:.4f} file "
                  f"{rep.accuracy:.4f} agreement {rep.agreement:.4f}", flush=True)
            for g in grid_agreement(r, xt[:100]):
                print(f"   grid {g['layer']} {g['quantizer']}: {g['agreement']:.5f} equal, "
                      f"max {g['max_steps']} level(s) apart", flush=True)
            for row in r.report()["layers"]:
                if row["role"] == "kernel":
                    print(f"   layer {row['layer']}: stored {row['stored_bits']} bits, computes "
                          f"{row.get('compute_bits')}, multiplier {row.get('multiplier', 0):.2g}; "
                          f"{'; '.join(row.get('notes', []))}", flush=True)
    finally:
        E.PRECISION_MULTIPLIER = default


if __name__ == "__main__":
    main()
