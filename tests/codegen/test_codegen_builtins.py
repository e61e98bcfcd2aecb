"""Every builtin op the generator supports, on random shapes and attributes: the generated C
(host build) against ai-edge-litert's reference kernels on the same raw inputs.

int8: bit-exact. float32: the kernels sum in the reference's order, so the outputs differ only
by the few ulp of exp/tanh (computed without libm so host and Cortex-M agree): relative error
<= 1e-5 of the largest output.
"""

import numpy as np
import pytest

from codegen_helpers import assert_close, run_both
from codegen_models import BUILTINS

SEEDS = (0, 1, 2)


def _inputs(rng, shape, dtype, n=3):
    if dtype == "int8":
        return rng.integers(-128, 128, size=(n,) + tuple(shape)).astype(np.int8)
    x = rng.normal(0.0, 2.0, size=(n,) + tuple(shape)).astype(np.float32)
    x.reshape(-1)[::11] = 0.0
    return x


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", ["float32", "int8"])
@pytest.mark.parametrize("op", sorted(BUILTINS))
def test_builtin_op_matches_litert(op, dtype, seed):
    rng = np.random.default_rng(1000 * seed + sum(map(ord, op + dtype)))
    if op == "DEQUANTIZE" and dtype == "float32":
        pytest.skip("DEQUANTIZE takes int8 input")
    fb, shape = BUILTINS[op](rng, dtype)
    in_dtype = "int8" if op == "DEQUANTIZE" else dtype
    x = _inputs(rng, shape, in_dtype)
    ours, ref, lib = run_both(fb, x, runtime="litert")
    assert ours.dtype == ref.dtype
    if ours.dtype == np.int8:
        mismatch = np.flatnonzero(ours.reshape(-1) != ref.reshape(-1))
        assert mismatch.size == 0, (f"{op} int8: {mismatch.size} of {ours.size} values differ, "
                                    f"e.g. ours {ours.reshape(-1)[mismatch[:5]]} vs ref "
                                    f"{ref.reshape(-1)[mismatch[:5]]}\n{lib.meta['schedule']}")
    else:
        assert_close(ours, ref, what=f"{op} float32")
