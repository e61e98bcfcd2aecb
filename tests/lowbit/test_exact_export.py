"""Per quantizer and bit width: a small real-data MNIST model converts to int8 with its trained
grids, and the file agrees with Keras on the real test images (LiteRT and TFLite Micro)."""

import pytest
from lowbit_models import quantized

import tfcompress
from tfcompress.conversion.lowbit import grid_agreement

# (method, bits of the two hidden layers): every quantizer family at two widths where it can
# be stored exactly (power-of-two <= 4 bits; DoReFa weights <= 7 bits; PACT uses DoReFa weights).
CASES = [
    ("lsq", (2, 4)), ("lsq", (3, 8)), ("uniform", (2, 8)), ("affine", (3, 4)),
    ("power_of_two", (3, 4)), ("dorefa", (2, 4)), ("pact", (4, 2)), ("lsq_plus", (4, 8)),
    ("ste_tern", (2, 2)), ("trq", (2, 2)),
]


@pytest.fixture(scope="module")
def converted(float_mnist, mnist_lowbit):
    (x, y), _ = mnist_lowbit
    cache = {}

    def get(method, bits):
        if (method, bits) not in cache:
            model = quantized(float_mnist, method, bits, x, y)
            # float I/O: the classifier head runs in 16x8 (see the last test)
            cache[(method, bits)] = (model, tfcompress.convert(
                model, target="int8", representative_data=x[:200], allow_low_bit=True,
                io_type="float32"))
        return cache[(method, bits)]

    return get


@pytest.mark.parametrize("method,bits", CASES, ids=[f"{m}-{a}-{b}" for m, (a, b) in CASES])
def test_file_agrees_with_keras(converted, mnist_lowbit, method, bits):
    _, (xt, yt) = mnist_lowbit
    model, res = converted(method, bits)
    rep = res.verify(xt, yt, latency_runs=0)
    # Targets of issue 14: agreement >= 99.5% and accuracy within 0.3 pt of Keras. On 1000
    # images one disagreement is 0.1 pt; the grids make the file compute the Keras numbers up
    # to the runtime's requantization rounding (a few elements per layer, see the grid check).
    assert rep.agreement >= 0.995, rep
    assert abs(rep.accuracy - rep.keras_accuracy) <= 0.003 + 1e-9, rep
    rows = {(r["layer"], r["role"]): r for r in res.report()["layers"]}
    for i, b in enumerate(bits):
        row = rows[(f"hidden{i}", "kernel")]
        assert row["trained_bits"] == b and row["compute_bits"] in (8, "8x16")
        # <= 4-bit kernels are stored packed unless the report says why not (integers beyond
        # INT4, e.g. DoReFa's odd levels, or a multiplier too large for exact requantization)
        if b <= 4:
            assert row["stored_bits"] <= 4 or any("int8" in n for n in row["notes"]), row
        else:
            assert row["stored_bits"] == 8


@pytest.mark.parametrize("method,bits", [("lsq", (2, 4)), ("affine", (3, 4)), ("trq", (2, 2))])
def test_each_trained_grid_survives(converted, mnist_lowbit, method, bits):
    """Element level: the integers of every quantized activation in the file equal the Keras
    quantizer's integers except where the runtime's rounding or an upstream flip moves one."""
    _, (xt, _) = mnist_lowbit
    _, res = converted(method, bits)
    rows = grid_agreement(res, xt[:50])
    assert [r["layer"] for r in rows] == ["stem", "hidden0", "hidden1", "head"]
    assert rows[0]["agreement"] == 1.0          # the model input: the same rounding exactly
    # first layer: its input is exact, so only the reference kernels' double rounding (and
    # the int32 bias) can move an element; with an 8-bit output grid that is ~0.1% at most
    assert rows[1]["agreement"] >= 0.995
    assert all(r["agreement"] >= 0.9 and r["max_steps"] <= 8 for r in rows)


def test_micro_target_runs_the_same_numbers(converted, mnist_lowbit):
    (x, _), (xt, yt) = mnist_lowbit
    model, _ = converted("lsq", (2, 4))
    res = tfcompress.convert(model, target="micro", representative_data=x[:200], allow_low_bit=True)
    rep = res.verify(xt[:500], yt[:500], latency_runs=0)
    assert rep.runtime == "micro"
    # TFLite Micro's reference kernels round twice (gemmlowp high-mul, then a rounding shift),
    # so a few more elements move a level than with XNNPACK; the file is still the trained one.
    assert rep.agreement >= 0.985, rep
    rows = {(r["layer"], r["role"]): r for r in res.report()["layers"]}
    assert rows[("hidden0", "kernel")]["stored_bits"] == 4          # conv: INT4 in micro
    assert rows[("hidden0", "input")]["exact"]
    assert rows[("head", "kernel")]["stored_bits"] == 8
    assert "model_data.cc" in res.extras["files"]


def test_report_text_shows_bits(converted):
    _, res = converted("lsq", (2, 4))
    text = res.report()["layers_table"]
    assert "trained" in text and "stored" in text and "compute" in text
    line = next(ln for ln in text.splitlines() if ln.startswith("hidden0") and "kernel" in ln)
    assert "LSQ 2-bit" in line and " 2 " in line and "yes" in line


def test_float_io_runs_the_classifier_head_in_16x8(converted, mnist_lowbit):
    """With float I/O the last Dense and Softmax run with int16 activations (an int8 softmax
    ties classes closer than 1/256); the file still runs in LiteRT and TFLite Micro."""
    from tfcompress.conversion.fbwriter import read_model

    (x, _), (xt, yt) = mnist_lowbit
    model, res = converted("lsq", (2, 4))
    int8_io = tfcompress.convert(model, target="int8", representative_data=x[:200],
                                 allow_low_bit=True)
    g = read_model(res.flatbuffer).subgraphs[0]
    types = {t.name.decode(): t.type for t in g.tensors}
    assert types["head/linear"] == 7 and types["probs"] == 7            # INT16
    assert types["hidden1/linear"] == 9                                 # the rest stays INT8
    row = next(r for r in res.report()["layers"] if r["layer"] == "head" and r["role"] == "kernel")
    assert row["compute_bits"] == "8x16" and "16x8 head" in row["notes"][-1]
    rep16 = res.verify(xt, yt, latency_runs=0)
    rep8 = int8_io.verify(xt, yt, latency_runs=0)
    assert rep16.agreement >= max(rep8.agreement, 0.995), (rep16, rep8)
    assert int8_io.inputs[0]["dtype"] == "int8" and res.inputs[0]["dtype"] == "float32"
    micro = tfcompress.convert(model, target="micro", representative_data=x[:200], io_type="float32",
                               allow_low_bit=True)
    assert micro.verify(xt[:200], runtime="micro", latency_runs=0).agreement >= 0.985
