"""Issue 18 part 3: the fused partitions compute what the unfused graph computes.

For every fusion pattern of :func:`tfcompress._kernels.testing.fusion_model` on randomized
shapes (batch, height, width, channels, pad values, activations), the fused kernels give
bit-identical outputs to the same kernels with fusion off (each op run on its own: the fused
steps are the same IEEE operations), and both match LCE's interpreter (reference kernels,
LCE's own builtin kernels for the float ops) within 1e-5 of max |output| plus LCE's own
rounding of its folded output transform (``fuzz_kernels.lce_rounding_slack``: LCE computes
``2*count * (-mul) + (bias + K*mul)``, one float32 ulp of ``2K|mul|`` off). Thread counts 1-4
give identical outputs (the work split never changes what a value is computed from)."""

import sys
from pathlib import Path

import numpy as np
import pytest

from kernel_models import kernels_or_skip

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import fuzz_kernels  # noqa: E402

PATTERNS = ("residual", "bn_chain", "r2b", "dense", "pool_se", "sub_prelu", "bits_chain")
# the fused op each pattern must produce (names from the kernels' profile)
EXPECTED = {
    "residual": "LceBconv2d+ADD+LceQuantize",
    "bn_chain": "MUL+ADD+LceQuantize",
    "r2b": "LceBconv2d+MUL+MUL+PRELU+ADD",
    "dense": "CONCATENATION+MUL+ADD+LceQuantize",
    "pool_se": "FULLY_CONNECTED",
    "sub_prelu": "LceBconv2d+SUB+MUL+PRELU",
    "bits_chain": "LceBconv2d+ADD",
}


def _run(fb, xs, threads=1, **options):
    from ai_edge_litert.interpreter import Interpreter

    from tfcompress import _kernels

    d = _kernels.delegate(profile=True, **options)
    it = Interpreter(model_content=fb, experimental_delegates=[d], num_threads=threads)
    it.allocate_tensors()
    for detail, x in zip(it.get_input_details(), xs):
        it.set_tensor(detail["index"], x)
    it.invoke()
    outs = [np.array(it.get_tensor(o["index"])) for o in it.get_output_details()]
    return outs, [k["name"] for k in _kernels.profile_report(d)]


def _case(pattern, seed):
    from tfcompress._kernels.testing import fusion_model

    fb, shapes = fusion_model(pattern, seed)
    rng = np.random.default_rng(seed)
    return fb, [rng.normal(0, 1, s).astype(np.float32) for s in shapes]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("pattern", PATTERNS)
def test_fused_equals_unfused_and_lce(pattern, seed):
    kernels_or_skip()
    from tfcompress.runtime import Interpreter

    fb, xs = _case(pattern, seed)
    fused, names = _run(fb, xs)
    unfused, plain = _run(fb, xs, fuse=False)
    assert any(EXPECTED[pattern] in n for n in names), names
    assert not any("+" in n for n in plain), plain
    ref = Interpreter(fb, runtime="lce", lce_kernel="reference").invoke(xs)
    slack = fuzz_kernels.lce_rounding_slack(fb)
    for a, b, r in zip(fused, unfused, ref):
        np.testing.assert_array_equal(a, b)
        assert a.shape == r.shape
        err = np.abs(a.astype(np.float64) - r).max() / max(1.0, float(np.abs(r).max()))
        assert err <= 1e-5 + slack, (err, slack)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_threads_give_identical_outputs(pattern):
    kernels_or_skip()
    fb, xs = _case(pattern, 5)
    one, _ = _run(fb, xs, threads=1)
    for threads in (2, 3, 4):
        many, _ = _run(fb, xs, threads=threads)
        for a, b in zip(one, many):
            np.testing.assert_array_equal(a, b, err_msg=f"{threads} threads")


def test_builtins_off_leaves_float_ops_to_litert():
    kernels_or_skip()
    fb, xs = _case("residual", 0)
    lce_only, names = _run(fb, xs, builtins=False)
    fused, _ = _run(fb, xs)
    assert all(n.startswith(("LceQuantize", "LceBconv2d")) for n in names), names
    for a, b in zip(lce_only, fused):
        assert np.abs(a - b).max() <= 1e-5 * max(1.0, float(np.abs(b).max()))


def test_unsupported_broadcast_stays_with_litert():
    # an ADD whose operand does not broadcast the way the kernels support ([N, H, 1, C]) is
    # not claimed: it runs in LiteRT and the model still matches LCE
    kernels_or_skip()
    from tfcompress._kernels.testing import Net
    from tfcompress.runtime import Interpreter

    net = Net(3)
    x = net.input((1, 6, 5, 16))
    odd = net.input((1, 6, 1, 16))
    y = net.add(net.bconv(x, 16), odd)
    fb = net.finish([y])
    rng = np.random.default_rng(0)
    xs = [rng.normal(0, 1, (1, 6, 5, 16)).astype(np.float32),
          rng.normal(0, 1, (1, 6, 1, 16)).astype(np.float32)]
    ours, names = _run(fb, xs)
    assert not any("ADD" in n for n in names), names
    ref = Interpreter(fb, runtime="lce", lce_kernel="reference").invoke(xs)
    assert np.abs(ours[0] - ref[0]).max() <= 1e-5 * max(1.0, float(np.abs(ref[0]).max())) + \
        fuzz_kernels.lce_rounding_slack(fb)
