"""Q-YOLO post-training quantization (Wang, Sun, Shi, Liu, Zhang, Cao; arXiv 2307.04816), method
card 6.4: full-int8 TFLite with per-tensor activation ranges from the Unilateral Histogram (UH)
search, or min/max, or a percentile.

UH, as the card gives it (from pytorch-quantization's histogram calibrator used by the official
code): for each activation tensor, over the calibration images,

1. track the minimum ``l``; histogram the non-negative values into ``bins`` (2048) bins over
   ``[0, max]`` (negative values enter only through ``l``);
2. for every candidate upper limit ``u = c_k`` (bin centre, ``k >= start_bin`` = 128):
   ``S = (u - l) / (2^b - 1)``, ``q(c) = clip(round((c - l) / S), 0, 2^b - 1) S + l``,
   ``MSE(u) = sum_k count_k (q(c_k) - c_k)^2``;
3. use the affine quantizer on ``[l, u*]``, ``u* = argmin MSE`` (the first minimum).

``"minmax"`` keeps ``[min, max]`` (what the TFLite converter's own calibration computes), and
``"percentile"`` uses ``[min, p-th percentile of the same non-negative histogram]`` (the upper
edge of the bin where the cumulative count reaches ``p`` %, as pytorch-quantization does; the
lower limit is pinned to the minimum as in UH). Weights are quantized by the converter
(symmetric per-channel int8 from their min/max), as in Q-YOLO.

How the ranges reach the ``.tflite`` file. The TFLite converter has no histogram calibration,
so :func:`ptq` runs the converter in three steps:

1. calibrate only (``TFLiteConverter._experimental_calibrate_only``): a float flatbuffer in
   which every activation tensor carries the min/max seen on the calibration images (after the
   converter has folded BN and fused activations, so the ranges are those of the tensors the
   int8 graph really has);
2. run that float file in ai-edge-litert with all intermediate tensors preserved, collect the
   statistics above per tensor, and overwrite the tensor's recorded min/max with the chosen
   range. The model input and outputs keep their min/max: the input is the caller's data, and
   the outputs are the raw head (box offsets, log sizes, logits in one tensor), which the
   card's pitfall says to keep at higher fidelity; ``include_outputs=True`` applies the method
   to the outputs too;
3. quantize with the converter's own MLIR quantizer (``mlir_quantize``, the call the converter
   itself makes after calibration), which derives each tensor's scale and zero point from the
   recorded range.

With ``activation_range="minmax"`` step 2 changes nothing, so the file is byte-identical to
``tfcompress.convert(model, target="int8")`` with the same calibration images (a test checks
this). Tensors whose int8 parameters TFLite fixes (sigmoid, tanh, softmax outputs) keep them.
The two converter entry points are private TensorFlow APIs; they are reached only through
:mod:`tfcompress.conversion.tflite_internals`, which refuses a TensorFlow version they were not
checked with (a :class:`~tfcompress.ConversionError` naming both versions).
"""

import warnings

import numpy as np

from tfcompress._keras import tf
from tfcompress.conversion import tflite_internals
from tfcompress.errors import ConversionError

METHODS = ("unilateral_histogram", "minmax", "percentile")


def uh_search(hist, edges, lower, *, bits=8, start_bin=128):
    """The UH upper limit for a histogram of non-negative values.

    Args:
        hist: counts per bin (``bins``,).
        edges: bin edges (``bins + 1``,), from 0 to the maximum.
        lower: the tensor minimum ``l`` (the quantizer's fixed lower limit).
        bits: quantizer bits ``b``.
        start_bin: first candidate bin (the card: 128).

    Returns:
        ``(u, k)``: the chosen upper limit (the centre of bin ``k``) and ``k``.
    """
    hist = np.asarray(hist, np.float64)
    edges = np.asarray(edges, np.float64)
    if edges.shape != (len(hist) + 1,):
        raise ValueError(f"edges must have len(hist) + 1 = {len(hist) + 1} values, got {edges.shape}.")
    if not 0 <= start_bin < len(hist):
        raise ValueError(f"start_bin ({start_bin}) must be in [0, bins = {len(hist)}).")
    centers = 0.5 * (edges[1:] + edges[:-1])
    levels = 2 ** int(bits) - 1
    lower = float(lower)
    best_mse, best_k = np.inf, len(hist) - 1
    for k0 in range(start_bin, len(hist), 256):                   # vectorized in chunks
        u = centers[k0:k0 + 256, None]
        valid = u > lower                       # an upper limit at or below l is no range
        scale = np.where(valid, (u - lower) / levels, 1.0)
        q = np.clip(np.round((centers[None, :] - lower) / scale), 0, levels) * scale + lower
        mse = np.where(valid[:, 0], np.sum(hist[None, :] * np.square(q - centers[None, :]), axis=1),
                       np.inf)
        k = int(np.argmin(mse))
        if mse[k] < best_mse:
            best_mse, best_k = float(mse[k]), k0 + k
    return float(centers[best_k]), best_k


