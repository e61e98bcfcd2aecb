"""Boxes, TinyYOLO decoding and non-maximum suppression (numpy).

Boxes are ``[x1, y1, x2, y2]`` in pixels, corners on pixel edges: a box covering columns
``c0..c1`` and rows ``r0..r1`` is ``[c0, r0, c1 + 1, r1 + 1]``; width ``x2 - x1``, area
``(x2 - x1) (y2 - y1)`` (the COCO convention, no "+1").
"""

from dataclasses import dataclass

import numpy as np


def box_iou(a, b):
    """IoU matrix ``(len(a), len(b))`` of two arrays of ``[x1, y1, x2, y2]`` boxes.

    >>> box_iou(np.array([[0, 0, 2, 2]]), np.array([[1, 0, 3, 2], [5, 5, 6, 6]])).round(4).tolist()
    [[0.3333, 0.0]]
    """
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def nms(boxes, scores, iou_threshold=0.5, classes=None):
    """Greedy non-maximum suppression; indices kept, highest score first.

    A box is dropped when its IoU with an already kept box (of the same class, if ``classes``
    is given) is above ``iou_threshold``. Ties in score keep the earlier index.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    if len(boxes) != len(scores):
        raise ValueError(f"nms: {len(boxes)} boxes but {len(scores)} scores.")
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold!r}.")
    order = np.argsort(-scores, kind="stable")
    if classes is not None:
        classes = np.asarray(classes).reshape(-1)
    keep = []
    suppressed = np.zeros(len(boxes), bool)
    for pos, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(i)
        rest = order[pos + 1:]
        rest = rest[~suppressed[rest]]
        if classes is not None:
            rest = rest[classes[rest] == classes[i]]
        if len(rest):
            iou = box_iou(boxes[i:i + 1], boxes[rest])[0]
            suppressed[rest[iou > iou_threshold]] = True
    return np.asarray(keep, np.int64)


@dataclass
class Detections:
    """Detections of one image: ``boxes`` (k, 4) ``[x1, y1, x2, y2]``, ``scores`` (k,),
    ``classes`` (k,), highest score first."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    def __len__(self):
        return len(self.scores)


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def split_scales(outputs, *, input_shape, strides):
    """Split packed multi-scale outputs ``(N, sum_s Gh_s Gw_s, 5 + C)`` into one
    ``(N, H / s, W / s, 5 + C)`` grid per stride ``s`` (in the order given; each grid is
    flattened row-major in the packed tensor, as :class:`tfcompress.nas.supernet.TwoScaleHead`
    and :func:`tfcompress.detection.encode_scales` lay it out)."""
    out = np.asarray(outputs)
    h, w = int(input_shape[0]), int(input_shape[1])
    grids = []
    for s in strides:
        s = int(s)
        if s < 1 or h % s or w % s:
            raise ValueError(f"Stride {s} does not divide the input {h}x{w}.")
        grids.append((h // s, w // s))
    need = sum(gh * gw for gh, gw in grids)
    if out.ndim != 3 or out.shape[1] != need:
        raise ValueError(f"Packed outputs for strides {tuple(strides)} on a {h}x{w} input must be "
                         f"(N, {need}, 5 + classes), got {out.shape}.")
    parts, start = [], 0
    for gh, gw in grids:
        parts.append(out[:, start: start + gh * gw].reshape(len(out), gh, gw, out.shape[-1]))
        start += gh * gw
    return parts


def _grid_candidates(out, h, w):
    """Boxes ``(N, cells, 4)`` and class scores ``(N, cells, C)`` of one raw grid."""
    gh, gw = out.shape[1:3]
    if h % gh or w % gw or h // gh != w // gw:
        raise ValueError(f"Input {h}x{w} is not a whole multiple of the {gh}x{gw} output grid.")
    stride = h // gh
    jj, ii = np.meshgrid(np.arange(gw), np.arange(gh))
    cx = (jj + _sigmoid(out[..., 0])) * stride
    cy = (ii + _sigmoid(out[..., 1])) * stride
    bw = np.exp(np.clip(out[..., 2], -8, 8)) * stride
    bh = np.exp(np.clip(out[..., 3], -8, 8)) * stride
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1)
    boxes = np.clip(boxes, 0, [w, h, w, h])
    logits = out[..., 5:]
    prob = np.exp(logits - logits.max(-1, keepdims=True))
    prob /= prob.sum(-1, keepdims=True)
    scores = _sigmoid(out[..., 4])[..., None] * prob
    n = len(out)
    return boxes.reshape(n, -1, 4), scores.reshape(n, -1, scores.shape[-1])


def decode(outputs, *, input_shape, score_threshold=0.01, iou_threshold=0.5,
           max_detections=100, strides=None):
    """TinyYOLO raw outputs ``(N, Gh, Gw, 5 + C)`` -> one :class:`Detections` per image.

    Every (cell, class) pair whose score ``sigmoid(obj) * softmax(cls)_c`` is at least
    ``score_threshold`` is a candidate; class-wise :func:`nms` then keeps at most
    ``max_detections`` per image. Boxes are clipped to the image. ``input_shape`` is the
    model input ``(H, W)`` (or ``(H, W, C)``); the stride is ``H / Gh``.

    Multi-scale detectors: ``outputs`` may be a list of such grids (one per scale), or the
    packed ``(N, cells, 5 + C)`` output of a multi-scale head with its ``strides`` (see
    :func:`split_scales`). Each grid's boxes are decoded with that grid's stride, then the
    candidates of all scales go through the same class-wise NMS.
    """
    if strides is not None:
        grids = split_scales(outputs, input_shape=input_shape, strides=strides)
    elif isinstance(outputs, (list, tuple)):
        grids = list(outputs)
    else:
        grids = [outputs]
    grids = [np.asarray(g, np.float64) for g in grids]
    for out in grids:
        if out.ndim != 4 or out.shape[-1] < 6:
            raise ValueError(f"Expected raw detector outputs (N, grid_h, grid_w, 5 + classes), got "
                             f"{out.shape}" + ("" if strides is not None else
                                               "; packed multi-scale outputs need strides=") + ".")
        if out.shape[0] != grids[0].shape[0] or out.shape[-1] != grids[0].shape[-1]:
            raise ValueError("The scales' outputs disagree on the batch size or the class count.")
    h, w = int(input_shape[0]), int(input_shape[1])
    parts = [_grid_candidates(out, h, w) for out in grids]
    boxes = np.concatenate([b for b, _ in parts], axis=1)
    scores = np.concatenate([s for _, s in parts], axis=1)
    results = []
    for n in range(len(boxes)):
        cell, cls = np.nonzero(scores[n] >= score_threshold)
        b = boxes[n][cell]
        s = scores[n][cell, cls]
        keep = nms(b, s, iou_threshold, classes=cls)[:max_detections]
        results.append(Detections(b[keep].astype(np.float32), s[keep].astype(np.float32),
                                  cls[keep].astype(np.int64)))
    return results


__all__ = ["Detections", "box_iou", "decode", "nms", "split_scales"]
