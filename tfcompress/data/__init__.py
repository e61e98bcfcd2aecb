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
"""

from tfcompress.data.loaders import DATASETS, cache_dir, find_dataset_dir, load

__all__ = ["DATASETS", "cache_dir", "find_dataset_dir", "load"]