def percentile_upper(hist, edges, percentile):
    """Upper edge of the first bin where the cumulative count reaches ``percentile`` %."""
    hist = np.asarray(hist, np.float64)
    cdf = np.cumsum(hist) / max(hist.sum(), 1.0)
    k = int(np.argmax(cdf >= percentile / 100.0))
    return float(np.asarray(edges)[k + 1])


def range_from_values(values, method="unilateral_histogram", *, bits=8, bins=2048, start_bin=128,
                      percentile=99.99):
    """``(lower, upper)`` activation range of ``values`` by ``method`` (see module docstring)."""
    x = np.asarray(values, np.float64).reshape(-1)
    if x.size == 0:
        raise ValueError("range_from_values needs at least one value.")
    stats = _TensorStats(bins)
    stats.observe_minmax(x)
    stats.observe_histogram(x)
    return stats.range(method, bits=bits, start_bin=start_bin, percentile=percentile)


class _TensorStats:
    """Running min/max (pass 1), then the non-negative histogram over [0, max] (pass 2)."""

    def __init__(self, bins):
        self.bins = bins
        self.lo, self.hi = np.inf, -np.inf
        self.hist = None

    def observe_minmax(self, v):
        self.lo = min(self.lo, float(v.min()))
        self.hi = max(self.hi, float(v.max()))

    def observe_histogram(self, v):
        top = max(self.hi, 0.0)
        if self.hist is None:
            self.hist = np.zeros(self.bins, np.float64)
            self.edges = np.linspace(0.0, top, self.bins + 1) if top > 0 else None
        if self.edges is not None:
            pos = v[v >= 0]
            self.hist += np.histogram(pos, bins=self.bins, range=(0.0, top))[0]

    def range(self, method, *, bits, start_bin, percentile):
        if method == "minmax" or self.edges is None or self.hist.sum() == 0:
            return self.lo, self.hi
        if method == "percentile":
            return self.lo, percentile_upper(self.hist, self.edges, percentile)
        return self.lo, uh_search(self.hist, self.edges, self.lo, bits=bits,
                                  start_bin=min(start_bin, self.bins - 1))[0]


def _check_method(method):
    if method not in METHODS:
        raise ValueError(f"activation_range must be one of {', '.join(map(repr, METHODS))}, got "
                         f"{method!r}.")


def _calibrated_flatbuffer(model, images, io_type):
    def gen():
        for i in range(len(images)):
            yield [images[i:i + 1]]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = gen
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tflite_internals.IO_TYPES[io_type]
    conv.inference_output_type = tflite_internals.IO_TYPES[io_type]
    try:
        with tflite_internals.quiet(), warnings.catch_warnings():
            # "Statistics for quantized inputs were expected": int8 I/O is set after calibration
            warnings.simplefilter("ignore", UserWarning)
            return tflite_internals.calibrate_only(conv, "Q-YOLO ptq")
    except ConversionError:
        raise
    except Exception as err:
        raise ConversionError(f"TFLite calibration failed: {err}") from err


def _collect_stats(flatbuffer, images, indices, bins):
    from ai_edge_litert.interpreter import Interpreter

    with warnings.catch_warnings():     # "preserve_all_tensors is for debugging": intended here
        warnings.simplefilter("ignore", UserWarning)
        it = Interpreter(model_content=flatbuffer, experimental_preserve_all_tensors=True,
                         num_threads=1)
    it.allocate_tensors()
    inp = it.get_input_details()[0]["index"]
    stats = {i: _TensorStats(bins) for i in indices}
    for observe in ("observe_minmax", "observe_histogram"):
        for n in range(len(images)):
            it.set_tensor(inp, images[n:n + 1])
            it.invoke()
            for i in indices:
                getattr(stats[i], observe)(np.asarray(it.get_tensor(i), np.float64))
    return stats


