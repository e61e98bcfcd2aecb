"""BDetNAS with a two-scale detection head: the packed output's layout, boxes decoded per scale
against hand-computed ones, per-scale target assignment, and a search, derivation and LCE
conversion on real multi-digit MNIST canvases."""

import math

import numpy as np
import pytest

import tfcompress
from tfcompress import detection
from tfcompress._keras import keras
from tfcompress.nas import BDetNAS

from nas_helpers import tiny_space


def _logit(p):
    return math.log(p / (1 - p))


def _raw(n_cells, classes=2):
    """Packed raw outputs with every cell's objectness at -20 (score ~2e-9)."""
    out = np.zeros((1, n_cells, 5 + classes), np.float32)
    out[..., 4] = -20.0
    return out


def test_two_scale_boxes_decode_per_scale_to_hand_computed_boxes():
    # 16x16 input, strides (4, 8): a 4x4 fine grid (cells 0..15) then a 2x2 coarse grid (16..19)
    out = _raw(16 + 4)
    # fine cell row 1, col 2 (index 1 * 4 + 2): centre ((2 + 0.5) 4, (1 + 0.5) 4) = (10, 6),
    # size (e^ln2 * 4, e^0 * 4) = (8, 4) -> [6, 4, 14, 8], class 0
    out[0, 6, :7] = [0.0, 0.0, math.log(2), 0.0, 20.0, 5.0, -5.0]
    # coarse cell row 1, col 0 (index 16 + 1 * 2 + 0): centre ((0 + 0.75) 8, (1 + 0.5) 8) =
    # (6, 12), size (8, 16) -> [2, 4, 10, 20] clipped to the image -> [2, 4, 10, 16], class 1
    out[0, 18, :7] = [_logit(0.75), 0.0, 0.0, math.log(2), 20.0, -5.0, 5.0]
    dets = detection.decode(out, input_shape=(16, 16), strides=(4, 8), score_threshold=0.5)[0]
    order = np.argsort(dets.classes)
    np.testing.assert_allclose(dets.boxes[order], [[6, 4, 14, 8], [2, 4, 10, 16]], atol=1e-4)
    np.testing.assert_array_equal(dets.classes[order], [0, 1])
    score = 1 / (1 + math.exp(-20)) / (1 + math.exp(-10))      # sigmoid(obj) * softmax
    np.testing.assert_allclose(dets.scores, [score, score], rtol=1e-5)
    # the same as decoding the two grids as a list
    fine, coarse = detection.split_scales(out, input_shape=(16, 16), strides=(4, 8))
    assert fine.shape == (1, 4, 4, 7) and coarse.shape == (1, 2, 2, 7)
    again = detection.decode([fine, coarse], input_shape=(16, 16), score_threshold=0.5)[0]
    np.testing.assert_allclose(again.boxes, dets.boxes)
    with pytest.raises(ValueError, match=r"\(N, 20, 5 \+ classes\)"):
        detection.decode(out[:, :19], input_shape=(16, 16), strides=(4, 8))
    with pytest.raises(ValueError, match="need strides="):
        detection.decode(out, input_shape=(16, 16))


def test_encode_scales_assigns_boxes_by_size_and_round_trips_through_decode():
    boxes = [np.array([[4, 4, 8, 8], [0, 2, 12, 14]], np.float32)]      # 4 px and 12 px
    labels = [np.array([1, 0])]
    y = detection.encode_scales(boxes, labels, input_shape=(16, 16), strides=(4, 8),
                                num_classes=2, size_limits=(6,))
    assert y.shape == (1, 20, 7)
    assert np.flatnonzero(y[0, :, 4]).tolist() == [5, 18]
    # small box -> fine cell (1, 1) = index 5: offsets (6/4 - 1, 6/4 - 1), log(4 / 4)
    np.testing.assert_allclose(y[0, 5], [0.5, 0.5, 0.0, 0.0, 1, 0, 1])
    # large box -> coarse cell (row 1, col 0) = index 16 + 2: offsets (6/8, 8/8 - 1), log(12/8)
    np.testing.assert_allclose(y[0, 18], [0.75, 0.0, math.log(1.5), math.log(1.5), 1, 1, 0],
                               rtol=1e-6)
    # default limits: 8 * the fine stride = 32 px, so both boxes go to the fine grid
    y_default = detection.encode_scales(boxes, labels, input_shape=(16, 16), strides=(4, 8),
                                        num_classes=2)
    assert np.flatnonzero(y_default[0, :, 4]).tolist() == [5, 9]
    # targets -> raw logits -> decode gives the boxes back, each from its own scale
    raw = y.copy()                                   # log sizes stay: decode takes exp
    xy = np.clip(y[..., :2], 1e-6, 1 - 1e-6)
    raw[..., :2] = np.log(xy / (1 - xy))             # decode takes the sigmoid of the offsets
    raw[..., 4] = np.where(y[..., 4] > 0, 20.0, -20.0)
    raw[..., 5:] = 10.0 * y[..., 5:]
    dets = detection.decode(raw, input_shape=(16, 16), strides=(4, 8), score_threshold=0.5)[0]
    got = sorted(zip(dets.boxes.round(3).tolist(), dets.classes.tolist()))
    assert got == sorted(zip(boxes[0].tolist(), labels[0].tolist()))
    with pytest.raises(ValueError, match="increasing"):
        detection.encode_scales(boxes, labels, input_shape=(16, 16), strides=(8, 4), num_classes=2)
    # the YOLO loss of the packed output is the sum of the two grids' losses
    pred = np.random.default_rng(0).normal(size=y.shape).astype(np.float32)
    loss = detection.YoloLoss(reduction="none")
    fine_t, coarse_t = detection.split_scales(y, input_shape=(16, 16), strides=(4, 8))
    fine_p, coarse_p = detection.split_scales(pred, input_shape=(16, 16), strides=(4, 8))
    np.testing.assert_allclose(loss(y, pred).numpy(),
                               loss(fine_t, fine_p).numpy() + loss(coarse_t, coarse_p).numpy(),
                               rtol=1e-5)


