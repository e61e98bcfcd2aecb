"""Detection supernets and BDetNAS on real multi-digit MNIST canvases: the head's output grid,
the YOLO loss reaching the architecture, mAP scoring of sampled sub-networks, op abandoning on
BNAS's schedule, and a derived binary detector that converts with LCE."""

import numpy as np
import pytest

import tfcompress
from tfcompress import detection
from tfcompress._keras import keras
from tfcompress.nas import ABanditNAS, BDetNAS, BNAS, DARTS, Evolution

from nas_helpers import tiny_space

_DATA = {}


def canvases():
    """Real MNIST digits on 32x32 canvases (1-2 digits of 10-14 px), train and val."""
    if not _DATA:
        kw = dict(canvas_size=32, digits=(1, 2), digit_size=(10, 14))
        _DATA["train"] = detection.multi_mnist(48, split="train", seed=0, **kw)
        _DATA["val"] = detection.multi_mnist(32, split="test", seed=1, **kw)
    return _DATA["train"], _DATA["val"]


def det_space(**kwargs):
    return tiny_space(cells=3, nodes=1, **kwargs)


def test_detection_supernet_and_derived_model_output_the_yolo_grid():
    space = det_space()
    net = space.build((32, 32, 1), 10, head="detection")
    assert space.grid_stride() == 4                      # two reduction cells
    out = net(np.zeros((2, 32, 32, 1), np.float32))
    assert out.shape == (2, 8, 8, 15)
    assert isinstance(net.loss, detection.YoloLoss)
    geno = space.genotype(net)
    derived = space.derive(geno, num_cells=3)
    assert derived.output_shape == (None, 8, 8, 15) and isinstance(derived.loss, detection.YoloLoss)
    with pytest.raises(ValueError, match="head must be one of"):
        space.build((32, 32, 1), 10, head="segmentation")


def test_bdetnas_steps_alpha_on_the_yolo_loss_scores_by_map_and_abandons_ops():
    (x, b, l), (xv, bv, lv) = canvases()
    keras.utils.set_random_seed(0)
    space = det_space()
    net = space.build((32, 32, 1), 10, head="detection")
    y = detection.encode_targets(b, l, input_shape=(32, 32), grid_shape=(8, 8), num_classes=10)
    search = BDetNAS(space, (xv, bv, lv), warmup_epochs=1, samples=2, rounds=1, batch_size=16,
                     eval_size=16, seed=0)
    scores = []
    original = search.score

    def recorded():
        v = original()
        scores.append(v)
        return v

    search.score = recorded
    alpha0 = [v.numpy().copy() for v in net.arch_variables]
    assert search.schedule() == [3, 5]                   # K = 3 alive ops, then 2
    net.fit(x, y, batch_size=16, epochs=6, verbose=0, callbacks=[search])
    # alpha moved (the YOLO loss on the architecture split reached it) ...
    assert search.arch_steps == 5 * 3
    assert any(np.abs(v.numpy() - a).max() > 1e-4 for v, a in zip(net.arch_variables, alpha0))
    # ... every sampled sub-network got an mAP@0.5 in [0, 1] ...
    assert len(scores) == 2 * 5 and all(0.0 <= s <= 1.0 for s in scores)
    # ... which equals the mAP computed by hand for the current (ungated) supernet
    out = net.predict(xv[:16], verbose=0)
    dets = detection.decode(out, input_shape=(32, 32), score_threshold=0.01)
    expected = detection.mean_average_precision(dets, bv[:16], lv[:16], backend="tfcompress").map50
    assert original() == pytest.approx(expected, abs=1e-9)
    # ... and ops were abandoned at the end of epochs 3 and 5 (0-based epoch index)
    assert [e for e, _ in search.removed] == [3, 5]
    assert int(net.alive("normal").sum(1).max()) == 1
    geno = search.genotype()
    assert geno.meta["strategy"] == "BDetNAS"


def test_derived_binary_detector_trains_converts_with_lce_and_is_evaluated():
    (x, b, l), (xv, bv, lv) = canvases()
    keras.utils.set_random_seed(0)
    space = det_space()
    net = space.build((32, 32, 1), 10, head="detection")
    geno = space.genotype(net)
    model = space.derive(geno, num_cells=3, channels=8)
    detection.fit_detector(model, x[:32], b[:32], l[:32], epochs=1, batch_size=16)
    result = tfcompress.convert(model, target="lce")
    assert result.ops.count("LceBconv2d") >= 2
    keras_out = model.predict(xv, verbose=0)
    file_out = detection.raw_outputs(result, xv)
    scale = np.abs(keras_out).max()
    assert np.abs(keras_out - file_out).max() <= 1e-3 * max(scale, 1.0)
    m = detection.evaluate(result, xv, bv, lv)
    assert m.num_images == len(xv)
    # the file's mAP is the Keras detector's (outputs agree to 1e-3 of their scale, so the
    # ranked detections are the same up to near-ties)
    k = detection.evaluate(model, xv, bv, lv)
    assert abs(m.map50 - k.map50) <= 0.02 and abs(m.map50_95 - k.map50_95) <= 0.02, (m, k)


def test_classifier_strategies_refuse_a_detection_supernet():
    _, (xv, bv, lv) = canvases()
    space = det_space()
    net = space.build((32, 32, 1), 10, head="detection")
    xs = np.zeros((4, 32, 32, 1), np.float32)
    for strategy in (BNAS(space, (xs, np.zeros(4, int))), ABanditNAS(space, (xs, np.zeros(4, int))),
                     Evolution(space, xs)):
        with pytest.raises(ValueError, match="head"):
            strategy.set_model(net)
    DARTS(space, (xs, np.zeros((4, 8, 8, 15), np.float32))).set_model(net)   # loss-based: fine
    with pytest.raises(ValueError, match=r"\(images, boxes, labels\)"):
        BDetNAS(space, (xv, bv))
    with pytest.raises(ValueError, match="must have shape"):
        BDetNAS(space, (np.zeros((2, 16, 16, 1)), bv[:2], lv[:2]))
    classifier_space = det_space()
    classifier_net = classifier_space.build((32, 32, 1), 10)
    search = BDetNAS(space, (xv, bv, lv))
    with pytest.raises(ValueError, match="head='detection'"):
        search.set_model(classifier_net)


def test_detection_evaluate_runs_a_supernet_and_checks_its_input_size():
    _, (xv, bv, lv) = canvases()
    space = det_space()
    net = space.build((32, 32, 1), 10, head="detection")
    m = detection.evaluate(net, xv, bv, lv, backend="tfcompress")
    ref = detection.evaluate(net, xv, bv, lv, backend="pycocotools")   # COCO's own code
    assert m.num_images == len(xv)
    assert abs(m.map50 - ref.map50) <= 1e-9 and abs(m.map50_95 - ref.map50_95) <= 1e-9
    with pytest.raises(ValueError, match=r"takes images of shape \(32, 32, 1\)"):
        detection.evaluate(net, np.zeros((1, 64, 64, 1), np.float32), bv[:1], lv[:1])
