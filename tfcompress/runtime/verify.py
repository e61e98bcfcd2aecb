"""``verify``: run a converted file in the real interpreter and compare it with Keras."""

import json
from dataclasses import asdict, dataclass, field

import numpy as np

from tfcompress.runtime.interpreter import Interpreter


@dataclass
class VerifyReport:
    """Accuracy, agreement, numerical difference, size and latency of one converted file."""

    runtime: str
    kernel: str
    examples: int
    size_bytes: int
    accuracy: float = None          # interpreter accuracy on (x, y), if labels were given
    keras_accuracy: float = None    # Keras model accuracy on the same data, if a model was given
    agreement: float = None         # share of examples where argmax(interpreter) == argmax(Keras)
    max_abs_diff: float = None      # max |interpreter - Keras| over all outputs
    latency: dict = field(default_factory=dict)

    def to_dict(self):
        return asdict(self)

    def to_json(self):
        return json.dumps(self.to_dict(), indent=2)

    def __str__(self):
        def pct(v):
            return "-" if v is None else f"{100 * v:.2f}%"

        lat = self.latency.get("median_ms")
        threads = self.latency.get("threads", 1)
        return (
            f"{self.runtime} ({self.kernel}) on {self.examples} examples: "
            f"accuracy {pct(self.accuracy)}, Keras {pct(self.keras_accuracy)}, "
            f"agreement {pct(self.agreement)}, max|diff| "
            f"{'-' if self.max_abs_diff is None else f'{self.max_abs_diff:.3g}'}, "
            f"size {self.size_bytes / 1024:.1f} KiB, latency "
            f"{'-' if lat is None else f'{lat:.3f} ms'} (median, batch 1, "
            f"{threads} thread{'' if threads == 1 else 's'})"
        )


def _labels(y):
    y = np.asarray(y)
    if y.ndim >= 2 and y.shape[-1] > 1:
        return y.argmax(-1)
    return y.reshape(len(y)).astype(np.int64)


def _is_classifier(out):
    return out.ndim == 2 and out.shape[1] > 1


def verify(flatbuffer, x, y=None, *, keras_model=None, runtime="auto", num_threads=1,
           lce_kernel="indirect_bgemm", isa=None, latency_runs=100, warmup=10, progress=False,
           keras_batch_size=256):
    """Run ``flatbuffer`` on every example of ``x`` in the real interpreter.

    Args:
        flatbuffer: bytes or a path to a ``.tflite`` file.
        x: inputs, first axis = examples (a list of arrays for several inputs); see
            :meth:`Interpreter.prepare` for what is accepted.
        y: optional labels (integers or one-hot) for accuracy of a classifier.
        keras_model: optional Keras model to compare against (agreement, max abs diff).
        runtime: ``"auto"`` (default: tfcompress's kernels for LCE files when they are built,
            else LCE's interpreter; LiteRT for other files), or one of
            :data:`~tfcompress.runtime.RUNTIMES`.
        num_threads, lce_kernel, isa: passed to :class:`Interpreter`.
        latency_runs, warmup: timed single-example invokes (0 runs skips latency).
        progress: show a progress bar while running the examples.
        keras_batch_size: batch size of the Keras reference run.

    Returns:
        :class:`VerifyReport`.

    Raises:
        ValueError: no examples, inputs the model cannot take (see
            :meth:`Interpreter.prepare`), labels of another length, or labels for a model
            that is not a classifier.
        InterpreterError: the file cannot be loaded in the runtime.
    """
    it = Interpreter(flatbuffer, runtime=runtime, num_threads=num_threads, lce_kernel=lce_kernel,
                     isa=isa)
    first = x[0] if isinstance(x, (list, tuple)) else x
    if len(first) == 0:
        raise ValueError("verify needs at least one example; x holds none.")
    if y is not None and len(y) != len(first):
        raise ValueError(f"x has {len(first)} examples but y has {len(y)} labels.")
    out = it.predict(x, progress=progress, desc=f"{it.runtime} verify")
    main = out[0] if isinstance(out, list) else out
    report = VerifyReport(runtime=it.runtime, kernel=it.kernel, examples=len(first),
                          size_bytes=len(it.model))
    classifier = _is_classifier(main)
    if y is not None:
        if not classifier:
            raise ValueError(
                f"Labels were given but the model output has shape {main.shape}, not "
                "(examples, classes); accuracy is only defined for classifiers."
            )
        report.accuracy = float((main.argmax(-1) == _labels(y)).mean())
    if keras_model is not None:
        ref = keras_model.predict(x, batch_size=keras_batch_size, verbose=0)
        ref_main = ref[0] if isinstance(ref, list) else ref
        outs = out if isinstance(out, list) else [out]
        refs = ref if isinstance(ref, list) else [ref]
        report.max_abs_diff = float(max(np.abs(np.asarray(o) - np.asarray(r)).max()
                                        for o, r in zip(outs, refs)))
        if classifier:
            report.agreement = float((main.argmax(-1) == ref_main.argmax(-1)).mean())
            if y is not None:
                report.keras_accuracy = float((ref_main.argmax(-1) == _labels(y)).mean())
    if latency_runs:
        sample = [a[:1] for a in x] if isinstance(x, (list, tuple)) else x[:1]
        report.latency = it.latency(sample, runs=latency_runs, warmup=warmup)
    return report
