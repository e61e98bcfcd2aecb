"""One interpreter front end over the real runtimes.

- ``"litert"``: ai-edge-litert (LiteRT, the maintained TFLite runtime) for builtin ops.
- ``"lce"``: Larq Compute Engine's interpreter, the only one here that runs ``Lce*`` ops. On
  x86 its ``use_indirect_bgemm`` kernels are the fastest (see STACK.md trap 5), so they are
  the default (``lce_kernel="indirect_bgemm"``).
- ``"micro"``: the TFLite Micro interpreter (float32 and full-int8 builtin models only).
- ``"tfcompress"``: ai-edge-litert with tfcompress's own compiled kernels for the ``Lce*`` ops
  (a delegate from :mod:`tfcompress._kernels`: AVX-512 VPOPCNTDQ / AVX2 / portable, picked
  from the CPU or by ``isa=``); every other op runs in LiteRT as usual.

``runtime="auto"`` picks LCE when the file has ``Lce*`` custom ops, else LiteRT.
Inputs are given as float arrays; for int8/int16 inputs they are quantized with the file's
scale and zero point, and quantized outputs are dequantized, so callers always see floats.
"""

import os
import time
from pathlib import Path

import numpy as np

from tfcompress.errors import InterpreterError
from tfcompress.runtime.flatbuffer import inspect_flatbuffer

RUNTIMES = ("auto", "litert", "lce", "micro", "tfcompress")
LCE_KERNELS = ("default", "indirect_bgemm", "reference", "xnnpack")
_INT_RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}


def _read_model(model):
    if isinstance(model, (str, Path)):
        path = Path(model)
        if not path.is_file():
            raise InterpreterError(f"Model file {path} does not exist.")
        return path.read_bytes()
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model)
    raise TypeError(f"Expected flatbuffer bytes or a path, got {type(model).__name__}.")


def quantize(x, dtype, scale, zero_point):
    """Float array -> integer tensor with the given affine parameters (round half away)."""
    lo, hi = _INT_RANGES[dtype]
    q = np.round(np.asarray(x, np.float64) / scale + zero_point)
    return np.clip(q, lo, hi).astype(dtype)


def dequantize(q, scale, zero_point):
    return ((np.asarray(q, np.float64) - zero_point) * scale).astype(np.float32)


