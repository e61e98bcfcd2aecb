"""COCO-style mAP on hand-made boxes with hand-computed values, IoU/NMS/decoding, the YOLO
loss against a numpy reference, and the multi-digit MNIST generator on real digits."""

import numpy as np
import pytest

from tfcompress import detection as D
from tfcompress._keras import tf
from tfcompress.detection.data import INK_THRESHOLD

E = np.zeros((0, 4))


def _det(boxes, scores, classes):
    return (np.asarray(boxes, float).reshape(-1, 4), np.asarray(scores, float), np.asarray(classes))


def test_two_gt_one_false_positive_gives_the_101_point_value():
    gt = [np.array([[0, 0, 10, 10], [20, 20, 30, 30]])]
    dets = [_det([[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30]], [0.9, 0.8, 0.7], [0, 0, 0])]
    m = D.mean_average_precision(dets, gt, [np.array([0, 0])])
    # precision 1, 1/2, 2/3 at recall 0.5, 0.5, 1 -> interpolated 1 for recall <= 0.5 (51 points)
    # and 2/3 above (50 points); VOC's 11-point (0.848) and area (0.833) values differ.
    expected = (51 * 1.0 + 50 * 2 / 3) / 101
    assert m.map50 == pytest.approx(expected, abs=1e-9)
    assert m.map50_95 == pytest.approx(expected, abs=1e-9)


def test_iou_0_82_counts_at_seven_of_ten_thresholds():
    gt = [np.array([[0, 0, 10, 10]])]
    dets = [_det([[0, 0, 10, 8.2]], [0.5], [3])]           # IoU 0.82
    m = D.mean_average_precision(dets, gt, [np.array([3])])
    assert m.map50 == pytest.approx(1.0) and m.map75 == pytest.approx(1.0)
    assert m.map50_95 == pytest.approx(0.7)                 # TP at 0.50 ... 0.80, FP at 0.85+


def test_match_goes_to_the_highest_iou_unmatched_box():
    gt = [np.array([[0, 0, 10, 10], [4, 0, 14, 10]])]
    # d1 overlaps g1 with IoU 0.538 and g2 with IoU 0.818: it must take g2, leaving g1 for d2.
    dets = [_det([[3, 0, 13, 10], [0, 0, 10, 10]], [0.9, 0.8], [1, 1])]
    classes, ap = D.average_precision_table(dets, gt, [np.array([1, 1])])
    assert classes == [1]
    assert ap[0, 0] == pytest.approx(1.0)                   # t = 0.50: both true positives
    # t = 0.85: d1 misses (0.818), d2 hits -> precision 1/2 up to recall 1/2: 51 points of 0.5
    assert ap[7, 0] == pytest.approx(51 * 0.5 / 101)


def test_duplicates_and_score_order():
    gt = [np.array([[0, 0, 10, 10]])]
    dup = [_det([[0, 0, 10, 10], [0, 0, 10, 10]], [0.9, 0.8], [0, 0])]
    assert D.mean_average_precision(dup, gt, [[0]]).map50 == pytest.approx(1.0)
    miss_first = [_det([[5, 5, 15, 15], [0, 0, 10, 10]], [0.9, 0.8], [0, 0])]   # IoU 0.14 first
    assert D.mean_average_precision(miss_first, gt, [[0]]).map50 == pytest.approx(0.5)


def test_empty_lists_and_classes_without_ground_truth():
    gt_boxes = [np.array([[0, 0, 10, 10]]), E, np.array([[0, 0, 8, 8]])]
    gt_labels = [np.array([0]), np.array([], int), np.array([1])]
    dets = [
        _det([[0, 0, 10, 10], [30, 30, 40, 40]], [0.9, 0.95], [0, 2]),   # class 2 has no GT
        _det([[1, 1, 5, 5]], [0.3], [0]),                                # FP on an empty image
        _det(E, [], []),                                                 # class 1 never found
    ]
    m = D.mean_average_precision(dets, gt_boxes, gt_labels)
    assert m.ap50_per_class == {0: pytest.approx(1.0), 1: 0.0}           # no entry for class 2
    assert m.map50 == pytest.approx(0.5)
    assert m.num_ground_truth == 2 and m.num_detections == 3
    # a false positive that outranks the true positive halves class 0's AP
    dets[1] = _det([[1, 1, 5, 5]], [0.99], [0])
    assert D.mean_average_precision(dets, gt_boxes, gt_labels).ap50_per_class[0] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="mAP is undefined"):
        D.mean_average_precision([_det([[0, 0, 1, 1]], [0.5], [0])], [E], [[]])
    with pytest.raises(ValueError, match="2 boxes but 1 labels"):
        D.mean_average_precision([_det(E, [], [])], [np.ones((2, 4))], [[0]])


