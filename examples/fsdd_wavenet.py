"""1-bit WaveNet on the Free Spoken Digit Dataset (method card 6.1, a design proposal [D]).

Trains the float WaveNet and its Bi-Real and PCNN binarizations on FSDD (official split: 2,700
train / 300 test recordings, 1 s at 8 kHz), converts the float one to TFLite and the binary ones
with Larq Compute Engine, and runs every file on the whole test set in its real interpreter.

    TFCOMPRESS_DATA=../shared/data python examples/fsdd_wavenet.py          # ~10 min, 2 cores
    TFCOMPRESS_DATA=../shared/data python examples/fsdd_wavenet.py --epochs 2 --variants bireal

PCNN is trained with :class:`tfcompress.layers.PCNNTrainer` (projection loss, lambda 1e-4)
and :class:`~tfcompress.layers.ProgressiveBinarization` (ternary for the first quarter of the
epochs, then binary), as card 6.1 describes.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import tfcompress  # noqa: E402  (selects Keras 2 before TensorFlow loads)
from tfcompress import audio, layers, models  # noqa: E402
from tfcompress import keras  # noqa: E402

VARIANTS = {"float": None, "bireal": "bireal", "pcnn": "pcnn"}


def train(binarization, x, y, *, epochs, batch_size=32, lr=None, channels=32, seed=0):
    """Build and train one WaveNet variant; returns the (plain Keras) model."""
    keras.utils.set_random_seed(seed)
    model = models.BinaryWaveNet(input_length=x.shape[1], num_classes=10,
                                 binarization=binarization, channels=channels)
    lr = lr or (2e-3 if binarization is None else 5e-3)
    steps = epochs * int(np.ceil(len(x) / batch_size))
    opt = keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(lr, steps, alpha=0.02))
    trainer, callbacks = model, []
    if binarization == "pcnn":
        trainer = layers.PCNNTrainer(model, lam=1e-4)
        callbacks = [layers.ProgressiveBinarization(switch_epoch=max(1, epochs // 4))]
    trainer.compile(opt, "sparse_categorical_crossentropy", ["accuracy"])
    trainer.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0,
                callbacks=callbacks)
    return model


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-recordings", type=int, default=0,
                   help="train on a random subset of this many recordings (0: all 2,700)")
    p.add_argument("--test-recordings", type=int, default=0, help="0: all 300")
    args = p.parse_args(argv)

    (x, y), (xt, yt) = tfcompress.data.load("fsdd")
    x = audio.check_waveforms(x, input_length=8000, sample_rate=8000)
    xt = audio.check_waveforms(xt, input_length=8000, sample_rate=8000)
    rng = np.random.default_rng(args.seed)
    if args.train_recordings:
        keep = rng.permutation(len(x))[:args.train_recordings]
        x, y = x[keep], y[keep]
    if args.test_recordings:
        keep = rng.permutation(len(xt))[:args.test_recordings]
        xt, yt = xt[keep], yt[keep]
    print(f"FSDD: {len(x)} train / {len(xt)} test recordings")
    for name in args.variants:
        t0 = time.perf_counter()
        model = train(VARIANTS[name], x, y, epochs=args.epochs, channels=args.channels, seed=args.seed)
        t_train = time.perf_counter() - t0
        res = tfcompress.convert(model, target="float32" if name == "float" else "lce")
        rep = res.verify(xt, yt, latency_runs=50)
        print(f"{name:>6}: trained {args.epochs} epochs in {t_train:.0f} s; {rep}")


if __name__ == "__main__":
    main()
