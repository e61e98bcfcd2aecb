"""Binary architecture search on CIFAR-10 with BNAS (book ch. 3), end to end.

Searches a binarized DARTS cell (BNAS: PC-DARTS architecture steps on a validation split plus
performance-based abandoning of operations), prints the genotype each epoch, saves it as JSON,
derives a deeper binary network from it, trains that, converts it with Larq Compute Engine and
checks the file in LCE's interpreter.

    TFCOMPRESS_DATA=../shared/data python examples/cifar10_bnas.py             # ~15 min, 2 cores
    TFCOMPRESS_DATA=../shared/data python examples/cifar10_bnas.py --strategy darts

Images are average-pooled to 16x16 to fit a 2-core CPU; on a GPU use ``--image-size 32``, more
images and epochs (the paper searches 50 epochs on 25k/25k images).
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import tfcompress  # noqa: E402  (selects Keras 2 before TensorFlow loads)
from tfcompress import nas  # noqa: E402
from tfcompress.data.preprocess import for_model  # noqa: E402


def load(n_train, n_test, size, seed):
    (x, y), (xt, yt) = tfcompress.data.load("cifar10")
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(x))[:n_train]            # the archive is stored class by class
    tidx = rng.permutation(len(xt))[:n_test]

    def shrink(a):
        a = for_model("cifar10", a)
        f = 32 // size
        return a.reshape(len(a), size, f, size, f, 3).mean(axis=(2, 4))

    return (shrink(x[idx]), y.reshape(-1)[idx]), (shrink(xt[tidx]), yt.reshape(-1)[tidx])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--strategy", default="bnas", choices=["bnas", "darts", "pcdarts", "idarts"])
    p.add_argument("--train-images", type=int, default=8000, help="half for weights, half for alpha")
    p.add_argument("--test-images", type=int, default=2000)
    p.add_argument("--image-size", type=int, default=16, choices=(16, 32))
    p.add_argument("--search-epochs", type=int, default=20)
    p.add_argument("--search-cells", type=int, default=3, help="cells of the supernet")
    p.add_argument("--nodes", type=int, default=3, help="intermediate nodes per cell (DARTS: 4)")
    p.add_argument("--epochs", type=int, default=8, help="training epochs of the derived network")
    p.add_argument("--out", default="bnas_out")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    tfcompress.keras.utils.set_random_seed(args.seed)
    (x, y), (xt, yt) = load(args.train_images, args.test_images, args.image_size, args.seed)
    half = len(x) // 2
    space = nas.DartsSpace(num_cells=args.search_cells, channels=8, ops="binary",
                           nodes=args.nodes, partial_channels=2)
    supernet = space.build(x.shape[1:], 10)
    kwargs = dict(batch_size=32, seed=args.seed, verbose=1)
    if args.strategy in ("bnas", "pcdarts", "idarts"):
        kwargs["warmup_epochs"] = min(4, args.search_epochs // 4)
    search = nas.get_strategy(args.strategy, space, (x[half:], y[half:]), **kwargs)
    t0 = time.perf_counter()
    supernet.fit(x[:half], y[:half], batch_size=32, epochs=args.search_epochs, verbose=0,
                 callbacks=[search])
    genotype = search.genotype()
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "genotype.json"), "w") as f:
        f.write(genotype.to_json())
    print(f"search: {time.perf_counter() - t0:.0f} s -> {genotype}")
    nas.plot_genotype(genotype, os.path.join(args.out, "cells.png"))

    model = space.derive(genotype, num_cells=4, channels=8)
    t0 = time.perf_counter()
    model.fit(x, y, batch_size=64, epochs=args.epochs, verbose=0)
    print(f"derived network: {model.count_params():,} parameters, trained in "
          f"{time.perf_counter() - t0:.0f} s")
    model.save(os.path.join(args.out, "derived.keras"))
    result = tfcompress.convert(model, target="lce")
    result.save(os.path.join(args.out, "derived.tflite"))
    report = result.verify(xt, yt, latency_runs=20)
    print(f"LCE file: {report}")
    summary = {"genotype": json.loads(genotype.to_json()), "params": model.count_params(),
               "lce_accuracy": report.accuracy, "agreement": report.agreement,
               "lce_bytes": result.size}
    with open(os.path.join(args.out, "result.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary


if __name__ == "__main__":
    main()