def test_max_detections_per_image_and_class():
    gt = [np.array([[0, 0, 10, 10]])]
    dets = [_det([[50, 50, 60, 60]] * 3 + [[0, 0, 10, 10]], [0.9, 0.8, 0.7, 0.6], [0] * 4)]
    assert D.mean_average_precision(dets, gt, [[0]], max_detections=3).map50 == 0.0
    assert D.mean_average_precision(dets, gt, [[0]], max_detections=4).map50 == pytest.approx(0.25)


def test_iou_and_nms_by_hand():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[5, 0, 15, 10], [0, 0, 10, 10], [20, 20, 21, 21]])
    np.testing.assert_allclose(D.box_iou(a, b), [[50 / 150, 1.0, 0.0]])
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10], [30, 30, 40, 40]])
    scores = np.array([0.6, 0.9, 0.5, 0.4])
    assert D.nms(boxes, scores, 0.5).tolist() == [1, 3]             # IoU(1, 0) = 0.818
    assert D.nms(boxes, scores, 0.5, classes=[0, 1, 0, 0]).tolist() == [1, 0, 3]
    assert D.nms(boxes, scores, 0.9).tolist() == [1, 0, 3]          # 0.818 < 0.9 keeps 0; 2 == 0


def _perfect_outputs(boxes, labels, *, size=32, grid=4, classes=10):
    y = D.encode_targets(boxes, labels, input_shape=(size, size), grid_shape=(grid, grid),
                         num_classes=classes)
    out = np.zeros_like(y)
    off = np.clip(y[..., :2], 1e-6, 1 - 1e-6)
    out[..., :2] = np.log(off / (1 - off))
    out[..., 2:4] = y[..., 2:4]
    out[..., 4] = np.where(y[..., 4] > 0, 20.0, -20.0)
    out[..., 5:] = 20.0 * y[..., 5:]
    return y, out


def test_encode_decode_round_trip_and_perfect_map():
    boxes = [np.array([[2, 3, 12, 17], [18, 18, 30, 26]], np.float32), np.zeros((0, 4), np.float32)]
    labels = [np.array([7, 2]), np.array([], int)]
    y, out = _perfect_outputs(boxes, labels)
    assert y[..., 4].sum() == 2
    assert y[0, 1, 0, 4] == 1 and y[0, 1, 0, 5 + 7] == 1                 # centre (7, 10): cell (1, 0)
    np.testing.assert_allclose(y[0, 1, 0, :4], [7 / 8, 10 / 8 - 1, np.log(10 / 8), np.log(14 / 8)], rtol=1e-6)
    dets = D.decode(out, input_shape=(32, 32), score_threshold=0.5)
    assert len(dets[0]) == 2 and len(dets[1]) == 0
    np.testing.assert_allclose(dets[0].boxes[np.argsort(dets[0].classes)], boxes[0][[1, 0]], atol=1e-3)
    m = D.evaluate(lambda images: out, np.zeros((2, 32, 32, 1), np.float32), boxes, labels)
    assert m.map50_95 == pytest.approx(1.0)
    with pytest.raises(ValueError, match="outside"):
        D.encode_targets([np.array([[0, 0, 4, 4]])], [[10]], input_shape=(32, 32), grid_shape=(4, 4),
                         num_classes=10)


def test_yolo_loss_matches_numpy_reference():
    rng = np.random.default_rng(0)
    boxes = [np.array([[2, 3, 12, 17]], np.float32), np.array([[18, 18, 30, 26]], np.float32)]
    y = D.encode_targets(boxes, [[1], [2]], input_shape=(32, 32), grid_shape=(4, 4), num_classes=3)
    p = rng.normal(size=y.shape).astype(np.float32)
    loss = D.YoloLoss(box_weight=2.0, obj_weight=0.5, cls_weight=3.0)
    sig = 1 / (1 + np.exp(-p))
    pos = y[..., 4]
    sq = ((sig[..., :2] - y[..., :2]) ** 2).sum(-1) + ((p[..., 2:4] - y[..., 2:4]) ** 2).sum(-1)
    box = (pos * sq).sum((1, 2))
    bce = -(pos * np.log(sig[..., 4]) + (1 - pos) * np.log(1 - sig[..., 4])).sum((1, 2))
    logp = p[..., 5:] - np.log(np.exp(p[..., 5:]).sum(-1, keepdims=True))
    ce = (pos * -(y[..., 5:] * logp).sum(-1)).sum((1, 2))
    expected = (2.0 * box + 0.5 * bce + 3.0 * ce).mean()
    assert float(loss(tf.constant(y), tf.constant(p))) == pytest.approx(expected, rel=1e-5)


