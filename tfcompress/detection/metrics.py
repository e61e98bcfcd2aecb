"""COCO-style mean average precision: pycocotools' ``COCOeval`` when installed (the default),
and an implementation of the same protocol written from the COCO evaluation protocol
(``pycocotools.cocoeval``: ``evaluateImg`` matching and ``accumulate``'s 101-point
interpolation), for ``[x1, y1, x2, y2]`` boxes with no crowd regions and one area range (all).

For each class and IoU threshold ``t`` (0.50, 0.55, ..., 0.95):

1. per image, detections of the class sorted by score (stable), at most ``max_detections``;
   each, in that order, is matched to the *unmatched* ground-truth box of the class with the
   highest IoU, provided that IoU is ``>= t``; otherwise it is a false positive;
2. all images' detections are merged and sorted by score (stable, image order breaks ties);
   cumulative TP/FP give recall ``TP / n_gt`` and precision ``TP / (TP + FP)``;
3. precision is made non-increasing from the right, then read at the 101 recall points
   ``0, 0.01, ..., 1`` (the first detection whose recall reaches the point; 0 if none does);
   AP is their mean.

mAP@0.5 averages AP over classes at ``t = 0.5``; mAP@0.5:0.95 averages over classes and the
ten thresholds.

Empty box lists: an image may have no ground truth (its detections are false positives) or no
detections (its ground truth counts as missed). A class with ground truth but no detections has
AP 0. A class with no ground truth in any image is left out of the mean (as COCO does), and its
detections are ignored. If no image has any ground truth, mAP is undefined and
:func:`mean_average_precision` raises ``ValueError``.
"""

from dataclasses import asdict, dataclass, field

import numpy as np

from tfcompress.detection.boxes import Detections, box_iou

COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


@dataclass
class DetectionMetrics:
    """mAP figures of one evaluation (APs as fractions in [0, 1])."""

    map50: float
    map50_95: float
    map75: float
    ap50_per_class: dict = field(default_factory=dict)
    ap_per_class: dict = field(default_factory=dict)
    num_images: int = 0
    num_ground_truth: int = 0
    num_detections: int = 0

    def to_dict(self):
        return asdict(self)

    def __str__(self):
        return (f"mAP@0.5 {100 * self.map50:.2f}, mAP@0.5:0.95 {100 * self.map50_95:.2f}, "
                f"mAP@0.75 {100 * self.map75:.2f} ({self.num_images} images, "
                f"{self.num_ground_truth} ground-truth boxes, {self.num_detections} detections)")


def _as_detections(d, i):
    if isinstance(d, Detections):
        return d
    try:
        boxes, scores, classes = d
    except (TypeError, ValueError):
        raise ValueError(f"detections[{i}] must be a Detections or a (boxes, scores, classes) "
                         f"tuple, got {type(d).__name__}.") from None
    return Detections(np.asarray(boxes, np.float64).reshape(-1, 4),
                      np.asarray(scores, np.float64).reshape(-1),
                      np.asarray(classes).reshape(-1).astype(np.int64))


def _ground_truth(boxes, labels):
    if len(boxes) != len(labels):
        raise ValueError(f"{len(boxes)} box lists but {len(labels)} label lists.")
    out = []
    for i, (b, l) in enumerate(zip(boxes, labels)):
        b = np.zeros((0, 4)) if b is None else np.asarray(b, np.float64)
        l = np.zeros((0,), np.int64) if l is None else np.asarray(l).reshape(-1)
        if b.size == 0:
            b = b.reshape(0, 4)
        if b.ndim != 2 or b.shape[1] != 4:
            raise ValueError(f"boxes[{i}] must have shape (k, 4) [x1, y1, x2, y2], got {b.shape}.")
        if len(b) != len(l):
            raise ValueError(f"Image {i} has {len(b)} boxes but {len(l)} labels.")
        if np.any(b[:, 2] < b[:, 0]) or np.any(b[:, 3] < b[:, 1]):
            raise ValueError(f"boxes[{i}] has a box with x2 < x1 or y2 < y1; boxes are "
                             "[x1, y1, x2, y2].")
        out.append((b, l.astype(np.int64)))
    return out


