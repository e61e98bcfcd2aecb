"""``tfcompress benchmark``: one file, every runtime that can run it, side by side."""

import argparse
import os
import sys

from tfcompress.cli.common import CliError, existing
from tfcompress.cli.data import check_data_option, model_input, verify_data

__all__ = ["cmd_benchmark", "pre_benchmark"]


def pre_benchmark(args):
    existing(args.tflite, ".tflite file", (".tflite",))
    check_data_option(args.data)
    if args.data_dir is not None:
        existing(args.data_dir, "--data-dir", folder_ok=True)


def _benchmark_input(info, seed):
    import numpy as np

    rng = np.random.default_rng(seed)
    arrays = []
    for spec in info.inputs:
        shape, dtype = tuple(spec["shape"]), spec["dtype"]
        if dtype.startswith("float") or spec["scale"] is not None:
            arrays.append(rng.uniform(-1, 1, shape).astype(np.float32))   # quantized if needed
        elif dtype == "bool":
            arrays.append(np.zeros(shape, bool))
        else:
            arrays.append(np.zeros(shape, dtype))
    return arrays


def _open_runtimes(fb, info, args):
    """``[(label, Interpreter)]`` and ``[(runtime, why skipped)]``."""
    from tfcompress import _kernels
    from tfcompress.errors import InterpreterError
    from tfcompress.runtime import Interpreter

    lce_file = any(op.startswith("Lce") for op in info.custom_ops)
    explicit = list(dict.fromkeys(args.runtime or ()))
    if explicit:
        wanted = explicit
    elif lce_file:
        wanted = ["tfcompress", "lce"]
    else:
        wanted = ["litert", "lce", "micro"]
    if args.isa is not None and "tfcompress" not in wanted and "auto" not in wanted:
        raise CliError("--isa only applies to the tfcompress runtime.",
                       "add --runtime tfcompress, or drop --isa")
    opened, skipped = [], []
    for rt in wanted:
        if rt == "tfcompress" and not explicit and not _kernels.available():
            skipped.append((rt, f"kernels not built: {_kernels.unavailable_reason()}"))
            continue
        isa = args.isa if rt == "tfcompress" or (rt == "auto" and lce_file) else None
        try:
            with _warnings_as_notes():
                it = Interpreter(fb, runtime=rt, num_threads=args.threads, isa=isa)
        except (InterpreterError, ValueError) as err:
            if explicit:
                raise CliError(f"--runtime {rt} cannot run {args.tflite}: {err}",
                               "pick another --runtime, or leave --runtime out to benchmark "
                               "every runtime that can run the file") from err
            skipped.append((rt, str(err).splitlines()[0]))
            continue
        label = it.runtime if rt != "auto" else f"{it.runtime} (auto)"
        if any(o.runtime == it.runtime and o.kernel == it.kernel for _, o in opened):
            continue
        opened.append((label, it))
    if not opened:
        raise CliError(f"no runtime could run {args.tflite}: "
                       + "; ".join(f"{r}: {why}" for r, why in skipped))
    return opened, skipped


