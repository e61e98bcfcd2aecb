"""TinyYOLO: the float detector and its binarized backbones (Bi-Real, DA-BNN, ASDA), trained a
step on real multi-digit MNIST and converted with LCE, checked in LCE's interpreter."""

import numpy as np
import pytest

import tfcompress
from tfcompress import detection as D
from tfcompress._keras import keras
from tfcompress.models import TinyYOLO


def test_shapes_and_errors():
    model = TinyYOLO(input_shape=(64, 64, 1), num_classes=10, width=4)
    assert model.output_shape == (None, 8, 8, 15)
    with pytest.raises(ValueError, match="multiples of 8"):
        TinyYOLO(input_shape=(60, 64, 1))
    with pytest.raises(ValueError, match="backbone"):
        TinyYOLO(backbone="xnor")


@pytest.mark.parametrize("backbone", ["bireal", "dabnn", "asda"])
def test_binary_backbone_trains_and_converts_with_lce(backbone, tmp_path):
    images, boxes, labels = D.multi_mnist(16, split="train", canvas_size=32, digit_size=(8, 16),
                                          seed=2)
    model = TinyYOLO(input_shape=(32, 32, 1), num_classes=10, width=4, backbone=backbone)
    y = D.encode_targets(boxes, labels, input_shape=(32, 32), grid_shape=(4, 4), num_classes=10)
    model.compile(keras.optimizers.Adam(1e-2), D.YoloLoss())
    hist = model.fit(images, y, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(hist.history["loss"][-1])
    model.save(tmp_path / "d.keras")
    again = keras.models.load_model(tmp_path / "d.keras")
    np.testing.assert_allclose(again.predict(images, verbose=0), model.predict(images, verbose=0),
                               atol=1e-5)
    res = tfcompress.convert(model, target="lce")
    assert res.info.op_counts.get("LceBconv2d") == 6, res.info.op_counts
    raw = D.raw_outputs(res, images)
    keras_raw = model.predict(images, verbose=0)
    # binary arithmetic is exact; float parts differ by summation order
    assert np.abs(raw - keras_raw).max() <= 1e-3
    lce_map = D.evaluate(res, images, boxes, labels).map50_95
    assert lce_map == pytest.approx(D.evaluate(model, images, boxes, labels).map50_95, abs=0.01)


def test_evaluate_refuses_images_the_detector_cannot_take():
    model = TinyYOLO(input_shape=(64, 64, 1), num_classes=10, width=4)
    boxes, labels = [np.array([[1.0, 1.0, 9.0, 9.0]])], [np.array([3])]
    with pytest.raises(ValueError, match=r"takes images of shape \(64, 64, 1\).*\(32, 32, 1\)"):
        D.evaluate(model, np.zeros((1, 32, 32, 1), np.float32), boxes, labels)
    with pytest.raises(ValueError, match="NaN"):
        D.evaluate(model, np.full((1, 64, 64, 1), np.nan, np.float32), boxes, labels)
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        D.evaluate(model, np.zeros((64, 64, 1), np.float32), boxes, labels)
    with pytest.raises(ValueError, match="1 images but 2 box lists"):
        D.evaluate(model, np.zeros((1, 64, 64, 1), np.float32), boxes * 2, labels * 2)
    # an image without objects is documented handling: its detections count as false positives
    m = D.evaluate(model, np.zeros((2, 64, 64, 1), np.float32), boxes + [np.zeros((0, 4))],
                   labels + [np.zeros(0, int)])
    assert m.num_images == 2 and m.num_ground_truth == 1
