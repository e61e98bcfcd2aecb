"""Sanitizer fuzz of tfcompress's C++ kernels (issue 15, part 2).

    python tools/fuzz_kernels.py                     # 150 models x 12 mutations, ASan+UBSan
    python tools/fuzz_kernels.py --models 40 --mutations 6 --seed 1

1. Compiles ``tfcompress/_kernels/src/*.cc`` once with ``-fsanitize=address,undefined``
   (``-fno-sanitize-recover``: the first undefined behaviour aborts) into a cache folder.
2. Writes random valid LCE models (:func:`tfcompress._kernels.testing.random_conv_spec`:
   shapes 1..12, channel counts with partial 32-bit words, kernel 1/2/3/5, strides 1-3,
   dilations 1-3, SAME/VALID, both pad values, every fused activation, float/int8 input,
   float/int8/bitpacked/max-pooled output, one or two binary convs; every third model is one of
   the fusion networks of :func:`tfcompress._kernels.testing.fusion_model`, with ADD, SUB,
   MUL, PRELU, LOGISTIC, CONCATENATION, pooling, FULLY_CONNECTED and RESHAPE around the binary
   convs), and mutates each one:
   option values out of range (0, negative, 2^31, 2^40, NaN, inf, 1e300, fractions, strings,
   booleans, missing keys), truncated, bit-flipped or garbage FlexBuffers, wrong tensor types,
   ranks and sizes, zero/negative/huge dimensions, missing optional inputs (-1), dropped,
   extra and out-of-range tensor indices, outputs aliasing inputs or constants, non-constant
   filters and thresholds, broken quantization parameters, out-of-range builtin options
   (activations, strides, window sizes, axes), and combinations of these.
3. Runs every model in a subprocess with the sanitizer build loaded as the delegate
   (``LD_PRELOAD`` of libasan: a Python process needs the ASan runtime first), and in LCE's
   interpreter (reference kernels) in another subprocess. A crashed worker is restarted after
   the model that crashed it.

Verdicts: each model must either run and match LCE's reference (float outputs within 1e-5 of
max |output|, int8 within one quantization step, bitpacked exactly) or be refused with an
error message. Failures: a crash or sanitizer report, a mismatch, an empty error message, a
valid (unmutated) model that is refused, or a model that runs here while LCE refuses it.
Exit status 0 only when there are none. ``--json`` writes the counts.
"""

import argparse
import hashlib
import importlib.util
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "tfcompress" / "_kernels" / "src"
SAN_FLAGS = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
             "-fno-omit-frame-pointer"]
SAN_MARKERS = ("AddressSanitizer", "runtime error:", "UndefinedBehaviorSanitizer",
               "LeakSanitizer", "SUMMARY: ")
TYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 6: "bool", 7: "int16",
         9: "int8"}


def log(msg):
    print(f"[fuzz_kernels] {msg}", file=sys.stderr, flush=True)