def test_multi_mnist_boxes_are_tight_and_disjoint():
    images, boxes, labels = D.multi_mnist(40, split="test", canvas_size=48, digits=(0, 3),
                                          digit_size=(10, 20), seed=5)
    assert images.shape == (40, 48, 48, 1) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    counts = [len(b) for b in boxes]
    assert min(counts) == 0 and max(counts) == 3 and sum(counts) > 40
    for img, b, l in zip(images[..., 0], boxes, labels):
        assert len(b) == len(l) and set(l.tolist()) <= set(range(10))
        ink = img > INK_THRESHOLD
        inside = np.zeros_like(ink)
        for x1, y1, x2, y2 in b.astype(int):
            inside[y1:y2, x1:x2] = True
            patch = ink[y1:y2, x1:x2]                       # tight: ink on all four borders
            assert patch[0].any() and patch[-1].any() and patch[:, 0].any() and patch[:, -1].any()
        assert not (ink & ~inside).any()                    # no ink outside the boxes
        if len(b) > 1:
            iou = D.box_iou(b, b)
            assert np.allclose(iou[~np.eye(len(b), dtype=bool)], 0.0)
    again = D.multi_mnist(40, split="test", canvas_size=48, digits=(0, 3), digit_size=(10, 20), seed=5)
    np.testing.assert_array_equal(again[0], images)
    with pytest.raises(ValueError, match="split"):
        D.multi_mnist(2, split="val")


def _random_case(rng, n_images=40, n_classes=4):
    gt_boxes, gt_labels, dets = [], [], []
    for _ in range(n_images):
        k = int(rng.integers(0, 5))
        xy = rng.uniform(0, 50, (k, 2))
        wh = rng.uniform(4, 20, (k, 2))
        g = np.concatenate([xy, xy + wh], 1)
        gl = rng.integers(0, n_classes, k)
        # noisy copies of the ground truth (some with the wrong class), plus clutter
        noisy = g + rng.normal(0, 1.0, g.shape)
        noisy[:, 2:] = np.maximum(noisy[:, 2:], noisy[:, :2] + 0.5)
        cl = np.where(rng.random(k) < 0.2, rng.integers(0, n_classes, k), gl)
        m = int(rng.integers(0, 4))
        cxy = rng.uniform(0, 60, (m, 2))
        clutter = np.concatenate([cxy, cxy + rng.uniform(3, 15, (m, 2))], 1)
        boxes = np.concatenate([noisy, clutter]).reshape(-1, 4)
        classes = np.concatenate([cl, rng.integers(0, n_classes, m)]).astype(np.int64)
        scores = np.round(np.concatenate([rng.uniform(0.3, 1, k), rng.uniform(0, 0.7, m)]), 2)  # ties
        gt_boxes.append(g), gt_labels.append(gl), dets.append(_det(boxes, scores, classes))
    return dets, gt_boxes, gt_labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_our_map_equals_pycocotools_cocoeval(seed):
    pytest.importorskip("pycocotools")
    dets, gt_boxes, gt_labels = _random_case(np.random.default_rng(seed))
    ours = D.mean_average_precision(dets, gt_boxes, gt_labels, backend="tfcompress")
    coco = D.mean_average_precision(dets, gt_boxes, gt_labels, backend="pycocotools")
    assert 0.05 < coco.map50_95 < 0.95          # a case that exercises partial matches
    assert ours.map50 == pytest.approx(coco.map50, abs=1e-9)
    assert ours.map50_95 == pytest.approx(coco.map50_95, abs=1e-9)
    assert ours.map75 == pytest.approx(coco.map75, abs=1e-9)
    assert ours.ap_per_class == pytest.approx(coco.ap_per_class, abs=1e-9)
    # and with a per-image cap that cuts detections
    a = D.mean_average_precision(dets, gt_boxes, gt_labels, backend="tfcompress", max_detections=1)
    b = D.mean_average_precision(dets, gt_boxes, gt_labels, backend="pycocotools", max_detections=1)
    assert a.map50_95 == pytest.approx(b.map50_95, abs=1e-9)


@pytest.mark.parametrize("backend", ["pycocotools", "tfcompress"])
def test_both_backends_give_the_hand_values(backend):
    if backend == "pycocotools":
        pytest.importorskip("pycocotools")
    gt = [np.array([[0, 0, 10, 10], [20, 20, 30, 30]]), E]
    dets = [_det([[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30]], [0.9, 0.8, 0.7], [0, 0, 0]),
            _det(E, [], [])]
    m = D.mean_average_precision(dets, gt, [np.array([0, 0]), []], backend=backend)
    assert m.map50 == pytest.approx((51 * 1.0 + 50 * 2 / 3) / 101, abs=1e-9)
    none = D.mean_average_precision([_det(E, [], []), _det(E, [], [])], gt, [[0, 0], []],
                                    backend=backend)
    assert none.map50 == 0.0 and none.map50_95 == 0.0


def test_unknown_map_backend_is_refused():
    with pytest.raises(ValueError, match="backend"):
        D.mean_average_precision([_det(E, [], [])], [np.ones((1, 4))], [[0]], backend="voc")
