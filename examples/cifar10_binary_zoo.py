"""Binary image classifiers of the model zoo on CIFAR-10: Bi-Real Net, XNOR-Net and DA-BNN
(or any of ``tfcompress.models.CLASSIFIERS``), trained with Adam and cosine decay, converted
with Larq Compute Engine and run on the official test split in LCE's interpreter.

    TFCOMPRESS_DATA=../shared/data python examples/cifar10_binary_zoo.py                # ~20 min
    TFCOMPRESS_DATA=../shared/data python examples/cifar10_binary_zoo.py --models BiRealNet \\
        --width 64 --train-images 50000 --epochs 40                                   # hours

The defaults are sized for a 2-core machine (width 16, 10,000 random training images, 4 epochs),
far below the papers' budgets, so the accuracies are what such a budget gives, not the papers'.
On real data a few pre-sign values land within float rounding (~1e-6) of zero, so LCE and Keras
can binarize them differently: expect 100 % or near-100 % agreement and isolated logit
differences, not bit-identical outputs.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import tfcompress  # noqa: E402  (selects Keras 2 before TensorFlow loads)
from tfcompress import models  # noqa: E402
from tfcompress import keras  # noqa: E402
from tfcompress.data.preprocess import for_model  # noqa: E402


def augment(x, rng):
    """Random horizontal flips and 4-pixel translations (the standard CIFAR augmentation)."""
    flip = rng.random(len(x)) < 0.5
    x = np.where(flip[:, None, None, None], x[:, :, ::-1], x)
    padded = np.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0)), mode="reflect")
    dy, dx = rng.integers(0, 9, 2)
    return padded[:, dy:dy + 32, dx:dx + 32]


def train(name, x, y, *, width, epochs, batch_size=64, lr=5e-3, seed=0):
    keras.utils.set_random_seed(seed)
    kwargs = dict(input_shape=(32, 32, 3), num_classes=10, width=width)
    if name == "XNORNet":
        kwargs["width"] = 2 * width          # VGG-small starts wider than ResNet's first stage
    model = models.CLASSIFIERS[name](**kwargs)
    steps = epochs * int(np.ceil(len(x) / batch_size))
    model.compile(keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(lr, steps, alpha=0.02)),
                  "sparse_categorical_crossentropy", ["accuracy"])
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        model.fit(augment(x, rng), y, batch_size=batch_size, epochs=1, shuffle=True, verbose=0)
    return model


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["BiRealNet", "XNORNet", "DABNN"],
                   choices=sorted(models.CLASSIFIERS))
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--train-images", type=int, default=10000)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--test-images", type=int, default=0, help="0: the whole test split")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    (x, y), (xt, yt) = tfcompress.data.load("cifar10")
    # a random subset: the archive is stored class by class, so x[:n] would be one class
    idx = np.random.default_rng(args.seed).permutation(len(x))[:args.train_images]
    x, y = for_model("cifar10", x[idx]), y[idx].astype(np.int64)
    if args.test_images:
        keep = np.random.default_rng(args.seed + 1).permutation(len(xt))[:args.test_images]
        xt, yt = xt[keep], yt[keep]
    xt, yt = for_model("cifar10", xt), yt.astype(np.int64)
    print(f"CIFAR-10: {len(x)} train / {len(xt)} test images")
    for name in args.models:
        t0 = time.perf_counter()
        model = train(name, x, y, width=args.width, epochs=args.epochs, seed=args.seed)
        t_train = time.perf_counter() - t0
        rep = tfcompress.convert(model, target="lce").verify(xt, yt, latency_runs=50)
        print(f"{name}: {model.count_params():,} parameters, trained in {t_train:.0f} s; {rep}")


if __name__ == "__main__":
    main()