def _match(det_boxes, gt_boxes, thresholds):
    """``(T, D)`` bool: detection d (in score order) is a true positive at threshold t."""
    tp = np.zeros((len(thresholds), len(det_boxes)), bool)
    if len(det_boxes) == 0 or len(gt_boxes) == 0:
        return tp
    ious = box_iou(det_boxes, gt_boxes)
    for ti, t in enumerate(thresholds):
        taken = np.zeros(len(gt_boxes), bool)
        for d in range(len(det_boxes)):
            best, m = min(t, 1 - 1e-10), -1
            for g in range(len(gt_boxes)):
                if taken[g] or ious[d, g] < best:
                    continue
                best, m = ious[d, g], g
            if m >= 0:
                taken[m] = True
                tp[ti, d] = True
    return tp


def _interpolated_ap(tp_sorted, num_gt):
    """101-point interpolated AP of score-sorted TP flags (COCO ``accumulate``)."""
    if len(tp_sorted) == 0:
        return 0.0
    tp = np.cumsum(tp_sorted, dtype=np.float64)
    fp = np.cumsum(~tp_sorted, dtype=np.float64)
    recall = tp / num_gt
    precision = tp / (tp + fp + np.spacing(1))
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, RECALL_POINTS, side="left")
    q = np.where(idx < len(precision), precision[np.minimum(idx, len(precision) - 1)], 0.0)
    return float(q.mean())


def average_precision_table(detections, gt_boxes, gt_labels, *, iou_thresholds=COCO_IOU_THRESHOLDS,
                            max_detections=100):
    """``(classes, AP)``: the classes with ground truth and AP of shape (thresholds, classes)."""
    dets = [_as_detections(d, i) for i, d in enumerate(detections)]
    gts = _ground_truth(gt_boxes, gt_labels)
    if len(dets) != len(gts):
        raise ValueError(f"{len(dets)} images of detections but {len(gts)} of ground truth.")
    thresholds = np.asarray(iou_thresholds, np.float64)
    classes = sorted({int(c) for _, l in gts for c in l})
    if not classes:
        raise ValueError("No image has a ground-truth box, so mAP is undefined (COCO reports -1); "
                         "evaluate on images with objects.")
    ap = np.zeros((len(thresholds), len(classes)))
    for k, c in enumerate(classes):
        scores, flags, num_gt = [], [], 0
        for d, (gb, gl) in zip(dets, gts):
            g = gb[gl == c]
            num_gt += len(g)
            sel = np.nonzero(d.classes == c)[0]
            order = sel[np.argsort(-d.scores[sel], kind="mergesort")][:max_detections]
            scores.append(d.scores[order])
            flags.append(_match(d.boxes[order], g, thresholds))
        s = np.concatenate(scores)
        f = np.concatenate(flags, axis=1)
        order = np.argsort(-s, kind="mergesort")
        for ti in range(len(thresholds)):
            ap[ti, k] = _interpolated_ap(f[ti, order], num_gt)
    return classes, ap


BACKENDS = ("auto", "pycocotools", "tfcompress")


