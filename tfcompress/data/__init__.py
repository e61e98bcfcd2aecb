"""Real datasets that load offline: MNIST, CIFAR-10 and the Free Spoken Digit Dataset.

>>> (x_train, y_train), (x_test, y_test) = load("mnist")      # doctest: +SKIP
>>> x_train.shape, x_train.dtype, y_train.dtype                 # doctest: +SKIP
((60000, 28, 28), dtype('uint8'), dtype('uint8'))

Where files are looked for, in order: ``data_dir`` (the argument), the ``TFCOMPRESS_DATA``
environment variable, then the user cache (``$TFCOMPRESS_CACHE``, else
``$XDG_CACHE_HOME/tfcompress``, else ``~/.cache/tfcompress``) under ``datasets/``. In each place
the files may sit in a sub-folder named after the dataset (``<root>/mnist/...``) or directly in
it. Nothing is downloaded: machines here have no network, so a missing file is an error that
names the files and every place searched.

Example order: every split comes in a fixed, class-mixed order, the same on every machine, so
``x[:n]`` is a fair sample (MNIST and the official CIFAR-10 batches keep their official order,
which is already mixed; the CIFAR-10 JPEG archive and FSDD, stored by class or speaker, are put
in the order of :func:`mixed_order`, a seeded permutation of the file names). Arrays cached by
an older tfcompress (another order) are never read: the cache is versioned
(:data:`CACHE_VERSION`). For a subset with the same number of each class use
:func:`balanced_indices`; for targets without classes, :func:`random_indices`.
"""

from tfcompress.data.loaders import (
    CACHE_VERSION, DATASETS, ORDER_SALT, cache_dir, find_dataset_dir, load, mixed_order,
)
from tfcompress.data.subsets import balanced_indices, class_labels, random_indices

__all__ = ["CACHE_VERSION", "DATASETS", "ORDER_SALT", "balanced_indices", "cache_dir",
           "class_labels", "find_dataset_dir", "load", "mixed_order", "random_indices"]
