"""Object detection: the TinyYOLO detector's data, training loss, decoding, COCO-style mAP and
Q-YOLO post-training quantization.

>>> import tfcompress
>>> from tfcompress import detection, models                            # doctest: +SKIP
>>> images, boxes, labels = detection.multi_mnist(2000, split="train")  # doctest: +SKIP
>>> det = models.TinyYOLO(input_shape=(64, 64, 1), num_classes=10)      # doctest: +SKIP
>>> detection.fit_detector(det, images, boxes, labels, epochs=8)       # doctest: +SKIP
>>> qdet = detection.ptq(det, images[:300], activation_range="unilateral_histogram")  # doctest: +SKIP
>>> print(detection.evaluate(qdet, images, boxes, labels))              # doctest: +SKIP
"""

from tfcompress.detection.boxes import Detections, box_iou, decode, nms, split_scales
from tfcompress.detection.data import multi_mnist
from tfcompress.detection.evaluate import detect, evaluate, raw_outputs
from tfcompress.detection.loss import YoloLoss, encode_scales, encode_targets
from tfcompress.detection.metrics import (
    COCO_IOU_THRESHOLDS, DetectionMetrics, average_precision_table, mean_average_precision,
)
from tfcompress.detection.qyolo import METHODS, percentile_upper, ptq, range_from_values, uh_search
from tfcompress.detection.train import fit_detector
from tfcompress.models.yolo import TinyYOLO

__all__ = [
    "COCO_IOU_THRESHOLDS", "DetectionMetrics", "Detections", "METHODS", "TinyYOLO", "YoloLoss",
    "average_precision_table", "box_iou", "decode", "detect", "encode_scales", "encode_targets", "evaluate",
    "fit_detector",
    "mean_average_precision", "multi_mnist", "nms", "percentile_upper", "ptq",
    "range_from_values", "raw_outputs", "split_scales", "uh_search",
]
