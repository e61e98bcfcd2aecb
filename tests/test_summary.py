"""tfcompress.report.summary: MACs, BOPs, memory, sparsity against hand counts and larq."""

import json
import re

import larq as lq
import numpy as np
import pytest

from tfcompress import cli
from tfcompress._keras import keras, tf
from tfcompress.report import ModelSummary, summary

BINARY = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign",
              kernel_constraint="weight_clip")


def _float_model():
    return keras.Sequential([
        keras.Input((10, 10, 3)),
        keras.layers.Conv2D(8, 3, name="conv"),                       # -> 8x8x8
        keras.layers.MaxPool2D(2, name="pool"),                       # -> 4x4x8
        keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw"),
        keras.layers.SeparableConv2D(4, 3, name="sep"),               # -> 2x2x4
        keras.layers.Conv2DTranspose(2, 3, strides=2, use_bias=False, name="deconv"),
        keras.layers.Flatten(name="flat"),
        keras.layers.Dense(10, name="fc"),
    ], name="small")


def _row(s, name):
    return next(r for r in s.rows if r["name"] == name)


def test_macs_match_hand_counts():
    s = summary(_float_model())
    # MACs = kernel size x positions it is applied at (output positions; input positions
    # for the transposed convolution).
    hand = {
        "conv": 3 * 3 * 3 * 8 * (8 * 8),
        "dw": 3 * 3 * 8 * (4 * 4),
        "sep": (3 * 3 * 8 + 8 * 4) * (2 * 2),
        "deconv": 3 * 3 * 4 * 2 * (2 * 2),
        "fc": _row(s, "flat")["output_shape"][1] * 10,
    }
    assert _row(s, "deconv")["output_shape"] == (None, 5, 5, 2)
    assert _row(s, "flat")["output_shape"] == (None, 50)
    for name, macs in hand.items():
        assert _row(s, name)["macs"] == macs, name
        assert _row(s, name)["bops"] == 0
    assert _row(s, "pool")["macs"] is None and _row(s, "pool")["params"] == 0
    assert s.totals["macs"] == sum(hand.values()) == 13824 + 1152 + 416 + 288 + 500
    assert s.totals["params"] == _float_model().count_params()
    assert _row(s, "conv")["params"] == 3 * 3 * 3 * 8 + 8
    assert s.totals["float32_ratio"] == 1.0
    assert s.totals["memory_bytes"] == 4 * s.totals["params"]


def test_macs_of_sequence_layers():
    m = keras.Sequential([keras.Input((20, 4)), keras.layers.Conv1D(6, 5, name="c1"),
                          keras.layers.Dense(3, name="td")])
    s = summary(m)
    assert _row(s, "c1")["macs"] == 5 * 4 * 6 * 16
    assert _row(s, "td")["macs"] == 6 * 3 * 16         # Dense applied at each of 16 steps
    # A wrapper is reported with the wrapped layer's kernel and MACs.
    wrapped = keras.Sequential([keras.Input((5, 8, 1)), keras.layers.TimeDistributed(
        keras.layers.Conv1D(2, 3), name="tdc")])
    r = summary(wrapped).rows[0]
    assert r["type"] == "TimeDistributed(Conv1D)" and r["output_shape"] == (None, 5, 6, 2)
    assert r["macs"] == 3 * 1 * 2 * (5 * 6) and r["kernel_params"] == 6


def test_bops_and_binary_kernel_memory():
    m = keras.Sequential([
        keras.Input((6, 6, 8)),
        lq.layers.QuantConv2D(16, 3, use_bias=False, name="bconv", **BINARY),  # -> 4x4x16
        lq.layers.QuantConv2D(4, 3, kernel_quantizer="ste_sign", kernel_constraint="weight_clip",
                              name="wonly"),                                      # -> 2x2x4
    ])
    s = summary(m)
    b = _row(s, "bconv")
    assert b["macs"] == b["bops"] == 3 * 3 * 8 * 16 * 16
    assert b["bits"] == b["input_bits"] == 1 and b["nonbinary_macs"] == 0
    assert b["memory_bytes"] == 3 * 3 * 8 * 16 / 8 == 144
    # Binary weights but real-valued inputs: MACs, not BOPs. Its bias stays 32-bit.
    w = _row(s, "wonly")
    assert w["bops"] == 0 and w["macs"] == w["nonbinary_macs"] == 3 * 3 * 16 * 4 * 4
    assert w["input_bits"] == 32 and w["bits"] == 1
    assert w["memory_bytes"] == 3 * 3 * 16 * 4 / 8 + 4 * 4
    assert s.totals["bops"] == b["bops"]
    assert s.totals["bops_share"] == pytest.approx(18432 / (18432 + 2304))


