"""Subsets of a split that keep every class: what ``--limit N`` takes.

Since :func:`tfcompress.data.load` returns every split in a fixed class-mixed order, the first
``n`` examples are already a fair sample; :func:`balanced_indices` goes further and takes the
same number of each class, so a subset's accuracy weighs every class equally, as the full
(balanced) test splits of MNIST, CIFAR-10 and FSDD nearly do.
"""

import numpy as np

__all__ = ["balanced_indices", "class_labels", "random_indices"]


def class_labels(y):
    """Integer class labels from ``y`` (integers, or one-hot / scores with a class axis), or
    None when ``y`` does not look like class labels (floats that are not integral, several
    axes beyond the class axis).
    """
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:
        return y.argmax(-1).astype(np.int64)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.dtype.kind not in "iub" and not (
            y.dtype.kind == "f" and np.isfinite(y).all() and np.array_equal(y, np.round(y))):
        return None
    return y.astype(np.int64)


def balanced_indices(y, n):
    """Indices of ``n`` examples with (as nearly as possible) the same number of each class.

    Each of the ``k`` classes gets ``n // k`` or ``n // k + 1`` examples (the larger classes
    the extra ones); a class with fewer examples than its share gives its remainder to the
    others (water-filling), so exactly ``min(n, len(y))`` indices come back.
    Within a class the first examples in the split's order are taken; the indices are returned
    in ascending order, so the subset keeps the split's (mixed) order. Deterministic.

    Args:
        y: labels, integers or one-hot (see :func:`class_labels`).
        n: how many examples (a positive int).

    Returns:
        sorted ``int64`` indices into ``y``.

    Raises:
        ValueError: ``n`` is not a positive int, or ``y`` holds no class labels.

    >>> balanced_indices([0, 0, 0, 0, 1, 2, 2], 5).tolist()
    [0, 1, 4, 5, 6]
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}.")
    labels = class_labels(y)
    if labels is None:
        raise ValueError("balanced_indices needs class labels (integers or one-hot); "
                         "use random_indices for other targets.")
    n = min(int(n), len(labels))
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.zeros(len(classes), np.int64)
    left = n
    # Water-filling, smallest classes first: each class takes an equal share of what is left,
    # or all it has; so the quotas of classes with enough examples differ by at most one.
    for pos, j in enumerate(np.lexsort((classes, counts))):
        quota[j] = min(counts[j], left // (len(classes) - pos))
        left -= quota[j]
    picked = [np.flatnonzero(labels == c)[:q] for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(picked)).astype(np.int64)


def random_indices(length, n, seed=0):
    """Indices of ``n`` of ``length`` examples drawn without replacement, seeded, in ascending
    order (``np.random.RandomState(seed)``, whose stream numpy keeps fixed across versions).

    >>> random_indices(10, 3, seed=0).tolist()
    [2, 4, 8]
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}.")
    n = min(int(n), int(length))
    return np.sort(np.random.RandomState(seed).permutation(int(length))[:n]).astype(np.int64)
