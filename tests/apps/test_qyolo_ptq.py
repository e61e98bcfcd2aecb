"""Q-YOLO: the unilateral-histogram range search on constructed distributions (an exactly
known optimum, and the card's reference code), and the int8 export checked in ai-edge-litert."""

import numpy as np
import pytest

import tfcompress
from tfcompress import detection as D
from tfcompress.models import TinyYOLO


def _card_uh_range(x, bits=8, bins=2048, start=128):
    """Method card 6.4's reference routine, verbatim."""
    lo = x.min(); pos = x[x >= 0]  # noqa: E702
    hist, edges = np.histogram(pos, bins=bins, range=(0.0, pos.max()))
    c = 0.5 * (edges[1:] + edges[:-1]); best = (np.inf, c[-1])  # noqa: E702
    for u in c[start:]:
        s = (u - lo) / (2**bits - 1)
        q = np.clip(np.round((c - lo) / s), 0, 2**bits - 1) * s + lo
        best = min(best, (np.sum(hist * (q - c) ** 2), u))
    return lo, best[1]


def test_uh_picks_the_bin_whose_grid_holds_every_mass_point():
    # Bin width w, l = 0. For the candidate u = c_382 = 382.5 w the 8-bit step is 1.5 w, so the
    # centres c_1 = 1.5 w (level 1) and c_382 = 382.5 w (level 255) are quantized exactly: MSE 0.
    # Below 382, c_382 is clipped; above, c_1 = 765 w / (2k + 1) levels is not a whole level.
    w = 0.01
    edges = np.arange(2049) * w
    hist = np.zeros(2048)
    hist[1], hist[382] = 1000, 10
    hist[2047] = 0
    u, k = D.uh_search(hist, edges, 0.0, bits=8, start_bin=128)
    assert k == 382 and u == pytest.approx(382.5 * w)
    # with a negative lower limit the same reasoning needs l on the grid: none here, so the
    # search must still return a candidate at or above the bin holding the last mass
    u2, k2 = D.uh_search(hist, edges, -0.3, bits=8, start_bin=128)
    assert k2 >= 382


def test_uh_equals_the_card_reference_on_a_silu_like_distribution():
    rng = np.random.default_rng(0)
    pre = np.concatenate([rng.normal(-1.0, 1.0, 100000), rng.exponential(6.0, 3000), [60.0, 75.0]])
    x = pre / (1 + np.exp(-pre))             # SiLU: spike in (-0.28, 0), long tail, 2 outliers
    for bits in (8, 4):
        lo, hi = D.range_from_values(x, "unilateral_histogram", bits=bits)
        ref_lo, ref_hi = _card_uh_range(x, bits=bits)
        assert lo == ref_lo == x.min() and hi == pytest.approx(ref_hi, rel=1e-12)
        assert -0.2785 < lo < 0
    # 8-bit steps are fine enough to keep the outliers (73.5 of 75); the 4-bit step is 17x
    # coarser, so MSE prefers clipping the tail (Q-YOLO's gain is largest at 4 bits)
    assert D.range_from_values(x, bits=8)[1] > 70 and D.range_from_values(x, bits=4)[1] < 40
    assert D.range_from_values(x, "minmax") == (x.min(), x.max())
    _, p = D.range_from_values(x, "percentile", percentile=99.0)
    pos = x[x >= 0]
    assert p == pytest.approx(np.percentile(pos, 99.0), abs=pos.max() / 2048 + 1e-12)


def test_uh_argument_errors():
    with pytest.raises(ValueError, match="start_bin"):
        D.uh_search(np.ones(10), np.arange(11.0), 0.0, start_bin=10)
    with pytest.raises(ValueError, match="activation_range must be one of"):
        D.ptq(TinyYOLO(input_shape=(16, 16, 1), width=2), np.zeros((2, 16, 16, 1)),
              activation_range="entropy")
    with pytest.raises(ValueError, match="8-bit activations only"):
        D.ptq(TinyYOLO(input_shape=(16, 16, 1), width=2), np.zeros((2, 16, 16, 1)), bits=4)


@pytest.fixture(scope="module")
def small_detector():
    from tfcompress._keras import keras

    keras.utils.set_random_seed(0)
    images, boxes, labels = D.multi_mnist(48, split="train", canvas_size=32, digit_size=(8, 16),
                                          digits=(1, 2), seed=1)
    model = TinyYOLO(input_shape=(32, 32, 1), num_classes=10, width=4)
    y = D.encode_targets(boxes, labels, input_shape=(32, 32), grid_shape=(4, 4), num_classes=10)
    model.compile(keras.optimizers.Adam(1e-2), D.YoloLoss())
    model.fit(images, y, batch_size=16, epochs=1, verbose=0)     # non-trivial BN statistics
    return model, images, boxes, labels


def test_minmax_ptq_reproduces_the_tflite_converter(small_detector):
    model, images, boxes, labels = small_detector
    ours = D.ptq(model, images[:32], activation_range="minmax")
    ref = tfcompress.convert(model, target="int8", representative_data=images[:32])
    assert ours.info.op_counts == ref.info.op_counts
    np.testing.assert_array_equal(D.raw_outputs(ours, images[32:]), D.raw_outputs(ref, images[32:]))


def test_uh_ranges_are_the_ones_in_the_int8_file(small_detector):
    from ai_edge_litert.interpreter import Interpreter

    model, images, boxes, labels = small_detector
    q = D.ptq(model, images[:32], activation_range="unilateral_histogram")
    assert q.target == "int8" and q.inputs[0]["dtype"] == "int8" and not q.custom_ops
    ranges = q.extras["activation_ranges"]
    mm = D.ptq(model, images[:32], activation_range="minmax").extras["activation_ranges"]
    assert any(ranges[n][1] < mm[n][1] - 1e-6 for n in ranges)   # UH truncated some tails
    it = Interpreter(model_content=q.flatbuffer)
    details = {d["name"]: d for d in it.get_tensor_details()}
    checked = 0
    for name, (lo, hi) in ranges.items():
        d = details.get(name)
        if d is None or d["dtype"] != np.int8 or len(d["quantization_parameters"]["scales"]) != 1:
            continue
        if name.endswith(("Sigmoid", "Logistic")):                  # TFLite fixes these scales
            continue
        scale = d["quantization_parameters"]["scales"][0]
        assert scale == pytest.approx((max(hi, 0) - min(lo, 0)) / 255, rel=1e-5), name
        checked += 1
    assert checked >= 5
    m = D.evaluate(q, images[32:], boxes[32:], labels[32:])
    assert 0.0 <= m.map50_95 <= m.map50 <= 1.0
