"""Larq Compute Engine ops on random shapes and attributes: the generated C (host build) against
LCE's interpreter (its reference bconv kernel, the one that supports every attribute).

LceQuantize (float32/int8 input, channel counts that leave partial words) -> LceBconv2d
(float32 / int8 / bit-packed output; SAME with zero or one padding, VALID; strides, dilations,
groups, fused activations) -> [LceBMaxPool2d] -> LceDequantize. int8 and bit-packed outputs are
compared bit-exactly (bit-packed ones through LceDequantize), float outputs to 1e-5 relative.
"""

import numpy as np
import pytest

from codegen_fbuild import ACT, Builder
from codegen_helpers import assert_close, run_both

from tfcompress.codegen.steps import compute_padding


def _words(c):
    return (c + 31) // 32


def _filter(rng, cout, kh, kw, cin_g):
    """Random bit-packed filter with the unused bits of a partial last word cleared."""
    wg = _words(cin_g)
    f = rng.integers(0, 2 ** 32, size=(cout, kh, kw, wg), dtype=np.uint64).astype(np.uint32)
    if cin_g % 32:
        f[..., -1] &= np.uint32((1 << (cin_g % 32)) - 1)
    return f.view(np.int32)


def bconv_model(rng, out="float32", int8_in=False, pool=False):
    groups = int(rng.choice([1, 1, 1, 2]))
    if groups > 1:
        cin = 32 * groups * int(rng.integers(1, 3))
    else:
        cin = int(rng.choice([3, 16, 32, 40, 64, 70, 100]))
    cout = int(rng.choice([1, 5, 8, 31, 33, 40])) * groups
    h, w = int(rng.integers(3, 9)), int(rng.integers(3, 9))
    kh, kw = int(rng.choice([1, 2, 3])), int(rng.choice([1, 3]))
    stride = int(rng.choice([1, 2]))
    dil = int(rng.choice([1, 2])) if stride == 1 else 1
    if (kh - 1) * dil + 1 > h or (kw - 1) * dil + 1 > w:
        dil = 1
    padding = str(rng.choice(["SAME", "VALID"]))
    # bit-packed output with zero padding is never produced by LCE's converter (and crashes
    # LCE's interpreter): one padding there
    pad_values = int(rng.choice([0, 1])) if out != "int32" else 1
    if padding == "SAME" and pad_values == 0 and cin % 2:
        cin += 1  # LCE's reference kernel needs an even channel count for zero padding
        if groups > 1:
            pad_values = 1
    act = str(rng.choice(["NONE", "RELU", "RELU6", "RELU_N1_TO_1"])) if out != "int32" else "NONE"
    oh, _ = compute_padding(padding, h, kh, stride, dil)
    ow, _ = compute_padding(padding, w, kw, stride, dil)
    b = Builder()
    if int8_in:
        x = b.tensor([1, h, w, cin], "int8", scale=float(rng.uniform(0.02, 0.1)),
                     zero_point=int(rng.integers(-10, 11)), name="input")
    else:
        x = b.tensor([1, h, w, cin], "float32", name="input")
    xb = b.tensor([1, h, w, _words(cin)], "int32")
    b.custom("LceQuantize", [x], [xb])
    filt = b.tensor([cout, kh, kw, _words(cin // groups)], "int32",
                    _filter(rng, cout, kh, kw, cin // groups))
    k = kh * kw * (cin // groups)
    if out == "int32":
        thr = b.tensor([cout], "int32", rng.integers(0, k + 1, cout).astype(np.int32))
        inputs = [xb, filt, -1, -1, thr]
        y = b.tensor([1, oh, ow, _words(cout)], "int32")
    else:
        mul = b.tensor([cout], "float32", rng.normal(0, 0.3, cout).astype(np.float32))
        bias = b.tensor([cout], "float32", rng.normal(0, 2, cout).astype(np.float32))
        inputs = [xb, filt, mul, bias, -1]
        if out == "int8":
            y = b.tensor([1, oh, ow, cout], "int8", scale=float(rng.uniform(0.02, 0.2) * np.sqrt(k)),
                         zero_point=int(rng.integers(-10, 11)), name="output")
        else:
            y = b.tensor([1, oh, ow, cout], "float32", name="output")
    b.custom("LceBconv2d", inputs, [y], {
        "channels_in": cin, "dilation_height_factor": dil, "dilation_width_factor": dil,
        "fused_activation_function": ACT[act], "pad_values": pad_values,
        "padding": 0 if padding == "SAME" else 1, "stride_height": stride, "stride_width": stride})
    final = y
    if out == "int32":
        cur, ch, cw = y, oh, ow
        if pool:
            fh, fw = int(rng.integers(1, min(3, ch) + 1)), int(rng.integers(1, min(3, cw) + 1))
            ps = int(rng.integers(1, 3))
            ppad = str(rng.choice(["SAME", "VALID"]))
            ph, _ = compute_padding(ppad, ch, fh, ps, 1)
            pw, _ = compute_padding(ppad, cw, fw, ps, 1)
            cur2 = b.tensor([1, ph, pw, _words(cout)], "int32")
            b.custom("LceBMaxPool2d", [cur], [cur2], {
                "filter_height": fh, "filter_width": fw, "padding": 0 if ppad == "SAME" else 1,
                "stride_height": ps, "stride_width": ps, "fused_activation_function": 0})
            cur, ch, cw = cur2, ph, pw
        if rng.random() < 0.5:
            final = b.tensor([1, ch, cw, cout], "float32", name="output")
        else:
            final = b.tensor([1, ch, cw, cout], "int8", scale=float(rng.uniform(0.005, 1.5)),
                             zero_point=int(rng.integers(-10, 11)), name="output")
        b.custom("LceDequantize", [cur], [final])
    desc = dict(cin=cin, cout=cout, h=h, w=w, k=(kh, kw), stride=stride, dil=dil,
                padding=padding, pad_values=pad_values, groups=groups, act=act, out=out)
    return b.finish([x], [final]), (1, h, w, cin), desc


def _inputs(rng, shape, int8, n=3):
    if int8:
        return rng.integers(-128, 128, size=(n,) + shape).astype(np.int8)
    x = rng.normal(0.0, 2.0, size=(n,) + shape).astype(np.float32)
    x.reshape(-1)[::7] = 0.0  # exact zeros: LCE maps 0 to +1
    return x


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("out", ["float32", "int8", "int32"])
def test_bconv2d_matches_lce(out, seed):
    rng = np.random.default_rng(seed * 31 + len(out))
    int8_in = bool(seed % 2)
    fb, shape, desc = bconv_model(rng, out=out, int8_in=int8_in, pool=seed % 3 == 0)
    x = _inputs(rng, shape, int8_in)
    ours, ref, lib = run_both(fb, x, runtime="lce")
    if ours.dtype == np.int8:
        np.testing.assert_array_equal(ours, ref, err_msg=str(desc))
    else:
        assert_close(ours, ref, what=str(desc))


@pytest.mark.parametrize("seed", range(3))
def test_bconv2d_zero_padding_int8_output(seed):
    """Zero padding with int8 output: only LCE's reference kernel supports it (the correction
    is exact in the popcount domain)."""
    rng = np.random.default_rng(500 + seed)
    for _ in range(20):
        fb, shape, desc = bconv_model(rng, out="int8")
        if desc["padding"] == "SAME" and desc["pad_values"] == 0 and max(desc["k"]) > 1:
            break
    x = _inputs(rng, shape, False)
    ours, ref, _ = run_both(fb, x, runtime="lce")
    np.testing.assert_array_equal(ours, ref, err_msg=str(desc))


@pytest.mark.parametrize("channels", [1, 31, 32, 33, 70])
@pytest.mark.parametrize("io", ["float32", "int8"])
def test_quantize_dequantize_roundtrip(channels, io):
    """LceQuantize -> LceDequantize: signs (0 -> +1), partial words, int8 zero points."""
    rng = np.random.default_rng(channels)
    b = Builder()
    shape = [1, 3, 2, channels]
    q = dict(scale=0.05, zero_point=-3) if io == "int8" else {}
    x = b.tensor(shape, io, **q)
    xb = b.tensor([1, 3, 2, _words(channels)], "int32")
    y = b.tensor(shape, io, **(dict(scale=0.4, zero_point=2) if io == "int8" else {}))
    b.custom("LceQuantize", [x], [xb])
    b.custom("LceDequantize", [xb], [y])
    fb = b.finish([x], [y])
    xs = _inputs(rng, tuple(shape), io == "int8")
    ours, ref, _ = run_both(fb, xs, runtime="lce")
    np.testing.assert_array_equal(ours, ref)
