"""The argument parser of the ``tfcompress`` command (standard library only at import)."""

import argparse

from tfcompress.cli.benchmark import cmd_benchmark, pre_benchmark
from tfcompress.cli.commands import (
    cmd_convert, cmd_doctor, cmd_quickstart, cmd_summary, cmd_verify, pre_convert,
    pre_quickstart, pre_summary, pre_verify,
)
from tfcompress.cli.common import CPUS, IO_TYPES, ISAS, RUNTIMES, TARGETS, non_negative, positive

__all__ = ["build_parser"]


def _add_runtime_options(p, extra_help="", **runtime_kwargs):
    p.add_argument("--runtime", choices=RUNTIMES, metavar="{" + ",".join(RUNTIMES) + "}",
                   help=("interpreter: auto (tfcompress's kernels for LCE files when built, "
                         "else LCE's interpreter; LiteRT for other files), litert "
                         "(ai-edge-litert), lce (Larq Compute Engine), tfcompress (LiteRT + "
                         "tfcompress's binary kernels), micro (TFLite Micro)") + extra_help,
                   **runtime_kwargs)
    p.add_argument("--threads", type=positive, default=1,
                   help="interpreter threads (default: %(default)s)")
    p.add_argument("--isa", choices=ISAS, default=None,
                   help="instruction set of the tfcompress kernels (default: the best this CPU "
                        "has, or $TFCOMPRESS_KERNELS_ISA)")


