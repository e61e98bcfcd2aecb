"""int8 layers through Arm CMSIS-NN (built from ../shared/vendor/CMSIS-NN) give the same bytes as
the portable kernels, and both match ai-edge-litert's reference kernels."""

import numpy as np
import pytest

from codegen_helpers import run_both
from codegen_models import BUILTINS

from tfcompress.codegen import build

CMSIS_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D",
             "AVERAGE_POOL_2D", "ADD", "MUL", "SOFTMAX")


@pytest.fixture(scope="module", autouse=True)
def _cmsis():
    try:
        build.cmsis_root()
    except Exception as err:  # the vendored sources are part of the project's shared folder
        pytest.skip(str(err))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("op", CMSIS_OPS)
def test_cmsis_nn_identical_to_portable(op, seed):
    rng = np.random.default_rng(77 + seed * 13 + sum(map(ord, op)))
    fb, shape = BUILTINS[op](rng, "int8")
    x = rng.integers(-128, 128, size=(4,) + tuple(shape)).astype(np.int8)
    cm, ref, lib = run_both(fb, x, cmsis_nn=True, runtime="litert")
    portable = lib.host(cmsis_nn=False).run_raw(x)
    np.testing.assert_array_equal(cm, portable, err_msg=f"{op}: CMSIS-NN != portable")
    np.testing.assert_array_equal(cm, ref, err_msg=f"{op}: CMSIS-NN != litert reference")


def test_generated_code_says_which_layers_use_cmsis(tmp_path):
    """cmsis_nn=False leaves every CMSIS-NN flag off and plans no scratch memory."""
    from tfcompress.codegen import generate

    rng = np.random.default_rng(3)
    fb, _ = BUILTINS["CONV_2D"](rng, "int8")
    on = generate(fb, tmp_path / "on")
    off = generate(fb, tmp_path / "off", cmsis_nn=False)
    assert "TFC_USE_CMSIS_NN" not in (tmp_path / "off" / "model.c").read_text()
    assert off.arena_bytes < on.arena_bytes  # no im2col scratch
