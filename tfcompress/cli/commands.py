"""The sub-commands quickstart, doctor, convert, verify and summary (``benchmark`` is in
:mod:`tfcompress.cli.benchmark`). Each ``pre_*`` runs fast checks before TensorFlow loads;
each ``cmd_*`` does the work and returns the exit status."""

import sys

from tfcompress.cli.common import CALIBRATED_TARGETS, CliError, existing
from tfcompress.cli.data import check_data_option, is_user_data, load_user_arrays, model_input, verify_data

__all__ = ["cmd_convert", "cmd_doctor", "cmd_quickstart", "cmd_summary", "cmd_verify",
           "pre_convert", "pre_quickstart", "pre_summary", "pre_verify"]


def pre_quickstart(args):
    if args.data_dir is not None:
        existing(args.data_dir, "--data-dir", folder_ok=True)


def cmd_quickstart(args):
    from tfcompress.quickstart import run

    run(args.out, epochs_float=args.epochs_float, epochs_binary=args.epochs_binary,
        train_examples=args.train_examples, test_examples=args.test_examples, seed=args.seed,
        data_dir=args.data_dir, latency_runs=args.latency_runs, verbose=0 if args.quiet else 1)
    return 0


def cmd_doctor(args):
    from tfcompress.doctor import main

    return main(as_json=args.json, require_data=args.require_data)


def load_keras(path):
    from tfcompress.models_io import load_model

    return load_model(path)


def pre_convert(args):
    existing(args.model, "Keras model", folder_ok=True)
    if args.data is not None and args.calibration is not None:
        raise CliError("--data and --calibration both give calibration data.",
                       "pass only one of them")
    check_data_option(args.data)
    if args.calibration is not None:
        existing(args.calibration, "--calibration file", (".npy", ".npz"))
    if args.target in CALIBRATED_TARGETS and args.data is None and args.calibration is None:
        raise CliError(f"--target {args.target} quantizes activations and needs calibration "
                       "data (a few hundred real inputs).",
                       "add --data mnist|cifar10|fsdd (the dataset the model was trained on), "
                       "--data file.npz or --calibration file.npy")
    if args.cpu is not None and args.emit_c is None:
        raise CliError("--cpu only applies with --emit-c DIR.", "add --emit-c DIR, or drop --cpu")
    if args.data_dir is not None:
        existing(args.data_dir, "--data-dir", folder_ok=True)


def cmd_convert(args):
    from tfcompress.conversion import convert
    from tfcompress.runtime import auto_runtime

    model = load_keras(args.model)
    calib = None
    if args.calibration is not None:
        calib, _ = load_user_arrays(args.calibration, "--calibration")
    elif is_user_data(args.data):
        calib, _ = load_user_arrays(args.data)
    elif args.data is not None:
        from tfcompress.data import balanced_indices, load
        from tfcompress.data.preprocess import for_model

        (x, y), _ = load(args.data, data_dir=args.data_dir)
        calib = for_model(args.data, x[balanced_indices(y, 500)])
    options = {"target": args.target, "representative_data": calib}
    if args.io_type is not None:
        options["io_type"] = args.io_type
    result = convert(model, **options)
    path = result.save(args.output)
    print(f"wrote {path} ({result.size:,} bytes, target {result.target}); runs in "
          f"{auto_runtime(result.info)} (runtime auto)")
    ops = ", ".join(f"{k} x{v}" for k, v in sorted(result.info.op_counts.items()))
    print(f"ops: {ops}")
    for name in result.extras.get("files", {}):
        print(f"wrote {path.parent / name}")
    if args.emit_c is not None:
        to_c = getattr(result, "to_c", None)
        if to_c is None:
            raise CliError(
                "--emit-c needs ConversionResult.to_c, which this installation of tfcompress "
                "does not have yet.",
                f"the .tflite file was written to {path}; run without --emit-c for now")
        kwargs = {"cpu": args.cpu} if args.cpu is not None else {}
        written = to_c(args.emit_c, **kwargs)
        print(f"wrote C sources to {args.emit_c}" + (f" ({written})" if written else ""))
    return 0


def pre_verify(args):
    if args.tflite is None:          # `verify m.tflite`: the one positional is the file
        args.model, args.tflite = None, args.model
    existing(args.tflite, ".tflite file", (".tflite",))
    if args.model is not None:
        existing(args.model, "Keras model", folder_ok=True)
    check_data_option(args.data)
    if args.data_dir is not None:
        existing(args.data_dir, "--data-dir", folder_ok=True)


def cmd_verify(args):
    from tfcompress.runtime import inspect_flatbuffer
    from tfcompress.runtime.verify import verify

    fb = existing(args.tflite, ".tflite file").read_bytes()
    spec = model_input(inspect_flatbuffer(fb))
    x, y, described = verify_data(args, spec)
    model = load_keras(args.model) if args.model else None
    rep = verify(fb, x, y, keras_model=model, runtime=args.runtime, num_threads=args.threads,
                 isa=None if args.isa is None else args.isa, latency_runs=args.latency_runs,
                 progress=not args.json)
    if args.json:
        import json

        record = rep.to_dict()
        record["data"] = described
        print(json.dumps(record, indent=2))
    else:
        print(f"data: {described}")
        print(rep)
    return 0


def pre_summary(args):
    existing(args.model, "Keras model", folder_ok=True)


def cmd_summary(args):
    from tfcompress.report import summary

    model = load_keras(args.model)
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