def ptq(detector, calibration_images, *, activation_range="unilateral_histogram", bits=8,
        bins=2048, start_bin=128, percentile=99.99, calibration_steps=500, io_type="int8",
        include_outputs=False):
    """Post-training full-int8 quantization with Q-YOLO's activation ranges.

    Args:
        detector: a float tf_keras model (e.g. :func:`tfcompress.models.TinyYOLO`).
        calibration_images: ``(N, H, W, C)`` float inputs (a few hundred training images).
        activation_range: ``"unilateral_histogram"`` (UH), ``"minmax"`` or ``"percentile"``.
        bits: activation bits; TFLite runs 8-bit activations only, so 8 is the one value
            accepted here (use :func:`range_from_values` with ``bits=4`` to study 4-bit ranges).
        bins, start_bin: UH histogram size and first candidate bin (2048, 128 in Q-YOLO).
        percentile: for ``"percentile"`` (99.99 in pytorch-quantization).
        calibration_steps: at most this many calibration images are used.
        io_type: ``"int8"`` (default) or ``"float32"`` model inputs/outputs.
        include_outputs: apply the method to the model outputs as well (default: they keep
            their min/max range, see the module docstring).

    Returns:
        A :class:`tfcompress.ConversionResult` (``target="int8"``, runs in ai-edge-litert);
        ``result.extras["activation_ranges"]`` maps each tensor name to its ``(lower, upper)``.
    """
    from tfcompress.conversion.checks import check_model
    from tfcompress.conversion.result import ConversionResult
    from tfcompress.runtime.flatbuffer import inspect_flatbuffer

    _check_method(activation_range)
    if bits != 8:
        raise ValueError(f"bits={bits!r}: TFLite executes 8-bit activations only. Study other bit "
                         "widths with range_from_values(..., bits=b) in simulation.")
    if io_type not in ("int8", "float32"):
        raise ValueError(f"io_type must be 'int8' or 'float32', got {io_type!r}.")
    if not isinstance(calibration_steps, int) or calibration_steps < 1:
        raise ValueError(f"calibration_steps must be a positive int, got {calibration_steps!r}.")
    check_model(detector, "int8")
    images = np.asarray(calibration_images, np.float32)[:calibration_steps]
    want = tuple(detector.inputs[0].shape[1:])
    if images.ndim != 4 or images.shape[1:] != want or len(images) == 0:
        raise ValueError(f"calibration_images must be (N,) + {want} with N >= 1, got {images.shape}.")
    if not np.isfinite(images).all():
        raise ValueError("calibration_images contain NaN or infinite values.")
    tflite_internals.check_tensorflow("Q-YOLO ptq")
    calibrated = _calibrated_flatbuffer(detector, images, io_type)
    model = tflite_internals.flatbuffer_to_object(calibrated)
    graph = model.subgraphs[0]
    fixed = set(int(i) for i in graph.inputs)
    if not include_outputs:
        fixed |= set(int(i) for i in graph.outputs)
    targets = [i for i, t in enumerate(graph.tensors)
               if i not in fixed and t.quantization is not None and t.quantization.min is not None
               and len(t.quantization.min) == 1]
    ranges = {}
    if activation_range == "minmax":
        for i in targets:
            q = graph.tensors[i].quantization
            ranges[graph.tensors[i].name.decode()] = (float(q.min[0]), float(q.max[0]))
        source = calibrated
    else:
        stats = _collect_stats(calibrated, images, targets, bins)
        for i in targets:
            lo, hi = stats[i].range(activation_range, bits=bits, start_bin=start_bin,
                                    percentile=percentile)
            q = graph.tensors[i].quantization
            q.min = np.array([min(lo, 0.0)], np.float32)
            q.max = np.array([max(hi, 0.0)], np.float32)
            ranges[graph.tensors[i].name.decode()] = (float(lo), float(hi))
        source = tflite_internals.object_to_flatbuffer(model)
    try:
        with tflite_internals.quiet(), tflite_internals.quiet_stdout(), \
                warnings.catch_warnings():
            # "Statistics for quantized inputs were expected": the converter's own call warns too
            warnings.simplefilter("ignore", UserWarning)
            quantized = tflite_internals.quantize_calibrated(source, io_type=io_type,
                                                             feature="Q-YOLO ptq")
    except ConversionError:
        raise
    except Exception as err:
        raise ConversionError(f"TFLite quantization with the {activation_range} ranges failed: "
                              f"{err}") from err
    quantized = tflite_internals.deduplicate_buffers(quantized)
    return ConversionResult(
        flatbuffer=quantized, target="int8", info=inspect_flatbuffer(quantized), model=detector,
        extras={"activation_range": activation_range, "activation_ranges": ranges,
                "calibration_images": len(images), "bins": bins, "start_bin": start_bin,
                "percentile": percentile if activation_range == "percentile" else None})


__all__ = ["METHODS", "percentile_upper", "ptq", "range_from_values", "uh_search"]
