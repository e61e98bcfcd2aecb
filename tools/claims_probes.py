"""Ablations behind the 'why' column of benchmarks/claims.md: one claims-benchmark run
(tools/bench_claims.py's network, data split, budget and evaluation) with one layer option
changed, so a claim that does not hold can be traced to the option.

    python tools/claims_probes.py pcnn-j1 --seed 0      # PCNN with J = 1 projection (MNIST)
    python tools/claims_probes.py pcnn-j2 --seed 0      # J = 2, projections initialized to ones
    python tools/claims_probes.py pcnn-j2-signed        # J = 2, projections uniform(-1, 1)
    python tools/claims_probes.py xnor-no-k --seed 0    # XNOR-Net without input scaling K (CIFAR-10)
    python tools/claims_probes.py xnor-one-pad          # XNOR-Net with K, padding with +1
    python tools/claims_probes.py bireal-all-data       # Bi-Real on all 45,000 CIFAR-10 training
    python tools/claims_probes.py xnor-all-data         #   images (not 10,000), 20 epochs;
    python tools/claims_probes.py bnn-all-data          #   likewise BNN and PCNN
    python tools/claims_probes.py pcnn-all-data

Each prints one line ``RESULT <probe> seed <s>: <test accuracy> (<seconds> s; last epoch:
train <accuracy>, validation <accuracy>)``. Nothing is cached (the claims cache is not touched).
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_claims as BC  # noqa: E402


def _pcnn(projections, initializer="ones"):
    def make(filters):
        from tfcompress import keras
        from tfcompress import layers as L

        init = (keras.initializers.RandomUniform(-1, 1) if initializer == "signed" else initializer)
        return (L.PCNNConv2D(filters, 3, projections=projections, padding="same", mode="ternary",
                             projection_initializer=init), None)
    return make


def _xnor(**options):
    def make(filters):
        from tfcompress import layers as L

        return L.XNORConv2D(filters, 3, padding="same", use_bias=False, **options), None
    return make


# All CIFAR-10 training images but the validation ones (50,000 - 5,000), at 20 epochs: the
# data probes ask whether a larger training set, not more epochs, separates two methods.
ALL_DATA = {"train": 45000, "epochs": 20}

# probe -> (kind it replaces, dataset, layer factory (None: the benchmark's layer), budget
# changes)
PROBES = {
    "pcnn-j1": ("pcnn", "mnist", _pcnn(1), {}),
    "pcnn-j2": ("pcnn", "mnist", _pcnn(2), {}),
    "pcnn-j2-signed": ("pcnn", "mnist", _pcnn(2, "signed"), {}),
    "xnor-no-k": ("xnor", "cifar", _xnor(input_scaling=False), {}),
    "xnor-one-pad": ("xnor", "cifar", _xnor(pad_values=1.0), {}),
    "bireal-all-data": ("bireal", "cifar", None, ALL_DATA),
    "xnor-all-data": ("xnor", "cifar", None, ALL_DATA),
    "bnn-all-data": ("bnn", "cifar", None, ALL_DATA),
    "pcnn-all-data": ("pcnn", "cifar", None, ALL_DATA),
}


def probe_context(probe):
    """The benchmark's context with the probe's budget changes applied to the one run it
    replaces (over that run's own entry of RUN_BUDGETS, if any)."""
    kind, dataset, _, budget = PROBES[probe]
    ctx = BC.Context(argparse.Namespace(quick=False, out_dir=os.path.join(
        os.environ.get("TMPDIR", "/tmp"), "tfcompress_claims_probes")))
    run = f"{dataset}/{kind}"
    ctx.run_budgets = {**ctx.run_budgets, run: {**ctx.run_budgets.get(run, {}), **budget}}
    return ctx


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("probe", choices=sorted(PROBES))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    kind, dataset, factory, budget = PROBES[args.probe]
    if factory is not None:
        original = BC.quantized_conv
        BC.quantized_conv = (lambda k, filters: factory(filters) if k == kind
                             else original(k, filters))
    ctx = probe_context(args.probe)
    t0 = time.time()
    rec = BC.run_classifier(ctx, kind, args.seed, 1, dataset)
    print(f"RESULT {args.probe} seed {args.seed}: {rec['metric']:.4f} ({time.time() - t0:.0f} s; "
          f"last epoch: train {rec['train_curve'][-1]:.4f}, validation {rec['curve'][-1]:.4f})",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