def test_float32_ratio():
    m = keras.Sequential([
        keras.Input((6, 6, 8)),
        lq.layers.QuantConv2D(16, 3, use_bias=False, **BINARY),
        keras.layers.BatchNormalization(scale=False),
        keras.layers.Flatten(), keras.layers.Dense(10),
    ])
    s = summary(m)
    params = 1152 + 3 * 16 + 256 * 10 + 10
    assert s.totals["params"] == params
    assert s.totals["float32_memory_bytes"] == 4 * params
    assert s.totals["memory_bytes"] == 1152 / 8 + 4 * (params - 1152)
    assert s.totals["float32_ratio"] == pytest.approx(4 * params / (144 + 4 * (params - 1152)))


@pytest.mark.parametrize("quantized", [False, True])
def test_sparsity_counts_exact_zeros(quantized):
    layer = (lq.layers.QuantConv2D(8, 3, name="c", **BINARY) if quantized
             else keras.layers.Conv2D(8, 3, name="c"))
    m = keras.Sequential([keras.Input((5, 5, 4)), layer])
    assert summary(m).rows[0]["sparsity"] == 0.0
    k = layer.kernel.numpy()
    mask = (np.arange(k.size) % 2 == 0).reshape(k.shape)
    layer.kernel.assign(np.where(mask, 0.0, k))
    s = summary(m)
    assert s.rows[0]["zero_kernel_weights"] == k.size // 2
    assert s.rows[0]["sparsity"] == 0.5 == s.totals["sparsity"]


def test_nested_model_is_expanded():
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(5, name="inner_fc")],
                             name="inner")
    x = keras.Input((4,))
    out = keras.layers.Dense(2, name="outer_fc")(inner(x))
    s = summary(keras.Model(x, out))
    assert [r["name"] for r in s.rows] == ["inner_fc", "outer_fc"]
    assert s.totals["params"] == 25 + 12 and s.totals["macs"] == 20 + 10


def test_text_snapshot():
    m = keras.Sequential([
        keras.Input((6, 6, 8)),
        lq.layers.QuantConv2D(16, 3, use_bias=False, name="bconv", **BINARY),
        keras.layers.Flatten(name="flat"), keras.layers.Dense(10, name="fc"),
    ], name="snap")
    expected = """\
Model: snap
-------------------------------------------------------------------------------------------------
Layer  Type         Output shape      Params  Bits  In bits  Memory (B)    MACs    BOPs  Sparsity
-------------------------------------------------------------------------------------------------
bconv  QuantConv2D  (None, 4, 4, 16)   1,152     1        1         144  18,432  18,432      0.0%
flat   Flatten      (None, 256)            0     -        -           0       -       -         -
fc     Dense        (None, 10)         2,570    32       32      10,280   2,560       0      0.0%
-------------------------------------------------------------------------------------------------
Total                                  3,722                     10,424  20,992  18,432      0.0%
-------------------------------------------------------------------------------------------------
Memory 10.18 KiB vs 14.54 KiB at float32 (1.43x smaller); MACs 20,992, of which BOPs 18,432 (87.8%)"""
    assert summary(m).to_text() == expected


def test_separable_mixed_bits_and_json_round_trip():
    m = keras.Sequential([keras.Input((6, 6, 4)), lq.layers.QuantSeparableConv2D(
        8, 3, depthwise_quantizer="ste_sign", depthwise_constraint="weight_clip",
        input_quantizer="ste_sign", name="sep")])
    s = summary(m)
    r = s.rows[0]
    assert r["weight_bits"] == {"depthwise_kernel": 1, "pointwise_kernel": 32}
    # Only the depthwise half multiplies 1-bit inputs by 1-bit weights.
    assert r["bops"] == 3 * 3 * 4 * 16 and r["macs"] == (36 + 32) * 16
    assert r["memory_bytes"] == 36 / 8 + (32 + 8) * 4
    assert re.search(r"^sep .* 1/32 ", s.to_text(), re.M)
    data = json.loads(s.to_json())
    assert data == json.loads(json.dumps(s.to_dict()))
    assert data["rows"][0]["output_shape"] == [None, 4, 4, 8]
    assert data["totals"]["bops"] == r["bops"]


