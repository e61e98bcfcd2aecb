"""The ``tfcompress`` command: quickstart, doctor, convert, verify, benchmark, summary.

Arguments are parsed before TensorFlow loads (``tfcompress --help`` answers at once; see
:mod:`tfcompress._command`). Then, unless ``--debug`` is given, TensorFlow's start-up messages
are kept off the terminal: ``TF_CPP_MIN_LOG_LEVEL=2`` (when the user has not set it) and,
because TensorFlow and LiteRT print some lines before that setting is read (the oneDNN notice,
twice; "Could not find cuda drivers"; LiteRT's "Created TensorFlow Lite XNNPACK delegate"),
a filter on this process's standard error drops exactly those known lines and the CUDA
``cuInit`` error of machines without a GPU (GPUs stay usable: ``CUDA_VISIBLE_DEVICES`` is not
touched). Everything else written to standard error passes through unchanged.

Any error ends the command with one line naming the cause and a second with the way out;
``--debug`` shows the traceback (and every TensorFlow message) instead.

Modules: :mod:`~tfcompress.cli.parser` (the options), :mod:`~tfcompress.cli.commands`
(quickstart, doctor, convert, verify, summary), :mod:`~tfcompress.cli.benchmark`,
:mod:`~tfcompress.cli.data` (built-in datasets or the user's ``.npz``/``.npy``),
:mod:`~tfcompress.cli.quiet` (the stderr filter), :mod:`~tfcompress.cli.common`.
"""

import os
import sys

from tfcompress.cli.common import (
    CALIBRATED_TARGETS, CPUS, DATASET_SHAPES, DATASETS, IO_TYPES, ISAS, RUNTIMES, TARGETS,
    CliError,
)
from tfcompress.cli.parser import build_parser
from tfcompress.cli.quiet import QuietStderr, quiet_environment

__all__ = ["CALIBRATED_TARGETS", "CPUS", "CliError", "DATASETS", "DATASET_SHAPES", "IO_TYPES",
           "ISAS", "RUNTIMES", "TARGETS", "build_parser", "main"]


def _import_package():
    """Import the whole package (TensorFlow, every registered layer) if not done yet."""
    import tfcompress

    if not hasattr(tfcompress, "convert"):
        tfcompress._import_api()


def _report_error(command, err):
    from tfcompress.errors import TfcompressError

    known = isinstance(err, (CliError, TfcompressError, ValueError, ImportError, OSError))
    text = str(err).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = lines[0] if lines else type(err).__name__
    if not known or not lines:
        first = f"{type(err).__name__}: {first}" if lines else first
    if len(lines) > 1:
        first += f" (+{len(lines) - 1} more line(s) with --debug)"
    hint = getattr(err, "hint", None)
    if hint is None:
        hint = ("fix the cause named above (--debug shows the traceback)" if known else
                "this looks like a bug in tfcompress: rerun with --debug and report the traceback")
    print(f"tfcompress {command}: error: {first}", file=sys.stderr)
    print(f"  way out: {hint}", file=sys.stderr)


def main(argv=None):
    """Run the command line; returns the exit status (0 ok, 1 failed checks, 2 error)."""
    args = build_parser().parse_args(argv)
    quiet = None
    if not args.debug:
        quiet_environment()
        try:
            quiet = QuietStderr()
        except OSError:                 # no usable fd 2: nothing to filter
            quiet = None
    try:
        from tfcompress._env import select_keras2

        select_keras2()                 # before anything imports TensorFlow
        if args.pre is not None:
            args.pre(args)              # fast checks (files, option combinations) first
        if args.keras(args):            # Keras models to load: every tfcompress layer registered
            _import_package()
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"tfcompress {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:             # `tfcompress summary m.keras | head`: not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as err:  # one line + the way out; the traceback only with --debug
        if args.debug:
            raise
        _report_error(args.command, err)
        return 2
    finally:
        if quiet is not None:
            sys.stdout.flush()
            quiet.stop()