_DATA = {}


def _canvases():
    if not _DATA:
        kw = dict(canvas_size=32, digits=(1, 2), digit_size=(6, 16))
        _DATA["train"] = detection.multi_mnist(48, split="train", seed=0, **kw)
        _DATA["val"] = detection.multi_mnist(32, split="test", seed=1, **kw)
    return _DATA["train"], _DATA["val"]


def test_two_scale_supernet_search_derive_and_lce():
    (x, b, l), (xv, bv, lv) = _canvases()
    keras.utils.set_random_seed(0)
    space = tiny_space(cells=3, nodes=1)
    net = space.build((32, 32, 1), 10, head="detection2")
    assert space.grid_strides() == (2, 4)
    out = net(xv[:2], training=False)
    assert out.shape == (2, 16 * 16 + 8 * 8, 15)
    y = detection.encode_scales(b, l, input_shape=(32, 32), strides=(2, 4), num_classes=10,
                                size_limits=(11,))
    assert y[:, :256, 4].sum() > 0 and y[:, 256:, 4].sum() > 0      # both scales get boxes
    search = BDetNAS(space, (xv, bv, lv), warmup_epochs=1, samples=1, rounds=1, batch_size=16,
                     eval_size=16, seed=0)
    net.fit(x[:32], y[:32], batch_size=16, epochs=2, verbose=0, callbacks=[search])
    assert search.arch_steps == 2 and int(search.n["normal"].sum()) == space.num_edges
    # the sub-network score is the mAP of boxes decoded per scale
    dets = detection.decode(net.predict(xv[:16], verbose=0), input_shape=(32, 32),
                            strides=(2, 4), score_threshold=0.01)
    expected = detection.mean_average_precision(dets, bv[:16], lv[:16], backend="tfcompress").map50
    assert search.score() == pytest.approx(expected, abs=1e-9)

    # derived detector: the packed output is the two heads' grids, fine first
    model = space.derive(search.genotype(), num_cells=3, channels=8)
    assert model.output_shape == (None, 320, 15)
    grids = keras.Model(model.input, [model.get_layer("head_s1_out").output,
                                      model.get_layer("head_s2_out").output])
    g1, g2 = grids.predict(xv[:4], verbose=0)
    assert g1.shape == (4, 16, 16, 15) and g2.shape == (4, 8, 8, 15)
    packed = model.predict(xv[:4], verbose=0)
    np.testing.assert_allclose(packed, np.concatenate([g1.reshape(4, -1, 15), g2.reshape(4, -1, 15)], 1),
                               rtol=1e-6, atol=1e-6)
    result = tfcompress.convert(model, target="lce")
    assert result.ops.count("LceBconv2d") >= 2
    file_out = detection.raw_outputs(result, xv)
    keras_out = model.predict(xv, verbose=0)
    assert np.abs(keras_out - file_out).max() <= 1e-3 * max(np.abs(keras_out).max(), 1.0)
    m = detection.evaluate(result, xv, bv, lv, strides=space.grid_strides())
    k = detection.evaluate(model, xv, bv, lv, strides=space.grid_strides())
    assert m.num_images == len(xv)
    assert abs(m.map50 - k.map50) <= 0.02 and abs(m.map50_95 - k.map50_95) <= 0.02, (m, k)
    with pytest.raises(ValueError, match="targets for a 'detection2' head"):
        search.set_model(space.build((32, 32, 1), 10, head="detection"))
