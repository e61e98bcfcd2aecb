"""What every part of the command line shares: option values, the error type, small checks.

The lists are literal copies, so that ``--help`` needs no import beyond the standard library;
a test checks each against the package's own list.
"""

import argparse

DATASETS = ("mnist", "cifar10", "fsdd")
DATASET_SHAPES = {"mnist": (28, 28, 1), "cifar10": (32, 32, 3), "fsdd": (8000,)}
TARGETS = ("float32", "float16", "dynamic", "int8", "int16x8", "lce", "micro", "edgetpu")
CALIBRATED_TARGETS = ("int8", "int16x8", "micro", "edgetpu")
RUNTIMES = ("auto", "litert", "lce", "tfcompress", "micro")
ISAS = ("auto", "portable", "avx2", "avx512")
CPUS = ("host", "cortex-m4", "cortex-m7", "cortex-m33")
IO_TYPES = ("float32", "int8", "uint8", "int16")


__all__ = ["CALIBRATED_TARGETS", "CPUS", "CliError", "DATASETS", "DATASET_SHAPES", "IO_TYPES",
           "ISAS", "RUNTIMES", "TARGETS", "existing", "non_negative", "positive"]


class CliError(Exception):
    """A command-line problem: the message names the cause, ``hint`` the way out."""

    def __init__(self, message, hint=None):
        super().__init__(message)
        self.hint = hint


def existing(path, what, suffixes=None, folder_ok=False):
    from pathlib import Path

    p = Path(path).expanduser()
    if not p.exists():
        raise CliError(f"{what} {path} does not exist.", "check the path (and the current "
                       "directory)")
    if p.is_dir() and not folder_ok:
        raise CliError(f"{what} {path} is a folder, not a file.")
    if suffixes and p.is_file() and p.suffix.lower() not in suffixes:
        raise CliError(f"{what} {path} should be a {' or '.join(suffixes)} file.")
    return p


def positive(value):
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return n


def non_negative(value):
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value!r}")
    return n