def _testing():
    """tfcompress/_kernels/testing.py without importing tfcompress (that loads TensorFlow)."""
    spec = importlib.util.spec_from_file_location("tfc_kernel_testing",
                                                  SRC.parent / "testing.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ------------------------------------------------------------------------------ build
def build_sanitized(cache_dir, jobs=2):
    """Compiles the kernels with ASan+UBSan into ``cache_dir`` (reused while the sources and
    flags are unchanged); returns the library path."""
    sources = sorted(p for p in SRC.glob("*.cc") if p.name != "module.cc")  # no Python API
    digest = hashlib.sha256()
    for p in sorted(SRC.iterdir()):
        digest.update(p.name.encode() + p.read_bytes())
    digest.update(" ".join(SAN_FLAGS).encode())
    out_dir = Path(cache_dir) / digest.hexdigest()[:16]
    lib = out_dir / "libtfcompress_kernels_asan.so"
    if lib.is_file():
        return lib
    out_dir.mkdir(parents=True, exist_ok=True)
    cxx = os.environ.get("CXX", "g++")
    common = [cxx, "-std=c++17", "-O1", "-g1", "-fPIC", "-pthread", "-ffp-contract=off"] + SAN_FLAGS
    pending, objects = [], []
    t0 = time.time()
    for src in sources:
        obj = out_dir / (src.stem + ".o")
        objects.append(str(obj))
        pending.append(subprocess.Popen(common + ["-c", str(src), "-o", str(obj)],
                                        stderr=subprocess.PIPE, text=True))
        while sum(p.poll() is None for p in pending) >= jobs:
            time.sleep(0.05)
    errors = [p.communicate()[1] for p in pending if p.wait() != 0]
    if errors:
        raise SystemExit("sanitizer build failed:\n" + "\n".join(errors))
    subprocess.run([cxx, "-shared", "-pthread"] + SAN_FLAGS + objects + ["-o", str(lib)],
                   check=True)
    log(f"sanitizer build: {len(sources)} files in {time.time() - t0:.1f} s -> {lib}")
    return lib


def runtime_library(name):
    out = subprocess.run([os.environ.get("CXX", "g++"), f"-print-file-name={name}"],
                         capture_output=True, text=True, check=True).stdout.strip()
    if not os.path.isabs(out):
        raise SystemExit(f"the compiler does not know {name}; install its sanitizer runtime")
    return out


CANARY = r"""
#include <climits>
extern "C" int tfc_canary_heap(int i) { int* p = new int[4](); int v = p[i]; delete[] p; return v; }
extern "C" int tfc_canary_ub(int i) { int x = INT_MAX - 1; return x + i; }
"""


def check_pipeline(cache_dir, asan_env):
    """Proves that a sanitizer report in a worker is caught: a canary library with a heap
    overflow and a signed overflow, compiled with the same flags, is called in a subprocess
    with the same environment; both must be reported."""
    out_dir = Path(cache_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    src, lib = out_dir / "canary.cc", out_dir / "libcanary.so"
    src.write_text(CANARY)
    subprocess.run([os.environ.get("CXX", "g++"), "-shared", "-fPIC", "-O0"] + SAN_FLAGS +
                   [str(src), "-o", str(lib)], check=True)
    env = dict(os.environ, **asan_env)
    for fn in ("tfc_canary_heap", "tfc_canary_ub"):
        code = f"import ctypes; ctypes.CDLL({str(lib)!r}).{fn}(4)"
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                              text=True)
        if proc.returncode == 0 or not any(m in proc.stderr for m in SAN_MARKERS):
            raise SystemExit(f"the sanitizer pipeline did not catch the canary {fn} "
                             f"(exit {proc.returncode}): {proc.stderr[-500:]}")


# -------------------------------------------------------------------------- mutations
def _load(fb):
    from ai_edge_litert import schema_py_generated as schema

    return schema.ModelT.InitFromPackedBuf(fb, 0)


def _pack(model):
    import flatbuffers

    b = flatbuffers.Builder(1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def _ops(model, name=None):
    codes = [c.customCode.decode() if isinstance(c.customCode, bytes) else c.customCode
             for c in model.operatorCodes]
    return [op for op in model.subgraphs[0].operators
            if name is None or codes[op.opcodeIndex] == name]


def _options(op):
    from flatbuffers import flexbuffers

    raw = bytes(bytearray(op.customOptions)) if op.customOptions is not None else b""
    try:
        opts = flexbuffers.Loads(raw) if raw else {}
    except Exception:  # already garbled by an earlier mutation
        return {}
    return opts if isinstance(opts, dict) else {}


def _set_options(op, opts):
    """Writes ``opts`` as a FlexBuffers map (floats as 64-bit, or 32-bit when they fit:
    flexbuffers.Dumps cannot write floats beyond float32's range)."""
    import struct

    from flatbuffers import flexbuffers

    fbb = flexbuffers.Builder()
    with fbb.Map():
        for key, value in opts.items():
            fbb.Key(key)
            if isinstance(value, bool):
                fbb.Bool(value)
            elif isinstance(value, int):
                fbb.Int(value)
            elif isinstance(value, float):
                try:
                    fits = struct.unpack("<f", struct.pack("<f", value))[0] == value
                except OverflowError:
                    fits = False
                fbb.Float(value, byte_width=4 if fits else 8)
            else:
                fbb.String(str(value))
    op.customOptions = list(fbb.Finish())


BAD_VALUES = [0, -1, -7, 2, 3, 5, 4097, 2 ** 31, 2 ** 40, -2 ** 63, 1.5, 2.0, float("nan"),
              float("inf"), float("-inf"), 1e300, -1e300, True, "two", None]


def mutate(fb, rng, n_changes=1):
    """One mutated copy of ``fb``; returns (bytes, description)."""
    model = _load(fb)
    g = model.subgraphs[0]
    what = []
    for _ in range(n_changes):
        kind = str(rng.choice([
            "opt_value", "opt_value", "opt_value", "opt_extra", "opt_truncate", "opt_flip",
            "opt_garbage", "tensor_type", "tensor_shape", "const_shape", "optional_missing",
            "drop_inputs", "extra_input", "bad_index", "output_alias", "nonconst",
            "quant", "swap_inputs", "builtin_opt", "builtin_opt"]))
        ops = [op for op in _ops(model) if op.customOptions is not None] or _ops(model)
        op = ops[int(rng.integers(len(ops)))]
        if kind == "opt_value":
            opts = _options(op)
            if not opts:
                continue
            key = str(rng.choice(sorted(opts)))
            value = BAD_VALUES[int(rng.integers(len(BAD_VALUES)))]
            if value is None:
                del opts[key]
            else:
                opts[key] = value
            _set_options(op, opts)
            what.append(f"{kind}:{key}={value!r}")
        elif kind == "opt_extra":
            opts = _options(op)
            if not opts:
                continue
            opts["unknown_key"] = int(rng.integers(-5, 5))
            _set_options(op, opts)
            what.append(kind)
        elif kind in ("opt_truncate", "opt_flip", "opt_garbage"):
            raw = bytearray(op.customOptions) if op.customOptions is not None else bytearray()
            if kind == "opt_truncate":
                raw = raw[: int(rng.integers(0, max(1, len(raw))))]
            elif kind == "opt_flip" and raw:
                for _ in range(int(rng.integers(1, 5))):
                    raw[int(rng.integers(len(raw)))] ^= 1 << int(rng.integers(8))
            else:
                raw = bytearray(rng.integers(0, 256, int(rng.integers(0, 64))).astype(np.uint8))
            op.customOptions = list(raw) if raw else None
            what.append(f"{kind}:{len(raw)}B")
        elif kind == "tensor_type":
            t = g.tensors[int(rng.integers(len(g.tensors)))]
            t.type = int(rng.choice([k for k in TYPES if k != t.type]))
            what.append(f"{kind}:{t.name}->{TYPES[t.type]}")
        elif kind == "tensor_shape":
            t = g.tensors[int(rng.integers(len(g.tensors)))]
            shape = list(t.shape) if t.shape is not None else []
            how = str(rng.choice(["rank-", "rank+", "zero", "neg", "huge", "one"]))
            if how == "rank-" and shape:
                shape = shape[:-1]
            elif how == "rank+":
                shape = shape + [int(rng.integers(1, 3))]
            elif shape:
                i = int(rng.integers(len(shape)))
                shape[i] = {"zero": 0, "neg": -3, "huge": 2 ** 24 + 1, "one": 1}[how]
            t.shape = np.asarray(shape, np.int32)
            what.append(f"{kind}:{how}")
        elif kind == "const_shape":
            consts = [t for t in g.tensors if t.buffer and model.buffers[t.buffer].data is not None]
            if not consts:
                continue
            t = consts[int(rng.integers(len(consts)))]
            shape = list(t.shape)
            if len(shape) == 4 and rng.random() < 0.5:
                shape = [shape[0], shape[1] * shape[2], 1, shape[3]]  # same bytes
            elif rng.random() < 0.5:
                shape = shape + [1]
            else:
                shape[int(rng.integers(len(shape)))] = 0
            t.shape = np.asarray(shape, np.int32)
            what.append(f"{kind}:{shape}")
        elif kind == "optional_missing":
            bconvs = _ops(model, "LceBconv2d")
            if not bconvs:
                continue
            op = bconvs[int(rng.integers(len(bconvs)))]
            if len(op.inputs) < 2:
                continue
            i = int(rng.integers(1, len(op.inputs)))
            op.inputs = list(op.inputs)
            op.inputs[i] = -1
            what.append(f"{kind}:input{i}")
        elif kind == "drop_inputs":
            op.inputs = list(op.inputs)[: int(rng.integers(0, len(op.inputs)))]
            what.append(f"{kind}:{len(op.inputs)}")
        elif kind == "extra_input":
            op.inputs = list(op.inputs) + [int(rng.integers(len(g.tensors)))]
            what.append(kind)
        elif kind == "bad_index":
            bad = int(rng.choice([len(g.tensors), len(g.tensors) + 7, -2, 2 ** 30]))
            op.inputs, op.outputs = list(op.inputs), list(op.outputs)
            if rng.random() < 0.5 and len(op.inputs):
                op.inputs[int(rng.integers(len(op.inputs)))] = bad
                what.append(f"{kind}:input={bad}")
            else:
                op.outputs[0] = bad
                what.append(f"{kind}:output={bad}")
        elif kind == "output_alias":
            op.outputs = list(op.outputs)
            op.outputs[0] = int(rng.choice([i for i in op.inputs if i >= 0] or [0]))
            what.append(kind)
        elif kind == "nonconst":
            consts = [t for t in g.tensors if t.buffer and model.buffers[t.buffer].data is not None]
            if not consts:
                continue
            t = consts[int(rng.integers(len(consts)))]
            t.buffer = 0
            what.append(f"{kind}:{t.name}")
        elif kind == "quant":
            t = g.tensors[int(rng.integers(len(g.tensors)))]
            from ai_edge_litert import schema_py_generated as schema

            q = schema.QuantizationParametersT()
            q.scale = [float(rng.choice([0.0, -1.0, float("nan"), float("inf"), 1e-30, 1e30]))]
            q.zeroPoint = [int(rng.choice([0, 1000, -1000, 127]))]
            t.quantization = q if rng.random() < 0.8 else None
            what.append(f"{kind}:{t.name}")
        elif kind == "builtin_opt":
            builtins = [o for o in g.operators if o.builtinOptions is not None]
            if not builtins:
                continue
            bo = builtins[int(rng.integers(len(builtins)))].builtinOptions
            fields = [k for k, v in vars(bo).items() if isinstance(v, int)
                      and not isinstance(v, bool)]
            if not fields:
                continue
            key = str(rng.choice(fields))
            wide = key.startswith(("stride", "filter", "axis"))  # int32 fields; others int8
            value = int(rng.choice([-1, 0, 1, 2, 3, 5, 7, 100, -128, 127] +
                                   ([-(2 ** 31), 2 ** 31 - 1, 4097] if wide else [])))
            setattr(bo, key, value)
            what.append(f"{kind}:{type(bo).__name__}.{key}={value}")
        elif kind == "swap_inputs" and len(op.inputs) >= 2:
            op.inputs = list(op.inputs)
            i, j = rng.choice(len(op.inputs), 2, replace=False)
            op.inputs[i], op.inputs[j] = op.inputs[j], op.inputs[i]
            what.append(kind)
    return _pack(model), ",".join(what) or "none"


def model_input(fb, rng):
    """Random inputs for the model's (possibly mutated) input tensors."""
    model = _load(fb)
    g = model.subgraphs[0]
    arrays = []
    for i in g.inputs:
        if not 0 <= i < len(g.tensors):
            return None
        t = g.tensors[i]
        shape = tuple(int(d) for d in (t.shape if t.shape is not None else []))
        if any(d < 0 for d in shape) or np.prod(shape, dtype=np.int64) > 1 << 22:
            return None
        dtype = TYPES.get(t.type, "float32")
        if dtype in ("float32", "float16"):
            x = rng.normal(0, 2, shape).astype(dtype)
            x.reshape(-1)[::7] = 0
        elif dtype == "bool":
            x = rng.integers(0, 2, shape).astype(bool)
        else:
            info = np.iinfo(dtype)
            x = rng.integers(max(info.min, -1000), min(info.max, 1000) + 1, shape).astype(dtype)
        arrays.append(x)
    return arrays


# ---------------------------------------------------------------------------- workers
def worker(kind, job_path, result_path, start, lib):
    """Runs models[start:] of ``job_path``; appends one pickled result per model."""
    with open(job_path, "rb") as f:
        jobs = pickle.load(f)
    with open(result_path, "ab") as out:
        for idx in range(start, len(jobs)):
            fb, inputs = jobs[idx]
            res = _run_one(kind, fb, inputs, lib)
            pickle.dump((idx, res), out)
            out.flush()


def _lce_module():
    spec = importlib.util.find_spec("larq_compute_engine")
    path = Path(spec.submodule_search_locations[0]) / "tflite/python/interpreter_wrapper_lite.so"
    s = importlib.util.spec_from_file_location("interpreter_wrapper_lite", path)
    mod = importlib.util.module_from_spec(s)
    s.loader.exec_module(mod)
    return mod


def _run_one(kind, fb, inputs, lib):
    if inputs is None:
        return {"status": "refused", "stage": "input", "error": "no usable input shape"}
    # Unpickled arrays carry non-canonical dtype objects, which LCE's pybind11 wrapper
    # rejects ("NumPy type info missing"): rebuild them with the canonical dtype.
    inputs = [np.asarray(a).astype(np.dtype(np.asarray(a).dtype.name)) for a in inputs]
    stage = "load"
    try:
        if kind == "lce":
            try:
                it = _LCE.LiteInterpreter(fb, 1, True, False, False)  # reference kernels
            except RuntimeError:
                # LCE's reference kernel refuses zero padding with an odd channel count that
                # its default kernel takes (float output without activation).
                it = _LCE.LiteInterpreter(fb, 1, False, False, False)
            stage = "invoke"
            outs = it.predict(list(inputs))
            return {"status": "ran", "outputs": [np.asarray(o) for o in outs]}
        from ai_edge_litert.interpreter import Interpreter, load_delegate

        it = Interpreter(model_content=fb, experimental_delegates=[load_delegate(lib, {})])
        stage = "allocate"
        it.allocate_tensors()
        stage = "set_input"
        for d, x in zip(it.get_input_details(), inputs):
            it.set_tensor(d["index"], x)
        stage = "invoke"
        it.invoke()
        return {"status": "ran",
                "outputs": [np.array(it.get_tensor(d["index"])) for d in it.get_output_details()]}
    except Exception as err:  # the verdict records every refusal with its message
        return {"status": "refused", "stage": stage, "error": f"{type(err).__name__}: {err}"}


_LCE = None


def run_workers(kind, jobs, tmp, lib, asan_env):
    """Runs every job in worker subprocesses (restarted after a crash); returns
    ``{index: result}`` and the list of crashes ``(index, reason)``."""
    job_path = Path(tmp) / f"jobs_{kind}.pkl"
    result_path = Path(tmp) / f"results_{kind}.pkl"
    with open(job_path, "wb") as f:
        pickle.dump(jobs, f)
    result_path.write_bytes(b"")
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if kind == "ours":
        env.update(asan_env)
    results, crashes, start = {}, [], 0
    while start < len(jobs):
        err_path = Path(tmp) / f"stderr_{kind}_{start}.txt"
        with open(err_path, "w") as err:
            proc = subprocess.run([sys.executable, __file__, "--worker", kind, str(job_path),
                                   str(result_path), str(start), str(lib)],
                                  env=env, stderr=err, stdout=subprocess.DEVNULL)
        with open(result_path, "rb") as f:
            while True:
                try:
                    idx, res = pickle.load(f)
                except EOFError:
                    break
                results[idx] = res
        stderr = err_path.read_text(errors="replace")
        report = next((line for line in stderr.splitlines()
                       if any(m in line for m in SAN_MARKERS)), None)
        done = max(results) + 1 if results else 0
        if proc.returncode != 0 or (kind == "ours" and report):
            if done < len(jobs) and done not in results:
                reason = report or f"exit status {proc.returncode}"
                crashes.append((done, reason, stderr[-3000:]))
                results[done] = {"status": "crash", "error": reason}
                done += 1
            elif report:
                crashes.append((done - 1, report, stderr[-3000:]))
        start = done
    return results, crashes


# ---------------------------------------------------------------------------- verdict
def lce_rounding_slack(fb):
    """The float rounding error of LCE's own output transform, which these kernels avoid.

    LCE computes ``float(2 * count) * (-mul) + float(bias + K * mul)`` (the back-
    transformation ``K - 2 * count`` folded into multiplier and bias, K = kernel_h *
    kernel_w * channels_in), so its result carries up to about one float32 ulp of
    ``2 K |mul| + |bias|``, far more than the result's own ulp when the fused activation
    clamps it; these kernels compute ``float(K - 2 * count) * mul + bias``. Returns
    ``2**-22 * max(2 K |mul| + |bias|)`` over the model's float/int8-output LceBconv2d ops.
    """
    model = _load(fb)
    g = model.subgraphs[0]
    slack = 0.0
    for op in _ops(model, "LceBconv2d"):
        ins = list(op.inputs)
        if len(ins) < 4 or min(ins[:4]) < 0 or max(ins[:4]) >= len(g.tensors):
            continue
        f, m, b = (g.tensors[i] for i in ins[1:4])
        try:
            k = int(f.shape[1]) * int(f.shape[2]) * int(_options(op).get("channels_in", 0))
            mul = np.frombuffer(bytes(model.buffers[m.buffer].data), np.float32)
            bias = np.frombuffer(bytes(model.buffers[b.buffer].data), np.float32)
            slack = max(slack, 2.0 ** -22 * float(np.max(2 * k * np.abs(mul) + np.abs(bias))))
        except (TypeError, ValueError, IndexError, AttributeError):
            continue
    return slack


def compare(ours, ref, slack=0.0):
    if len(ours) != len(ref):
        return f"{len(ours)} outputs vs {len(ref)}"
    for a, b in zip(ours, ref):
        if a.shape != b.shape or a.dtype != b.dtype:
            return f"output {a.dtype}{a.shape} vs LCE {b.dtype}{b.shape}"
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        if a.dtype == np.float32:
            finite = np.isfinite(b64)
            if not np.array_equal(finite, np.isfinite(a64)):
                return "non-finite values differ"
            tol = 1e-5 * max(1.0, float(np.abs(b64[finite]).max(initial=0.0))) + slack
            err = float(np.abs(a64[finite] - b64[finite]).max(initial=0.0))
        elif a.dtype == np.int8:
            tol, err = 1.0, float(np.abs(a64 - b64).max(initial=0.0))
        else:
            tol, err = 0.0, float(np.abs(a64 - b64).max(initial=0.0))
        if err > tol:
            return f"max difference {err:g} > {tol:g}"
    return None


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--worker":
        global _LCE
        kind, job_path, result_path, start, lib = argv[1:6]
        if kind == "lce":
            _LCE = _lce_module()
        worker(kind, job_path, result_path, int(start), lib)
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=int, default=150, help="random valid models")
    p.add_argument("--mutations", type=int, default=12, help="mutated copies per model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(),
                                                       "tfcompress_kernels_asan"))
    p.add_argument("--json", default=None, help="write the counts here")
    p.add_argument("--show", type=int, default=8, help="failures to print in full")
    p.add_argument("--messages", action="store_true", help="print every distinct refusal")
    args = p.parse_args(argv)
    t0 = time.time()
    testing = _testing()
    lib = build_sanitized(args.cache_dir)
    asan_env = {
        # libstdc++ right after libasan: ASan's __cxa_throw interceptor needs the real one at
        # start-up, or the first C++ exception (LiteRT reports errors with them) aborts.
        "LD_PRELOAD": " ".join([runtime_library("libasan.so"),
                                runtime_library("libstdc++.so")]),
        "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0:halt_on_error=1:exitcode=99",
        "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1:exitcode=98",
    }
    check_pipeline(args.cache_dir, asan_env)
    rng = np.random.default_rng(args.seed)
    jobs, meta = [], []
    for m in range(args.models):
        model_seed = args.seed * 100003 + m
        if m % 3 == 2:  # a network with the float ops the kernels fuse
            pattern = testing.FUSION_PATTERNS[(m // 3) % len(testing.FUSION_PATTERNS)]
            spec = dict(pattern=pattern)
            fb, _ = testing.fusion_model(pattern, seed=model_seed)
        else:
            spec = testing.random_conv_spec(rng)
            fb, _, _ = testing.lce_conv_model(spec, seed=model_seed)
        base = len(jobs)
        jobs.append((fb, model_input(fb, np.random.default_rng(model_seed))))
        meta.append(dict(model=m, mutation="none", spec=spec, base=base))
        for k in range(args.mutations):
            mfb, what = mutate(fb, rng, n_changes=1 if k % 4 else 2)
            # the same input values as the base model wherever the input tensor is unchanged
            jobs.append((mfb, model_input(mfb, np.random.default_rng(model_seed))))
            meta.append(dict(model=m, mutation=what, spec=spec, base=base))
    log(f"{args.models} valid models + {args.models * args.mutations} mutations generated "
        f"({time.time() - t0:.1f} s)")
    with tempfile.TemporaryDirectory() as tmp:
        ours, crashes = run_workers("ours", jobs, tmp, lib, asan_env)
        # LCE's reference is needed for what ran here, and for every unmutated model.
        wanted = [i for i in range(len(jobs))
                  if ours[i]["status"] == "ran" or meta[i]["mutation"] == "none"]
        sub, ref_crashes = run_workers("lce", [jobs[i] for i in wanted], tmp, lib, asan_env)
        ref = {i: {"status": "not run"} for i in range(len(jobs))}
        ref.update({wanted[k]: res for k, res in sub.items()})
    counts = dict(models=args.models, mutations=args.models * args.mutations,
                  crashes=len(crashes), sanitizer_reports=sum(
                      any(m in c[1] for m in SAN_MARKERS) for c in crashes),
                  ran_and_matched=0, ran_as_unmutated=0, refused_by_tfcompress=0, refused_by_litert=0,
                  lce_crashed=len(ref_crashes), failures=0)
    failures = []
    for i, info in enumerate(meta):
        o, r = ours[i], ref[i]
        if o["status"] == "crash":
            failures.append((i, "crash: " + o["error"]))
        elif o["status"] == "refused":
            if not o["error"].strip() or o["error"].strip().endswith(":"):
                failures.append((i, "refused without a message"))
            elif info["mutation"] == "none":
                failures.append((i, "valid model refused: " + o["error"]))
            elif "tfcompress kernels" in o["error"]:
                counts["refused_by_tfcompress"] += 1
            else:
                counts["refused_by_litert"] += 1
        elif r["status"] != "ran":
            # LCE refuses some mutations that do not change what the model computes (a wrong
            # declared shape of an intermediate or output tensor, which TFLite ops resize; a
            # rank-2 threshold vector): then the result must equal LCE's on the unmutated model.
            b = info["base"]
            same_input = all(np.array_equal(x, y) for x, y in zip(jobs[i][1], jobs[b][1])) \
                if jobs[i][1] is not None and jobs[b][1] is not None else False
            diff = (compare(o["outputs"], ref[b]["outputs"], lce_rounding_slack(jobs[b][0]))
                    if same_input and ref[b]["status"] == "ran" else "no reference")
            if diff:
                failures.append((i, f"ran here, but LCE {r['status']}: {r.get('error', '')[:300]}"
                                    f" (vs the unmutated model: {diff})"))
            else:
                counts["ran_as_unmutated"] += 1
        else:
            diff = compare(o["outputs"], r["outputs"], lce_rounding_slack(jobs[i][0]))
            if diff:
                failures.append((i, "mismatch with LCE: " + diff))
            else:
                counts["ran_and_matched"] += 1
    counts["failures"] = len(failures)
    counts["wall_s"] = round(time.time() - t0, 1)
    for i, why in failures[: args.show]:
        log(f"FAIL #{i} (model {meta[i]['model']}, mutation {meta[i]['mutation']}): {why}\n"
            f"    spec {meta[i]['spec']}")
    if args.messages:
        seen = {}
        for i, info in enumerate(meta):
            if ours[i]["status"] == "refused":
                seen.setdefault(ours[i]["error"].split("Node number")[0][:220], info["mutation"])
        for msg, what in sorted(seen.items()):
            log(f"refusal [{what}]: {msg}")
    for i, reason, tail in crashes[: args.show]:
        log(f"crash #{i}: {reason}\n{tail}")
    print(json.dumps(counts))
    if args.json:
        Path(args.json).write_text(json.dumps(dict(counts, failures_detail=[
            dict(index=i, why=why, mutation=meta[i]["mutation"], spec=meta[i]["spec"])
            for i, why in failures]), indent=1))
    return 0 if not failures and not crashes else 1


if __name__ == "__main__":
    sys.exit(main())