def build_parser():
    """The argument parser (no TensorFlow import: ``--help`` and usage errors are instant)."""
    from tfcompress import __version__

    p = argparse.ArgumentParser(
        prog="tfcompress",
        description="Compress Keras models and run them as TFLite, LCE and TFLite Micro files.",
        epilog="Run `tfcompress <command> --help` for a command's options.")
    p.add_argument("--version", action="version", version=f"tfcompress {__version__}",
                   help="print the version and exit")
    p.add_argument("--debug", action="store_true",
                   help="show tracebacks and every TensorFlow log message")
    sub = p.add_subparsers(dest="command", required=True, metavar="<command>")

    q = sub.add_parser("quickstart", help="train, convert and verify float/int8/binary MNIST CNNs",
                       description="Train a small CNN on MNIST as float32, int8 and binary, "
                                   "convert each and verify it in its interpreter.")
    q.add_argument("--out", default="quickstart_out", help="output folder (default: %(default)s)")
    q.add_argument("--epochs-float", type=positive, default=2,
                   help="training epochs of the float CNN (default: %(default)s)")
    q.add_argument("--epochs-binary", type=positive, default=5,
                   help="training epochs of the binary CNN (default: %(default)s)")
    q.add_argument("--train-examples", type=positive, default=None,
                   help="train on the first N training images only (default: all 60,000)")
    q.add_argument("--test-examples", type=positive, default=None,
                   help="verify on the first N test images only (default: all 10,000)")
    q.add_argument("--latency-runs", type=positive, default=200,
                   help="timed single-image runs per model (default: %(default)s)")
    q.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    q.add_argument("--data-dir", default=None,
                   help="folder holding mnist/ (default: $TFCOMPRESS_DATA, then the user cache)")
    q.add_argument("--quiet", action="store_true", help="print only the final table")
    q.set_defaults(func=cmd_quickstart, pre=pre_quickstart, keras=lambda args: True)

    d = sub.add_parser("doctor", help="check versions, Keras 2, interpreters and data",
                       description="Check that this installation can compress, convert and run "
                                   "models; exits 1 when a check fails.")
    d.add_argument("--json", action="store_true", help="print the checks as JSON")
    d.add_argument("--require-data", action="store_true",
                   help="fail (not just warn) when a built-in dataset is missing")
    d.set_defaults(func=cmd_doctor, pre=None, keras=lambda args: True)

    c = sub.add_parser("convert", help="convert a .keras/.h5/SavedModel to a .tflite file",
                       description="Convert a Keras model for a deployment target.")
    c.add_argument("model", help=".keras or .h5 file, or SavedModel folder")
    c.add_argument("--target", required=True, choices=TARGETS,
                   help="what to convert for: " + ", ".join(TARGETS))
    c.add_argument("-o", "--output", required=True, help="the .tflite file to write")
    c.add_argument("--data", default=None, metavar="NAME|FILE",
                   help="calibration data for integer targets: 500 class-balanced training "
                        "examples of a built-in dataset, or your own x from a .npz (keys x, y) "
                        "or .npy file")
    c.add_argument("--calibration", default=None, metavar="FILE",
                   help="calibration inputs as a .npy array or a .npz with key x")
    c.add_argument("--io-type", choices=IO_TYPES, default=None,
                   help="type of the model's inputs and outputs (default: int8 for int8, micro "
                        "and edgetpu, else float32)")
    c.add_argument("--data-dir", default=None,
                   help="folder holding the built-in datasets (default: $TFCOMPRESS_DATA)")
    c.add_argument("--emit-c", default=None, metavar="DIR",
                   help="also write C sources for a microcontroller to DIR")
    c.add_argument("--cpu", choices=CPUS, default=None,
                   help="processor the C sources are built for (with --emit-c; default: the "
                        "generator's)")
    c.set_defaults(func=cmd_convert, pre=pre_convert, keras=lambda args: True)

    v = sub.add_parser("verify", help="run a .tflite on a test set in its interpreter",
                       description="Run a .tflite file on a dataset in a real interpreter: "
                                   "accuracy, agreement with the Keras model, size, latency.")
    v.add_argument("model", help="the Keras model to compare with (optional: `verify FILE.tflite"
                                 " --data ...` runs the .tflite alone)")
    v.add_argument("tflite", nargs="?", default=None, help="the .tflite file")
    v.add_argument("--data", required=True, metavar="NAME|FILE",
                   help="test data: a built-in dataset's test split, or your own .npz (keys x "
                        "and optional y) or .npy (x) file")
    v.add_argument("--data-dir", default=None,
                   help="folder holding the built-in datasets (default: $TFCOMPRESS_DATA)")
    v.add_argument("--limit", type=positive, default=None,
                   help="use N examples: the same number of each class when there are labels, "
                        "else a seeded random subset (default: all)")
    _add_runtime_options(v, default="auto", extra_help=" (default: %(default)s)")
    v.add_argument("--latency-runs", type=non_negative, default=100,
                   help="timed single-example runs (0: skip latency; default: %(default)s)")
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    v.set_defaults(func=cmd_verify, pre=pre_verify, keras=lambda args: args.model is not None)

    b = sub.add_parser("benchmark", help="latency of one .tflite in each runtime, side by side",
                       description="Time one .tflite file (batch 1) in every runtime that can "
                                   "run it, or in the ones named, interleaved on the same "
                                   "input; prints median, p10 and p90 latency per runtime.")
    b.add_argument("tflite", help="the .tflite file")
    _add_runtime_options(b, action="append", default=None,
                         extra_help="; repeat for several (default: every runtime that can "
                                    "run the file)")
    b.add_argument("--runs", type=positive, default=200,
                   help="timed runs per runtime (default: %(default)s)")
    b.add_argument("--warmup", type=non_negative, default=20,
                   help="untimed runs first (default: %(default)s)")
    b.add_argument("--data", default=None, metavar="NAME|FILE",
                   help="time on the first example of a built-in dataset's test split or of "
                        "your own .npz (key x) / .npy file (default: a seeded random input)")
    b.add_argument("--data-dir", default=None,
                   help="folder holding the built-in datasets (default: $TFCOMPRESS_DATA)")
    b.add_argument("--seed", type=int, default=0,
                   help="seed of the random input (default: %(default)s)")
    b.add_argument("--profile", action="store_true",
                   help="also print time per op type and per node in each runtime "
                        "(tfcompress.runtime.profile)")
    b.add_argument("--json", action="store_true", help="print the results as JSON")
    b.set_defaults(func=cmd_benchmark, pre=pre_benchmark, keras=lambda args: False)

    s = sub.add_parser("summary", help="per-layer params, bits, memory, MACs/BOPs and sparsity",
                       description="Summarize a Keras model layer by layer.")
    s.add_argument("model", help=".keras/.h5 file or SavedModel folder")
    s.add_argument("--json", action="store_true", help="print JSON instead of the text table")
    s.add_argument("--plot", default=None, metavar="PNG",
                   help="also write a bar chart of memory per layer to this PNG file")
    s.set_defaults(func=cmd_summary, pre=pre_summary, keras=lambda args: True)
    return p