def mean_average_precision(detections, gt_boxes, gt_labels, *, max_detections=100, backend="auto"):
    """:class:`DetectionMetrics` (mAP@0.5, mAP@0.5:0.95, mAP@0.75, per-class APs).

    Args:
        detections: per image, a :class:`~tfcompress.detection.Detections` or a
            ``(boxes (k, 4), scores (k,), classes (k,))`` tuple.
        gt_boxes, gt_labels: per image, ``(m, 4)`` ``[x1, y1, x2, y2]`` boxes and ``(m,)``
            integer labels (empty arrays, ``[]`` or ``None`` for an image without objects).
        max_detections: per image and class, the top-scoring detections kept (COCO: 100).
        backend: ``"pycocotools"`` (COCO's own ``COCOeval``, bbox, one area range "all",
            ``maxDets=[max_detections]``), ``"tfcompress"`` (this module's implementation of the
            same protocol; a test checks both agree to 1e-9), or ``"auto"`` (pycocotools when it
            is installed, which ``pip install tfcompress`` does).

    Raises:
        ValueError: mismatched lengths or shapes, no ground truth at all, unknown backend.
        ImportError: ``backend="pycocotools"`` without pycocotools installed.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}.")
    if backend == "auto":
        try:
            import pycocotools.cocoeval  # noqa: F401
            backend = "pycocotools"
        except ImportError:
            backend = "tfcompress"
    if backend == "pycocotools":
        classes, ap = _coco_ap_table(detections, gt_boxes, gt_labels, max_detections)
    else:
        classes, ap = average_precision_table(detections, gt_boxes, gt_labels,
                                              max_detections=max_detections)
    dets = [_as_detections(d, i) for i, d in enumerate(detections)]
    t75 = int(np.argmin(np.abs(COCO_IOU_THRESHOLDS - 0.75)))
    return DetectionMetrics(
        map50=float(ap[0].mean()), map50_95=float(ap.mean()), map75=float(ap[t75].mean()),
        ap50_per_class={c: float(ap[0, k]) for k, c in enumerate(classes)},
        ap_per_class={c: float(ap[:, k].mean()) for k, c in enumerate(classes)},
        num_images=len(dets), num_ground_truth=int(sum(len(l) for l in gt_labels if l is not None)),
        num_detections=int(sum(len(d) for d in dets)))


def _coco_ap_table(detections, gt_boxes, gt_labels, max_detections):
    """``(classes, AP (thresholds, classes))`` from pycocotools' ``COCOeval`` (bbox)."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    dets = [_as_detections(d, i) for i, d in enumerate(detections)]
    gts = _ground_truth(gt_boxes, gt_labels)
    if len(dets) != len(gts):
        raise ValueError(f"{len(dets)} images of detections but {len(gts)} of ground truth.")
    classes = sorted({int(c) for _, l in gts for c in l})
    if not classes:
        raise ValueError("No image has a ground-truth box, so mAP is undefined (COCO reports -1); "
                         "evaluate on images with objects.")
    images, annotations, results = [], [], []
    for i, ((gb, gl), d) in enumerate(zip(gts, dets)):
        images.append({"id": i})
        for b, c in zip(gb, gl):
            w, h = float(b[2] - b[0]), float(b[3] - b[1])
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": int(c),
                                "bbox": [float(b[0]), float(b[1]), w, h], "area": w * h,
                                "iscrowd": 0})
        for b, s, c in zip(d.boxes, d.scores, d.classes):
            if int(c) in classes:      # COCO ignores detections of classes it does not know
                results.append({"image_id": i, "category_id": int(c), "score": float(s),
                                "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]),
                                         float(b[3] - b[1])]})
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": images, "annotations": annotations,
                        "categories": [{"id": c} for c in classes]}
        coco.createIndex()
        found = coco.loadRes(results) if results else COCO()
        if not results:
            found.dataset = {"images": images, "annotations": [], "categories": coco.dataset["categories"]}
            found.createIndex()
        ev = COCOeval(coco, found, "bbox")
        ev.params.iouThrs = COCO_IOU_THRESHOLDS.copy()
        ev.params.areaRng, ev.params.areaRngLbl = [[0.0, 1e10]], ["all"]
        ev.params.maxDets = [int(max_detections)]
        ev.evaluate()
        ev.accumulate()
    precision = ev.eval["precision"][:, :, :, 0, 0]         # (T, R, K)
    precision = np.where(precision < 0, 0.0, precision)     # a class without detections: AP 0
    return classes, precision.mean(axis=1)


__all__ = ["BACKENDS", "COCO_IOU_THRESHOLDS", "DetectionMetrics", "RECALL_POINTS", "average_precision_table",
           "mean_average_precision"]