class Interpreter:
    """Run a ``.tflite`` flatbuffer one example at a time in a real runtime.

    Args:
        model: flatbuffer bytes or a path to a ``.tflite`` file.
        runtime: one of ``RUNTIMES``.
        num_threads: interpreter threads (1 for latency figures that compare kernels).
        lce_kernel: for the LCE runtime, one of ``LCE_KERNELS``.
        isa: for the tfcompress runtime, ``"auto"`` (default), ``"portable"``, ``"avx2"`` or
            ``"avx512"`` (see :func:`tfcompress._kernels.delegate`).

    Raises:
        InterpreterError: corrupt file, a runtime that cannot run its ops, or a missing runtime.
    """

    def __init__(self, model, *, runtime="auto", num_threads=1, lce_kernel="indirect_bgemm",
                 isa=None):
        self.model = _read_model(model)
        self.info = inspect_flatbuffer(self.model)
        if runtime not in RUNTIMES:
            raise ValueError(f"Unknown runtime {runtime!r}; valid: {', '.join(RUNTIMES)}.")
        if lce_kernel not in LCE_KERNELS:
            raise ValueError(f"Unknown lce_kernel {lce_kernel!r}; valid: {', '.join(LCE_KERNELS)}.")
        if not isinstance(num_threads, int) or num_threads < 1:
            raise ValueError(f"num_threads must be a positive int, got {num_threads!r}.")
        lce_ops = [op for op in self.info.custom_ops if op.startswith("Lce")]
        if runtime == "auto":
            runtime = "lce" if lce_ops else "litert"
        other_custom = [op for op in self.info.custom_ops if not op.startswith("Lce")]
        if other_custom or (lce_ops and runtime not in ("lce", "tfcompress")):
            raise InterpreterError(
                f"The {runtime!r} runtime cannot run custom op(s) "
                f"{', '.join(other_custom or lce_ops)}"
                + ("; use runtime='lce' or runtime='tfcompress'." if not other_custom else ".")
            )
        if isa is not None and runtime != "tfcompress":
            raise ValueError("isa= only applies to runtime='tfcompress'.")
        self.runtime = runtime
        self.num_threads = num_threads
        self.lce_kernel = lce_kernel
        self.isa = isa
        self.inputs = self.info.inputs
        self.outputs = self.info.outputs
        try:
            self._open()
        except InterpreterError:
            raise
        except Exception as err:
            raise InterpreterError(f"The {runtime} runtime could not load this model: {err}") from err

    # ------------------------------------------------------------------ runtime plumbing
    def _open(self):
        if self.runtime in ("litert", "tfcompress"):
            from ai_edge_litert.interpreter import Interpreter as LiteRT

            delegates = []
            if self.runtime == "tfcompress":
                from tfcompress import _kernels

                if not _kernels.available():
                    raise InterpreterError(
                        f"runtime='tfcompress' is unavailable: {_kernels.unavailable_reason()}."
                    )
                try:
                    delegates = [_kernels.delegate(isa=self.isa)]
                except ValueError as err:
                    raise InterpreterError(str(err)) from err
                self.isa = self.isa or os.environ.get(_kernels.ENV_ISA) or "auto"
                if self.isa == "auto":
                    self.isa = _kernels.best_isa()
            self._it = LiteRT(model_content=self.model, num_threads=self.num_threads,
                              experimental_delegates=delegates)
            self._it.allocate_tensors()
            self._in_idx = [d["index"] for d in self._it.get_input_details()]
            self._out_idx = [d["index"] for d in self._it.get_output_details()]
        elif self.runtime == "lce":
            from larq_compute_engine.tflite.python.interpreter import Interpreter as LCE

            k = self.lce_kernel
            self._it = LCE(
                self.model, num_threads=self.num_threads,
                use_reference_bconv=k == "reference", use_indirect_bgemm=k == "indirect_bgemm",
                use_xnnpack=k == "xnnpack",
            )
        else:
            from tflite_micro.python.tflite_micro import runtime as micro

            self._it = micro.Interpreter.from_bytes(self.model)

    def _invoke(self, arrays):
        if self.runtime in ("litert", "tfcompress"):
            for idx, a in zip(self._in_idx, arrays):
                self._it.set_tensor(idx, a)
            self._it.invoke()
            return [self._it.get_tensor(idx) for idx in self._out_idx]
        if self.runtime == "lce":
            return list(self._it.interpreter.predict(arrays))
        for i, a in enumerate(arrays):
            self._it.set_input(a, i)
        self._it.invoke()
        return [self._it.get_output(i) for i in range(len(self.outputs))]

    # ----------------------------------------------------------------------- public API
    def _prepare(self, example):
        arrays = example if isinstance(example, (list, tuple)) else [example]
        if len(arrays) != len(self.inputs):
            raise ValueError(f"The model has {len(self.inputs)} input(s); got {len(arrays)}.")
        out = []
        for a, spec in zip(arrays, self.inputs):
            a = np.asarray(a)
            want = tuple(spec["shape"])
            if a.shape != want:
                if a.size != int(np.prod(want)):
                    raise ValueError(
                        f"Input {spec['name']!r} expects shape {want}, got {a.shape}."
                    )
                a = a.reshape(want)
            if spec["dtype"] in _INT_RANGES and spec["scale"] is not None and a.dtype.kind == "f":
                a = quantize(a, spec["dtype"], spec["scale"], spec["zero_point"])
            else:
                a = a.astype(spec["dtype"])
            out.append(a)
        return out

    def _finish(self, outputs):
        res = []
        for q, spec in zip(outputs, self.outputs):
            q = np.asarray(q)
            if spec["dtype"] in _INT_RANGES and spec["scale"] is not None:
                q = dequantize(q, spec["scale"], spec["zero_point"])
            res.append(q.astype(np.float32))
        return res

    def run(self, example):
        """Run one example (batch of 1, or the array without its batch axis); return floats."""
        outs = self._finish(self._invoke(self._prepare(example)))
        return outs[0] if len(outs) == 1 else outs

    def predict(self, x, *, progress=False, desc="interpreter"):
        """Run every example of ``x`` (first axis = examples) and stack the outputs."""
        xs = x if isinstance(x, (list, tuple)) else [x]
        n = len(xs[0])
        if any(len(a) != n for a in xs):
            raise ValueError("All inputs must have the same number of examples.")
        bad = [i for i, a in enumerate(xs) if np.asarray(a).dtype.kind == "f" and not np.isfinite(a).all()]
        if bad:
            raise ValueError(f"Input(s) {bad} contain NaN or infinite values.")
        results = None
        rng = range(n)
        if progress:
            from tqdm.auto import tqdm

            rng = tqdm(rng, desc=desc, unit="ex", leave=False, mininterval=0.5)
        for i in rng:
            outs = self._finish(self._invoke(self._prepare([a[i: i + 1] for a in xs])))
            if results is None:
                results = [np.empty((n,) + o.shape[1:], np.float32) for o in outs]
            for r, o in zip(results, outs):
                r[i] = o[0]
        return results[0] if len(results) == 1 else results

    def latency(self, example, *, runs=100, warmup=10):
        """Single-example latency in milliseconds: median, p10, p90 over ``runs`` timed invokes."""
        if runs < 1:
            raise ValueError(f"runs must be >= 1, got {runs}.")
        arrays = self._prepare(example)
        for _ in range(warmup):
            self._invoke(arrays)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            self._invoke(arrays)
            times.append((time.perf_counter() - t0) * 1e3)
        t = np.asarray(times)
        return {
            "median_ms": float(np.median(t)), "p10_ms": float(np.percentile(t, 10)),
            "p90_ms": float(np.percentile(t, 90)), "runs": runs, "warmup": warmup,
            "threads": self.num_threads, "runtime": self.runtime, "kernel": self.kernel,
        }

    @property
    def kernel(self):
        """The kernel option in use (LCE's choice, the tfcompress ISA level, else ``"default"``)."""
        if self.runtime == "tfcompress":
            return self.isa
        return self.lce_kernel if self.runtime == "lce" else "default"
