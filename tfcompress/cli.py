"""The ``tfcompress`` command: quickstart, doctor, convert, verify, summary."""

import argparse
import os
import sys


def _setup_env():
    # Keras 2 before TensorFlow loads; quieter TensorFlow C++ logs for a command-line tool.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tfcompress  # noqa: F401  (selects Keras 2)


def _cmd_quickstart(args):
    from tfcompress.quickstart import run

    run(args.out, epochs_float=args.epochs_float, epochs_binary=args.epochs_binary,
        train_examples=args.train_examples, test_examples=args.test_examples, seed=args.seed,
        data_dir=args.data_dir, latency_runs=args.latency_runs, verbose=0 if args.quiet else 1)
    return 0


def _cmd_doctor(args):
    from tfcompress.doctor import main

    return main(as_json=args.json, require_data=args.require_data)


def _load_keras(path):
    from tfcompress.models_io import load_model

    return load_model(path)


def _load_data(name, data_dir, limit):
    from tfcompress.data import load
    from tfcompress.data.preprocess import for_model

    (_, _), (x, y) = load(name, data_dir=data_dir)
    return for_model(name, x[:limit]), y[:limit]


def _cmd_convert(args):
    import numpy as np

    from tfcompress.conversion import convert

    model = _load_keras(args.model)
    calib = None
    if args.calibration is not None:
        calib = np.load(args.calibration)
    elif args.data is not None:
        from tfcompress.data import load
        from tfcompress.data.preprocess import for_model

        (x, _), _ = load(args.data, data_dir=args.data_dir)
        calib = for_model(args.data, x[np.random.default_rng(0).permutation(len(x))[:500]])
    result = convert(model, target=args.target, representative_data=calib)
    path = result.save(args.output)
    print(f"wrote {path} ({result.size} bytes, target {result.target}, runtime {result.runtime})")
    ops = ", ".join(f"{k} x{v}" for k, v in sorted(result.info.op_counts.items()))
    print(f"ops: {ops}")
    for name in result.extras.get("files", {}):
        print(f"wrote {path.parent / name}")
    return 0


def _cmd_verify(args):
    from tfcompress.runtime.verify import verify

    model = _load_keras(args.model) if args.model else None
    x, y = _load_data(args.data, args.data_dir, args.limit)
    rep = verify(args.tflite, x, y, keras_model=model, runtime=args.runtime,
                 num_threads=args.threads, latency_runs=args.latency_runs, progress=True)
    print(rep.to_json() if args.json else rep)
    return 0


def _cmd_summary(args):
    from tfcompress.report import summary

    model = _load_keras(args.model)
    try:
        report = summary(model)
    except (TypeError, ValueError) as err:
        from tfcompress.errors import TfcompressError

        raise TfcompressError(f"Cannot summarize {args.model}: {err}") from err
    print(report.to_json() if args.json else report.to_text())
    if args.plot:
        path = report.plot(args.plot)
        print(f"wrote {path}", file=sys.stderr if args.json else sys.stdout)
    return 0


def build_parser():
    p = argparse.ArgumentParser(prog="tfcompress", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    q = sub.add_parser("quickstart", help="train, convert and verify float/int8/binary MNIST CNNs")
    q.add_argument("--out", default="quickstart_out", help="output folder (default: %(default)s)")
    q.add_argument("--epochs-float", type=int, default=2)
    q.add_argument("--epochs-binary", type=int, default=5)
    q.add_argument("--train-examples", type=int, default=None, help="first N train images only")
    q.add_argument("--test-examples", type=int, default=None, help="first N test images only")
    q.add_argument("--latency-runs", type=int, default=200)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--data-dir", default=None, help="folder holding mnist/ (else TFCOMPRESS_DATA)")
    q.add_argument("--quiet", action="store_true")
    q.set_defaults(func=_cmd_quickstart)

    d = sub.add_parser("doctor", help="check versions, Keras 2, interpreters and data")
    d.add_argument("--json", action="store_true")
    d.add_argument("--require-data", action="store_true", help="fail when a dataset is missing")
    d.set_defaults(func=_cmd_doctor)

    from tfcompress.conversion.checks import TARGETS

    c = sub.add_parser("convert", help="convert a .keras/.h5/SavedModel to a flatbuffer")
    c.add_argument("model")
    c.add_argument("--target", required=True, choices=TARGETS)
    c.add_argument("-o", "--output", required=True)
    c.add_argument("--data", choices=("mnist", "cifar10", "fsdd"), default=None,
                   help="calibrate integer targets on 500 training examples of this dataset")
    c.add_argument("--calibration", default=None, help=".npy array of calibration inputs")
    c.add_argument("--data-dir", default=None)
    c.set_defaults(func=_cmd_convert)

    v = sub.add_parser("verify", help="run a .tflite on a dataset's test split in its interpreter")
    v.add_argument("model", nargs="?", default=None, help="the Keras model to compare with")
    v.add_argument("tflite")
    v.add_argument("--data", required=True, choices=("mnist", "cifar10", "fsdd"))
    v.add_argument("--data-dir", default=None)
    v.add_argument("--limit", type=int, default=None, help="first N test examples only")
    v.add_argument("--runtime", default="auto", choices=("auto", "litert", "lce", "micro"))
    v.add_argument("--threads", type=int, default=1)
    v.add_argument("--latency-runs", type=int, default=100)
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=_cmd_verify)

    s = sub.add_parser("summary", help="per-layer params, bits, memory, MACs/BOPs and sparsity")
    s.add_argument("model", help=".keras/.h5 file or SavedModel folder")
    s.add_argument("--json", action="store_true", help="print JSON instead of the text table")
    s.add_argument("--plot", default=None, metavar="PNG",
                   help="also write a bar chart of memory per layer to this PNG file")
    s.set_defaults(func=_cmd_summary)
    return p


def main(argv=None):
    _setup_env()
    args = build_parser().parse_args(argv)
    from tfcompress.errors import TfcompressError

    try:
        return args.func(args)
    except TfcompressError as err:
        print(f"tfcompress {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
