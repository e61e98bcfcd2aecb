"""Multi-digit MNIST detection data from the real MNIST digits.

The shared data README's trick: paste several MNIST digits on a larger canvas and use their
tight bounding boxes as ground truth.
"""

import numpy as np

from tfcompress.data import load

INK_THRESHOLD = 0.25   # a pixel is part of the digit's tight box when its value is above this


def _resize(patch, size):
    from PIL import Image

    img = Image.fromarray(patch)
    return np.asarray(img.resize((size, size), Image.BILINEAR), np.float32) / 255.0


def multi_mnist(n, *, split="train", canvas_size=64, digits=(1, 4), digit_size=(12, 28),
                seed=0, data_dir=None, max_tries=100):
    """``n`` canvases with non-overlapping real MNIST digits and their tight boxes.

    Each canvas gets ``k ~ U{digits[0]..digits[1]}`` digits drawn at random from the MNIST
    ``split``; each digit is resized (bilinear) from 28x28 to ``s x s`` with
    ``s ~ U{digit_size[0]..digit_size[1]}`` and pasted (pixel-wise maximum) where its square does
    not overlap an earlier one (a digit that finds no free place in ``max_tries`` tries is
    skipped). Its box is the tight box of the pixels above :data:`INK_THRESHOLD`. Squares do not
    overlap, so boxes do not either, and box centres are at least ``digit_size[0] / 2`` apart
    in x or y. Deterministic for a given ``seed``.

    Args:
        n: number of images.
        split: ``"train"`` or ``"test"`` MNIST digits (keep them apart for honest evaluation).
        canvas_size: side of the square canvas in pixels.
        digits: ``(min, max)`` digits per canvas; ``min = 0`` allows empty images.
        digit_size: ``(min, max)`` side of a pasted digit in pixels.

    Returns:
        ``(images, boxes, labels)``: images ``(n, canvas, canvas, 1)`` float32 in [0, 1];
        boxes a list of ``(k, 4)`` float32 ``[x1, y1, x2, y2]`` arrays (pixel edges, see
        :mod:`tfcompress.detection.boxes`); labels a list of ``(k,)`` int64 arrays.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}.")
    lo, hi = digits
    if not 0 <= lo <= hi:
        raise ValueError(f"digits must be (min, max) with 0 <= min <= max, got {digits!r}.")
    smin, smax = digit_size
    if not 4 <= smin <= smax <= canvas_size:
        raise ValueError(f"digit_size must be (min, max) with 4 <= min <= max <= canvas_size "
                         f"({canvas_size}), got {digit_size!r}.")
    (x_train, y_train), (x_test, y_test) = load("mnist", data_dir=data_dir)
    source, source_labels = (x_train, y_train) if split == "train" else (x_test, y_test)
    rng = np.random.default_rng(seed)
    images = np.zeros((n, canvas_size, canvas_size, 1), np.float32)
    all_boxes, all_labels = [], []
    for i in range(n):
        squares, boxes, labels = [], [], []
        for _ in range(int(rng.integers(lo, hi + 1))):
            idx = int(rng.integers(len(source)))
            size = int(rng.integers(smin, smax + 1))
            for _ in range(max_tries):
                x0 = int(rng.integers(0, canvas_size - size + 1))
                y0 = int(rng.integers(0, canvas_size - size + 1))
                if all(x0 >= sx1 or x0 + size <= sx0 or y0 >= sy1 or y0 + size <= sy0
                       for sx0, sy0, sx1, sy1 in squares):
                    break
            else:
                continue
            patch = _resize(source[idx], size)
            ink = patch > INK_THRESHOLD
            if not ink.any():
                continue
            rows, cols = np.nonzero(ink)
            squares.append((x0, y0, x0 + size, y0 + size))
            region = images[i, y0:y0 + size, x0:x0 + size, 0]
            np.maximum(region, patch, out=region)
            boxes.append([x0 + cols.min(), y0 + rows.min(), x0 + cols.max() + 1, y0 + rows.max() + 1])
            labels.append(int(source_labels[idx]))
        all_boxes.append(np.asarray(boxes, np.float32).reshape(-1, 4))
        all_labels.append(np.asarray(labels, np.int64))
    return images, all_boxes, all_labels


__all__ = ["INK_THRESHOLD", "multi_mnist"]
