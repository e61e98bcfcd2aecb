"""Q-YOLO post-training quantization of a tiny YOLO-style detector on multi-digit MNIST.

Builds detection data from the real MNIST digits (several digits per 64x64 canvas, tight boxes
as ground truth; training canvases use MNIST-train digits, test canvases MNIST-test digits),
trains :func:`tfcompress.models.TinyYOLO`, then quantizes it to full int8 with three activation
ranges (Q-YOLO's unilateral histogram, min/max, 99.99th percentile; method card 6.4) and runs
every file in ai-edge-litert on the test canvases: mAP@0.5 and mAP@0.5:0.95 (COCO protocol).
Optionally it also trains the detector with a binarized backbone (DA-BNN, ASDA or Bi-Real) and
runs the Larq Compute Engine file.

    TFCOMPRESS_DATA=../shared/data python examples/multi_mnist_qyolo.py            # ~12 min
    TFCOMPRESS_DATA=../shared/data python examples/multi_mnist_qyolo.py --binary-backbone asda
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tfcompress  # noqa: E402  (selects Keras 2 before TensorFlow loads)
from tfcompress import detection  # noqa: E402
from tfcompress import keras  # noqa: E402
from tfcompress.models import TinyYOLO  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train-images", type=int, default=8000)
    p.add_argument("--test-images", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--calibration-images", type=int, default=300)
    p.add_argument("--binary-backbone", choices=["none", "dabnn", "asda", "bireal"], default="dabnn")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    x, boxes, labels = detection.multi_mnist(args.train_images, split="train", seed=args.seed)
    xt, bt, lt = detection.multi_mnist(args.test_images, split="test", seed=args.seed + 1)
    print(f"multi-digit MNIST: {len(x)} train / {len(xt)} test canvases, "
          f"{sum(map(len, bt))} test digits")

    t0 = time.perf_counter()
    model = TinyYOLO(input_shape=x.shape[1:], num_classes=10, width=args.width)
    detection.fit_detector(model, x, boxes, labels, epochs=args.epochs, learning_rate=2e-3)
    print(f"float detector trained in {time.perf_counter() - t0:.0f} s: Keras "
          f"{detection.evaluate(model, xt, bt, lt)}")
    float_file = tfcompress.convert(model, target="float32")
    print(f"float32 .tflite ({float_file.size / 1024:.1f} KiB): "
          f"{detection.evaluate(float_file, xt, bt, lt)}")
    calib = x[:args.calibration_images]
    for method in detection.METHODS:
        q = detection.ptq(model, calib, activation_range=method)
        print(f"int8 {method} ({q.size / 1024:.1f} KiB): {detection.evaluate(q, xt, bt, lt)}")

    if args.binary_backbone != "none":
        t0 = time.perf_counter()
        binary = TinyYOLO(input_shape=x.shape[1:], num_classes=10, width=args.width,
                          backbone=args.binary_backbone)
        detection.fit_detector(binary, x, boxes, labels, epochs=args.epochs, learning_rate=5e-3)
        lce = tfcompress.convert(binary, target="lce")
        print(f"{args.binary_backbone} backbone trained in {time.perf_counter() - t0:.0f} s; LCE "
              f"({lce.size / 1024:.1f} KiB): {detection.evaluate(lce, xt, bt, lt)}")


if __name__ == "__main__":
    main()