class _warnings_as_notes:
    """Show RuntimeWarnings from opening an interpreter (e.g. auto's fallback) as notes."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings(record=True)
        self._seen = self._ctx.__enter__()
        warnings.simplefilter("always", RuntimeWarning)

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)
        for w in self._seen:
            print(f"note: {w.message}", file=sys.stderr)
        return False


def cmd_benchmark(args):
    import numpy as np

    from tfcompress.runtime import inspect_flatbuffer, latency_interleaved

    fb = existing(args.tflite, ".tflite file").read_bytes()
    info = inspect_flatbuffer(fb)
    opened, skipped = _open_runtimes(fb, info, args)
    if args.data is None:
        arrays, source = _benchmark_input(info, args.seed), f"random input (seed {args.seed})"
    else:
        x, _, source = verify_data(argparse.Namespace(
            data=args.data, data_dir=args.data_dir, limit=None), model_input(info))
        arrays, source = [x[0]], "the first example of " + source.split(",")[0]
    stats = latency_interleaved([it for _, it in opened], arrays, runs=args.runs,
                                warmup=args.warmup)
    outputs = [it.run(arrays) for _, it in opened]
    rows = []
    for (label, it), st, out in zip(opened, stats, outputs):
        outs = out if isinstance(out, list) else [out]
        ref = outputs[0] if isinstance(outputs[0], list) else [outputs[0]]
        rows.append({
            "runtime": label, "kernel": it.kernel, "median_ms": st["median_ms"],
            "p10_ms": st["p10_ms"], "p90_ms": st["p90_ms"], "runs": st["runs"],
            "max_abs_diff_vs_first": float(max(np.abs(a - b).max() for a, b in zip(outs, ref))),
        })
    fastest = min(r["median_ms"] for r in rows)
    for r in rows:
        r["x_fastest"] = r["median_ms"] / fastest
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    meta = {"file": str(args.tflite), "size_bytes": len(fb), "threads": args.threads,
            "input": source,
            "runs": args.runs, "warmup": args.warmup, "batch": 1, "seed": args.seed,
            "load_average_1min": load,
            "inputs": [{"shape": list(s["shape"]), "dtype": s["dtype"]} for s in info.inputs],
            "skipped": {rt: why for rt, why in skipped}}
    if args.json:
        import json

        record = {"meta": meta, "rows": rows}
        if args.profile:
            record["profiles"] = dict(_profiles(fb, opened, args, as_dict=True))
        print(json.dumps(record, indent=2))
        return 0
    ops = ", ".join(f"{k} x{v}" for k, v in sorted(info.op_counts.items()))
    shapes = "; ".join(f"{tuple(s['shape'])} {s['dtype']}" for s in info.inputs)
    print(f"{args.tflite}: {len(fb) / 1024:.1f} KiB, input {shapes}; ops {ops}")
    print(f"batch 1 ({source}), {args.threads} thread(s), {args.runs} timed runs per runtime after "
          f"{args.warmup} warm-up, interleaved in rounds; load average "
          f"{'-' if load is None else f'{load:.2f}'}")
    first = rows[0]["runtime"]
    header = ("runtime", "kernel", "median ms", "p10 ms", "p90 ms", "vs fastest",
              f"max|diff| vs {first}")
    table = [header] + [(r["runtime"], r["kernel"], f"{r['median_ms']:.4f}",
                         f"{r['p10_ms']:.4f}", f"{r['p90_ms']:.4f}", f"{r['x_fastest']:.2f}x",
                         "-" if i == 0 else f"{r['max_abs_diff_vs_first']:.3g}")
                        for i, r in enumerate(rows)]
    widths = [max(len(row[c]) for row in table) for c in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) if c < 2 else cell.rjust(w)
                        for c, (cell, w) in enumerate(zip(row, widths))).rstrip())
    for rt, why in skipped:
        print(f"skipped {rt}: {why}")
    if args.profile:
        sys.stdout.flush()
        for label, report in _profiles(fb, opened, args):
            print(f"\nprofile: {label}")
            print(report)
    return 0


def _profiles(fb, opened, args, as_dict=False):
    """``[(label, report)]``: :func:`tfcompress.runtime.profile.profile` of each runtime that
    ran (its text table, or its dict for JSON). Imported only for ``--profile``."""
    import importlib

    from tfcompress.errors import InterpreterError

    try:
        profiling = importlib.import_module("tfcompress.runtime.profile")
    except ModuleNotFoundError as err:
        if err.name != "tfcompress.runtime.profile":
            raise
        raise CliError("--profile needs tfcompress.runtime.profile, which this installation "
                       "of tfcompress does not have yet.",
                       "run without --profile (the latency table does not need it)") from None
    out = []
    for label, it in opened:
        try:
            report = profiling.profile(
                fb, runtime=it.runtime, runs=args.runs, warmup=args.warmup,
                num_threads=args.threads, lce_kernel=it.lce_kernel,
                isa=it.isa if it.runtime == "tfcompress" else None, seed=args.seed)
        except (InterpreterError, ValueError) as err:   # e.g. a runtime profile cannot time
            out.append((label, {"error": str(err)} if as_dict else
                        f"not available: {str(err).splitlines()[0]}"))
            continue
        out.append((label, report.to_dict() if as_dict else report.table()))
    return out

