"""One interpreter front end over the real runtimes.

- ``"litert"``: ai-edge-litert (LiteRT, the maintained TFLite runtime) for builtin ops.
- ``"lce"``: Larq Compute Engine's interpreter, which runs ``Lce*`` ops with LCE's own kernels.
  On x86 its ``use_indirect_bgemm`` kernels are its fastest (see STACK.md trap 5), so they are
  the default (``lce_kernel="indirect_bgemm"``).
- ``"micro"``: the TFLite Micro interpreter (float32 and full-int8 builtin models only).
- ``"tfcompress"``: ai-edge-litert with tfcompress's own compiled kernels for the ``Lce*`` ops
  (a delegate from :mod:`tfcompress._kernels`: AVX-512 VPOPCNTDQ / AVX2 / portable, picked
  from the CPU or by ``isa=``); every other op runs in LiteRT as usual.

``runtime="auto"`` (:func:`auto_runtime`) picks, for a file with ``Lce*`` custom ops, the
tfcompress kernels when they are built (:func:`tfcompress._kernels.available`), else LCE's
interpreter; for any other file, LiteRT. If the tfcompress runtime cannot load an LCE file,
``auto`` warns with the reason and uses LCE's interpreter (:attr:`Interpreter.fallback`).

Inputs (:meth:`Interpreter.prepare`): each array must have the model's input shape (a missing
batch axis of size 1 is added; nothing is reshaped or transposed). Float arrays are cast to a
float input, or quantized with the file's scale and zero point for an int8/uint8/int16 input.
Integer arrays are never converted between number formats: for a quantized input they must
already be quantized values of its exact type, for a float input they are refused. NaN and
infinite values are refused. Quantized outputs are dequantized, so callers always see floats.

Threads: one :class:`Interpreter` may be shared by several threads. Each invoke (set inputs,
run, copy outputs) holds a lock, so invokes on one object run one at a time and never mix
tensors; use one object per thread to run in parallel.
"""

import os
import threading
import time
import warnings
from pathlib import Path

import numpy as np

from tfcompress.errors import InterpreterError
from tfcompress.runtime.flatbuffer import inspect_flatbuffer
from tfcompress.runtime.inputs import INT_RANGES, check_dtype, dequantize, quantize, shape_error

RUNTIMES = ("auto", "litert", "lce", "micro", "tfcompress")
LCE_KERNELS = ("default", "indirect_bgemm", "reference", "xnnpack")

__all__ = ["Interpreter", "LCE_KERNELS", "RUNTIMES", "auto_runtime", "dequantize",
           "latency_interleaved", "quantize"]


def _read_model(model):
    if isinstance(model, (str, Path)):
        path = Path(model)
        if not path.is_file():
            raise InterpreterError(f"Model file {path} does not exist.")
        return path.read_bytes()
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model)
    raise TypeError(f"Expected flatbuffer bytes or a path, got {type(model).__name__}.")


def _kernels_available():
    from tfcompress import _kernels

    return _kernels.available()


def auto_runtime(model):
    """The runtime ``runtime="auto"`` picks for ``model`` (bytes, a path or a FlatbufferInfo).

    ``"tfcompress"`` for a file with ``Lce*`` ops when tfcompress's kernels are built, else
    ``"lce"``; ``"litert"`` for every other file. (An :class:`Interpreter` may still fall back
    from ``"tfcompress"`` to ``"lce"`` if the kernels refuse the file; see
    :attr:`Interpreter.fallback`.)
    """
    info = model if hasattr(model, "custom_ops") else inspect_flatbuffer(_read_model(model))
    if any(op.startswith("Lce") for op in info.custom_ops):
        return "tfcompress" if _kernels_available() else "lce"
    return "litert"


