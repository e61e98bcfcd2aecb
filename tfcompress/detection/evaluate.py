"""Run a detector (Keras model or converted flatbuffer in its real interpreter) and score it."""

from pathlib import Path

import numpy as np

from tfcompress._keras import keras
from tfcompress.detection.boxes import decode
from tfcompress.detection.metrics import mean_average_precision


def raw_outputs(detector, images, *, batch_size=64):
    """Raw detector outputs ``(N, Gh, Gw, 5 + C)`` for ``images``.

    ``detector`` may be a Keras model, a :class:`tfcompress.ConversionResult` (run in its real
    interpreter: ai-edge-litert for TFLite, LCE's for ``Lce*`` ops), flatbuffer bytes or a
    ``.tflite`` path, a :class:`tfcompress.Interpreter`, or a callable ``images -> outputs``.
    """
    from tfcompress.conversion.result import ConversionResult
    from tfcompress.runtime.interpreter import Interpreter

    images = np.asarray(images, np.float32)
    if images.ndim != 4:
        raise ValueError(f"images must be (N, H, W, C), got shape {images.shape}.")
    if len(images) == 0:
        raise ValueError("images is empty; give at least one image.")
    if not np.isfinite(images).all():
        raise ValueError("images contain NaN or infinite values.")
    if isinstance(detector, keras.Model):
        want = _input_shape(detector)
        if want is not None and (len(want) != 3 or any(
                w is not None and w != g for w, g in zip(want, images.shape[1:]))):
            raise ValueError(f"The detector takes images of shape {want} (H, W, C); got images "
                             f"of shape {images.shape[1:]}. Resize or pad them to the model's "
                             "input (box coordinates are in input pixels).")
        return np.asarray(detector.predict(images, batch_size=batch_size, verbose=0))
    if isinstance(detector, ConversionResult):
        detector = detector.interpreter()
    elif isinstance(detector, (bytes, bytearray, str, Path)):
        detector = Interpreter(bytes(detector) if isinstance(detector, (bytes, bytearray))
                               else detector)
    if isinstance(detector, Interpreter):
        return np.asarray(detector.predict(images))
    if callable(detector):
        return np.asarray(detector(images))
    raise TypeError(f"Cannot run a detector of type {type(detector).__name__}; pass a Keras model, "
                    "a ConversionResult, flatbuffer bytes/path, an Interpreter or a callable.")


def _input_shape(model):
    """``(H, W, C)`` a Keras model takes (None if it cannot tell, e.g. an uncalled subclass;
    a NAS supernet records it as ``image_shape``)."""
    try:
        return tuple(model.input_shape[1:])
    except AttributeError:
        shape = getattr(model, "image_shape", None)
        return tuple(shape) if shape is not None else None


def detect(detector, images, *, score_threshold=0.01, iou_threshold=0.5, max_detections=100,
           batch_size=64, strides=None):
    """Decoded, NMS-filtered detections (one :class:`Detections` per image); ``strides`` for a
    multi-scale detector's packed output (see :func:`~tfcompress.detection.decode`)."""
    out = raw_outputs(detector, images, batch_size=batch_size)
    return decode(out, input_shape=np.shape(images)[1:3], score_threshold=score_threshold,
                  iou_threshold=iou_threshold, max_detections=max_detections, strides=strides)


def evaluate(detector, images, boxes, labels, *, score_threshold=0.001, iou_threshold=0.5,
             max_detections=100, batch_size=64, backend="auto", strides=None):
    """mAP@0.5 and mAP@0.5:0.95 (COCO 101-point protocol) of ``detector`` on ``images``.

    Args:
        detector: see :func:`raw_outputs` (an int8 or LCE file is run in its real interpreter).
        images: ``(N, H, W, C)`` float inputs, as the detector was trained on.
        boxes, labels: ground truth per image (see
            :func:`tfcompress.detection.metrics.mean_average_precision`, which documents how
            empty box lists count).
        score_threshold: detections below this score are dropped before NMS (COCO-style
            evaluation keeps low-score detections: they can only add recall).
        iou_threshold: class-wise NMS threshold.
        max_detections: per image.
        backend: the mAP implementation (``"auto"``: pycocotools when installed, see
            :func:`~tfcompress.detection.metrics.mean_average_precision`).
        strides: the strides of a multi-scale detector's packed output (e.g.
            ``space.grid_strides()`` of a two-scale NAS detector); ``None`` for one grid.

    Returns:
        :class:`~tfcompress.detection.metrics.DetectionMetrics`.
    """
    images = np.asarray(images, np.float32)
    if images.ndim != 4:
        raise ValueError(f"images must be (N, H, W, C), got shape {images.shape}.")
    if len(images) != len(boxes):
        raise ValueError(f"{len(images)} images but {len(boxes)} box lists.")
    dets = detect(detector, images, score_threshold=score_threshold, iou_threshold=iou_threshold,
                  max_detections=max_detections, batch_size=batch_size, strides=strides)
    return mean_average_precision(dets, boxes, labels, max_detections=max_detections,
                                  backend=backend)


__all__ = ["detect", "evaluate", "raw_outputs"]