def test_plot_writes_png(tmp_path):
    m = keras.Sequential([keras.Input((6, 6, 8)), lq.layers.QuantConv2D(4, 3, **BINARY),
                          keras.layers.BatchNormalization(), keras.layers.Flatten(),
                          keras.layers.Dense(3)])
    path = summary(m).plot(tmp_path / "mem.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
    empty = keras.Sequential([keras.Input((3,)), keras.layers.Flatten()])
    with pytest.raises(ValueError, match="no weights"):
        summary(empty).plot(tmp_path / "none.png")


def _larq_summary_text(model):
    lines = []
    lq.models.summary(model, print_fn=lines.append)
    return "\n".join(lines)


def _readable(text):
    number, unit = re.fullmatch(r"([\d.]+)\s*([kM]?)", text.strip()).groups()
    return float(number) * {"": 1, "k": 1e3, "M": 1e6}[unit]


def test_param_and_mac_counts_agree_with_larq_summary():
    m = keras.Sequential([
        keras.Input((12, 12, 3)),
        lq.layers.QuantConv2D(16, 3, kernel_quantizer="ste_sign", kernel_constraint="weight_clip",
                              use_bias=False, name="first"),
        lq.layers.QuantConv2D(32, 3, use_bias=False, name="bin", **BINARY),
        keras.layers.MaxPool2D(2), keras.layers.Flatten(),
        lq.layers.QuantDense(10, name="head"),
    ])
    ours = summary(m)
    text = _larq_summary_text(m)

    def field(label):
        return _readable(re.search(rf"\| {label}\s+(.+?)\s*\|", text).group(1))

    t = ours.totals
    assert field("Total params") == pytest.approx(t["params"], rel=5e-3)
    assert field("Trainable params") == pytest.approx(t["trainable_params"], rel=5e-3)
    assert field("Number of MACs") == pytest.approx(t["macs"], rel=5e-3)
    assert float(re.search(r"binarized\s+([\d.]+)", text).group(1)) == pytest.approx(
        t["bops_share"], abs=1e-4)
    # Per layer, exactly: larq's table lists each layer's weight counts by bit width, its
    # memory in kB (1 kB = 8 * 1024 bits) and its MACs by precision.
    for r in ours.rows:
        line = re.search(rf"^\| {r['name']} .*\|$", text, re.M).group(0)
        after_shape = line.split(")")[-1].strip(" |").split()
        counts = [float(v) for v in after_shape]
        # columns: # 1-bit, # 32-bit, memory kB, 1-bit MACs, 32-bit MACs
        assert counts[0] + counts[1] == r["params"], r["name"]
        assert counts[2] == pytest.approx(r["memory_bytes"] / 1024, abs=0.006), r["name"]
        assert counts[3] == (r["bops"] or 0) and counts[3] + counts[4] == (r["macs"] or 0)


def test_batchnorm_params_differ_from_larq_only_by_folded_beta():
    # larq counts BatchNormalization's beta (and gamma) as folded into the moving statistics;
    # tfcompress counts every Keras weight. The difference is exactly one vector per channel.
    m = keras.Sequential([keras.Input((4, 4, 2)), keras.layers.Conv2D(6, 1, name="c"),
                          keras.layers.BatchNormalization(scale=False, name="bn")])
    text = _larq_summary_text(m)
    larq_bn = sum(float(v) for v in re.search(r"^\| bn .*\|$", text, re.M).group(0)
                  .split(")")[-1].strip(" |").split()[:1])
    assert summary(m).rows[1]["params"] == 3 * 6 == larq_bn + 6


def test_bad_input():
    with pytest.raises(TypeError, match="tf_keras Model"):
        summary(object())
    with pytest.raises(TypeError, match="tf_keras Model"):
        summary(keras.layers.Dense(3))
    unbuilt = keras.Sequential([keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="not built"):
        summary(unbuilt)
    odd = keras.Sequential([keras.Input((4,)), lq.layers.QuantDense(
        3, kernel_quantizer=lambda x: tf.sign(x), name="odd")])
    with pytest.raises(ValueError, match="'odd'.*bit width"):
        summary(odd)


def test_summary_type():
    s = summary(keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, use_bias=False)]))
    assert isinstance(s, ModelSummary)
    # The module docstring's example.
    assert (s.rows[0]["macs"], s.totals["params"], s.totals["memory_bytes"]) == (1296, 36, 144.0)


# -------------------------------------------------------------------------------- CLI
@pytest.fixture
def saved_model(tmp_path):
    m = keras.Sequential([keras.Input((6, 6, 8)),
                          lq.layers.QuantConv2D(16, 3, use_bias=False, name="bconv", **BINARY),
                          keras.layers.Flatten(name="flat"), keras.layers.Dense(10, name="fc")],
                         name="cli_model")
    path = tmp_path / "m.keras"
    m.save(path)
    return path, summary(m)


def test_cli_summary_text(saved_model, capsys):
    path, expected = saved_model
    assert cli.main(["summary", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.strip() == expected.to_text()
    assert "Total" in out and "18,432" in out


def test_cli_summary_json_and_plot(saved_model, tmp_path, capsys):
    path, expected = saved_model
    png = tmp_path / "plot.png"
    assert cli.main(["summary", str(path), "--json", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    data = json.loads(out)
    assert data["totals"] == json.loads(json.dumps(expected.totals))
    assert [r["name"] for r in data["rows"]] == ["bconv", "flat", "fc"]
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_cli_summary_missing_file(tmp_path, capsys):
    assert cli.main(["summary", str(tmp_path / "nope.keras")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_benchmark_record_names_the_commit_that_ran(monkeypatch):
    """A benchmark that runs while the checkout moves on records the commit it started from
    (the code it imported) and, separately, the commit at write time."""
    from tfcompress.report import tables

    monkeypatch.setattr(tables, "_COMMIT_AT_IMPORT", ["aaaaaaa"])
    monkeypatch.setattr(tables, "_git_commit", lambda: "bbbbbbb")
    env = tables.environment()
    assert env["commit"] == "aaaaaaa" and env["commit_at_write"] == "bbbbbbb"
    monkeypatch.setattr(tables, "_git_commit", lambda: "aaaaaaa")
    assert "commit_at_write" not in tables.environment()