class Interpreter:
    """Run a ``.tflite`` flatbuffer one example at a time in a real runtime.

    Args:
        model: flatbuffer bytes or a path to a ``.tflite`` file.
        runtime: one of ``RUNTIMES`` (``"auto"``: see :func:`auto_runtime`).
        num_threads: interpreter threads (1 for latency figures that compare kernels).
        lce_kernel: for the LCE runtime, one of ``LCE_KERNELS``.
        isa: for the tfcompress runtime, ``"auto"`` (default), ``"portable"``, ``"avx2"`` or
            ``"avx512"`` (see :func:`tfcompress._kernels.delegate`).

    Attributes:
        runtime: the runtime in use (``"auto"`` resolved).
        fallback: why ``runtime="auto"`` used LCE's interpreter although the tfcompress
            kernels are built (None when it did not fall back).

    Thread safety: every invoke holds ``self``'s lock from setting the inputs to copying the
    outputs, so threads sharing one object get exactly the outputs they would get alone (the
    C++ interpreters and the kernels' thread pool are not re-entrant). Cost: one uncontended
    acquire/release per :meth:`run`/:meth:`invoke` (and per example of :meth:`predict`),
    measured at 0.4-0.7 us median on this project's 2-core machines (load average 6-10; a
    6->8->4 dense model in LiteRT: 5.8 us bare vs 6.3 us locked invoke, interleaved blocks of
    10,000) -- about 2% of the quickstart's binary MNIST model (0.02 ms), less for anything
    larger. :meth:`latency` and :func:`latency_interleaved` hold the lock around the whole
    timing loop, so their figures do not include it. Under contention the threads wait for
    each other: N threads on one object run no faster than one; use one object per thread to
    run in parallel.

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
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
            raise ValueError(f"num_threads must be a positive int, got {num_threads!r}.")
        lce_ops = [op for op in self.info.custom_ops if op.startswith("Lce")]
        other_custom = [op for op in self.info.custom_ops if not op.startswith("Lce")]
        requested = runtime
        if runtime == "auto":
            runtime = auto_runtime(self.info)
        if other_custom or (lce_ops and runtime not in ("lce", "tfcompress")):
            raise InterpreterError(
                f"The {runtime!r} runtime cannot run custom op(s) "
                f"{', '.join(other_custom or lce_ops)}"
                + ("; use runtime='lce' or runtime='tfcompress'." if not other_custom else ".")
            )
        if isa is not None and runtime != "tfcompress":
            raise ValueError(
                f"isa= only applies to runtime='tfcompress' (this file runs in {runtime!r}"
                + (", as runtime='auto' picked" if requested == "auto" else "") + ")."
            )
        self.requested_runtime = requested
        self.runtime = runtime
        self.num_threads = num_threads
        self.lce_kernel = lce_kernel
        self.isa = isa
        self.fallback = None
        self.inputs = self.info.inputs
        self.outputs = self.info.outputs
        self._lock = threading.Lock()
        try:
            self._open_checked()
        except InterpreterError as err:
            if requested != "auto" or self.runtime != "tfcompress":
                raise
            self.fallback = f"the tfcompress kernels refused this file: {err}"
            warnings.warn(f"runtime='auto' uses LCE's interpreter: {self.fallback}",
                          RuntimeWarning, stacklevel=2)
            self.runtime, self.isa = "lce", None
            self._open_checked()

    # ------------------------------------------------------------------ runtime plumbing
    def _open_checked(self):
        try:
            self._open()
        except InterpreterError:
            raise
        except Exception as err:
            raise InterpreterError(
                f"The {self.runtime} runtime could not load this model: {err}") from err

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
                except (ValueError, RuntimeError) as err:
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

            if self.info.variable_tensors:
                raise InterpreterError(
                    f"This model keeps state between invocations in variable tensors "
                    f"({', '.join(self.info.variable_tensors[:3])}, e.g. TFLite's fused LSTM), "
                    "and LCE's interpreter cannot reset them, so every example after the first "
                    "would start from the previous one's state. Use runtime='litert' or "
                    "'tfcompress', or build the recurrent layer with unroll=True.")

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
        """One invoke without the lock (callers hold it): prepared arrays -> raw outputs.

        A model with variable (state) tensors -- TFLite's fused LSTM/GRU ops keep their hidden
        state in them between invocations -- is reset first, so every example starts from the
        initial state, as a Keras model called on one sequence does."""
        if self.runtime in ("litert", "tfcompress"):
            if self.info.variable_tensors:
                self._it.reset_all_variables()
            for idx, a in zip(self._in_idx, arrays):
                self._it.set_tensor(idx, a)
            self._it.invoke()
            return [self._it.get_tensor(idx) for idx in self._out_idx]
        if self.runtime == "lce":
            return [np.array(o) for o in self._it.interpreter.predict(arrays)]
        if self.info.variable_tensors:
            self._it.reset()
        for i, a in enumerate(arrays):
            self._it.set_input(a, i)
        self._it.invoke()
        return [np.array(self._it.get_output(i)) for i in range(len(self.outputs))]

    # ----------------------------------------------------------------------- public API
    def prepare(self, example):
        """Check one example against the model's inputs and convert it for :meth:`invoke`.

        Rules (nothing is guessed, anything else is a ``ValueError`` naming the input):

        - one array per model input (a list/tuple for several inputs);
        - shape: exactly the input's shape, or that shape without its batch axis of size 1
          (which is then added); an array with the right number of values in another layout
          (e.g. NCHW for an NHWC model) is refused, never reshaped;
        - floats: refused if any is NaN or infinite; cast to a float input; quantized as
          ``round(x / scale + zero_point)``, saturating, for an int8/uint8/int16 input;
        - integers: for a quantized input they must already have its exact type (they are
          quantized values; uint8 pixels for an int8 model are refused, not wrapped around);
          for a float input they are refused (scale them first); for a plain integer input
          (e.g. token ids) they must fit its range;
        - an empty array is refused.

        Args:
            example: an array, or a list/tuple of arrays (one per model input).

        Returns:
            list of numpy arrays in the inputs' shapes and types.
        """
        arrays = list(example) if isinstance(example, (list, tuple)) else [example]
        if len(arrays) != len(self.inputs):
            raise ValueError(
                f"The model has {len(self.inputs)} input(s); got {len(arrays)} array(s).")
        out = []
        for a, spec in zip(arrays, self.inputs):
            a = np.asarray(a)
            want = tuple(spec["shape"])
            if a.size == 0:
                raise ValueError(f"Input {spec['name']!r} is empty (shape {a.shape}); pass one "
                                 f"example of shape {want}.")
            if a.shape != want:
                if not (want and want[0] == 1 and a.shape == want[1:]):
                    raise shape_error(spec, a.shape)
                a = a[None]
            out.append(np.ascontiguousarray(check_dtype(a, spec)))
        return out

    _prepare = prepare  # the old private name (tools/bench_kernels.py)

    def invoke(self, prepared):
        """Run prepared arrays once, holding the lock; return the raw outputs.

        This is the unchecked path: ``prepared`` must be one array per input, exactly in the
        input's shape and type, as :meth:`prepare` returns them (benchmark loops prepare once
        and invoke many times; tests use it to feed special values such as NaN on purpose).

        Returns:
            list of output arrays in the file's output types (not dequantized), each a copy
            owned by the caller.
        """
        with self._lock:
            return self._invoke(prepared)

    def _finish(self, outputs):
        res = []
        for q, spec in zip(outputs, self.outputs):
            q = np.asarray(q)
            if spec["dtype"] in INT_RANGES and spec["scale"] is not None:
                q = dequantize(q, spec["scale"], spec["zero_point"])
            res.append(q.astype(np.float32))
        return res

    def run(self, example):
        """Run one example (batch of 1, or the array without its batch axis); return floats.

        See :meth:`prepare` for what inputs are accepted.
        """
        outs = self._finish(self.invoke(self.prepare(example)))
        return outs[0] if len(outs) == 1 else outs

    def _check_batch(self, xs):
        """Whole-array checks for :meth:`predict`: same length, shape, no NaN; returns n."""
        if len(xs) != len(self.inputs):
            raise ValueError(f"The model has {len(self.inputs)} input(s); got {len(xs)} array(s).")
        xs = [np.asarray(a) for a in xs]
        for a, spec in zip(xs, self.inputs):
            if a.ndim == 0:
                raise ValueError(f"Input {spec['name']!r}: x must have a first axis of "
                                 "examples; got a scalar.")
        n = len(xs[0])
        if any(len(a) != n for a in xs):
            raise ValueError("All inputs must have the same number of examples; got "
                             f"{[len(a) for a in xs]}.")
        if n == 0:
            raise ValueError(f"x holds no examples (shape {xs[0].shape}); pass at least one.")
        for a, spec in zip(xs, self.inputs):
            want = tuple(spec["shape"])
            if a.shape[1:] != want and not (want and want[0] == 1 and a.shape[1:] == want[1:]):
                raise shape_error(spec, a.shape[1:], what=f"x of shape {a.shape}, examples")
            if a.dtype.kind == "f":
                finite = np.isfinite(a.reshape(n, -1)).all(axis=1)
                if not finite.all():
                    bad = np.flatnonzero(~finite)
                    raise ValueError(
                        f"Input {spec['name']!r} contains NaN or infinite values in "
                        f"{len(bad)} example(s) (first: example {bad[0]})."
                    )
        return xs, n

    def predict(self, x, *, progress=False, desc="interpreter"):
        """Run every example of ``x`` (first axis = examples) and stack the outputs.

        Args:
            x: an array (a list of arrays for several inputs) whose first axis is examples;
                each example follows the rules of :meth:`prepare`.
            progress: show a progress bar.
            desc: the progress bar's label.

        Returns:
            float32 outputs with a first axis of examples (a list for several outputs).
        """
        xs, n = self._check_batch(x if isinstance(x, (list, tuple)) else [x])
        results = None
        rng = range(n)
        if progress:
            from tqdm.auto import tqdm

            rng = tqdm(rng, desc=desc, unit="ex", leave=False, mininterval=0.5)
        for i in rng:
            outs = self._finish(self.invoke(self.prepare([a[i] for a in xs])))
            if results is None:
                results = [np.empty((n,) + o.shape[1:], np.float32) for o in outs]
            for r, o in zip(results, outs):
                r[i] = o[0]
        return results[0] if len(results) == 1 else results

    def latency(self, example, *, runs=100, warmup=10):
        """Single-example latency in milliseconds: median, p10, p90 over ``runs`` timed invokes.

        The lock is held for the whole measurement, so other threads sharing this object
        neither disturb the figures nor add the lock's cost to them.
        """
        if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
            raise ValueError(f"runs must be a positive int, got {runs!r}.")
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise ValueError(f"warmup must be an int >= 0, got {warmup!r}.")
        arrays = self.prepare(example)
        times = []
        with self._lock:
            for _ in range(warmup):
                self._invoke(arrays)
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


def latency_interleaved(interpreters, examples, *, runs=100, warmup=10, rounds=5):
    """Single-example latency of several interpreters, measured side by side.

    The timed runs are split into ``rounds`` blocks and the blocks alternate between the
    interpreters (A B C, A B C, ...), so a change of machine load during the measurement
    affects all of them alike; comparisons between files (int8 vs binary) should use this
    rather than separate :meth:`Interpreter.latency` calls.

    Args:
        interpreters: :class:`Interpreter` objects.
        examples: one example per interpreter (or one for all), as :meth:`Interpreter.run`
            takes it.
        runs: timed invokes per interpreter; ``warmup`` untimed ones first.
        rounds: blocks the runs are split into.

    Returns:
        one dict per interpreter, with the keys of :meth:`Interpreter.latency` plus
        ``"rounds"``.
    """
    interpreters = list(interpreters)
    if not isinstance(examples, (list, tuple)) or len(examples) != len(interpreters):
        examples = [examples] * len(interpreters)
    for name, value, low in (("runs", runs, 1), ("warmup", warmup, 0), ("rounds", rounds, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}.")
    prepared = [it.prepare(x) for it, x in zip(interpreters, examples)]
    for it, arrays in zip(interpreters, prepared):
        with it._lock:
            for _ in range(warmup):
                it._invoke(arrays)
    times = [[] for _ in interpreters]
    rounds = min(rounds, runs)
    for r in range(rounds):
        block = runs // rounds + (1 if r < runs % rounds else 0)
        for k, (it, arrays) in enumerate(zip(interpreters, prepared)):
            with it._lock:
                for _ in range(block):
                    t0 = time.perf_counter()
                    it._invoke(arrays)
                    times[k].append((time.perf_counter() - t0) * 1e3)
    out = []
    for it, t in zip(interpreters, times):
        t = np.asarray(t)
        out.append({
            "median_ms": float(np.median(t)), "p10_ms": float(np.percentile(t, 10)),
            "p90_ms": float(np.percentile(t, 90)), "runs": runs, "warmup": warmup,
            "rounds": rounds, "threads": it.num_threads, "runtime": it.runtime,
            "kernel": it.kernel,
        })
    return out
