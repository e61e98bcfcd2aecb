"""End to end: the quickstart's binary and int8 MNIST models and a binary CIFAR-10 model from
``tfcompress.models`` -> C -> host build (against the reference interpreters on real test
images) -> Cortex-M4 build run in QEMU (mps2-an386) on 100 real test images, outputs identical
to the host build. The int8 model runs through CMSIS-NN on the emulated core.

Training is a short run (the identity checks do not need accurate models; the benchmark,
tools/bench_mcu.py, trains them properly).
"""

import numpy as np
import pytest

from tfcompress.codegen import cortexm

pytestmark = pytest.mark.slow

QEMU_IMAGES = 100


def _need_toolchain():
    ok, why = cortexm.toolchain_available()
    if not ok:
        pytest.skip(why)


@pytest.fixture(scope="module")
def mnist_results(mnist_small):
    from tfcompress._keras import keras
    from tfcompress.conversion import convert
    from tfcompress.quickstart import _train, build_cnn

    (x, y), _ = mnist_small
    keras.utils.set_random_seed(0)
    fmodel = build_cnn("float")
    _train(fmodel, x, y, 1, 2e-3, 128, 0)
    bmodel = build_cnn("binary")
    _train(bmodel, x, y, 1, 5e-3, 128, 0)
    return {
        "int8": convert(fmodel, target="int8", representative_data=x[:200]),
        "binary": convert(bmodel, target="lce"),
    }


def _qemu_identical(lib, x, cmsis_nn):
    res = lib.run_qemu(x, cpu="cortex-m4", cmsis_nn=cmsis_nn, icount=False)
    host = lib.host(cmsis_nn=cmsis_nn).run_raw(lib.quantize(x))
    assert res.outputs.shape == host.shape == (len(x), int(np.prod(lib.output["shape"])))
    np.testing.assert_array_equal(res.outputs, host, err_msg="QEMU Cortex-M4 != host build")
    return res


def test_mnist_binary_to_cortex_m4(mnist_results, mnist_small, tmp_path):
    _need_toolchain()
    (_, _), (xt, yt) = mnist_small
    lib = mnist_results["binary"].to_c(tmp_path / "bnn", cpu="cortex-m4")
    rep = lib.verify(xt[:300], yt[:300])  # host build vs LCE's interpreter
    assert rep.runtime == "lce" and rep.agreement == 1.0 and rep.max_rel_diff <= 1e-5, rep
    assert rep.accuracy == rep.reference_accuracy
    assert lib.arena_bytes < 26 * 26 * 64 * 4, "the float first layer must be streamed"
    assert 0 < lib.flash_bytes < len(mnist_results["binary"].flatbuffer) * 1.2
    assert lib.ram_bytes >= lib.arena_bytes
    _qemu_identical(lib, xt[:QEMU_IMAGES], cmsis_nn=False)


def test_mnist_int8_cmsis_nn_to_cortex_m4(mnist_results, mnist_small, tmp_path):
    _need_toolchain()
    (_, _), (xt, yt) = mnist_small
    lib = mnist_results["int8"].to_c(tmp_path / "int8", cpu="cortex-m4", cmsis_nn=True)
    rep = lib.verify(xt[:100], yt[:100], cmsis_nn=False)  # portable host build vs litert
    assert rep.identical == 1.0, rep
    rep = lib.verify(xt[:100], yt[:100], cmsis_nn=True)  # CMSIS-NN host build vs litert
    assert rep.identical == 1.0, rep
    res = _qemu_identical(lib, xt[:QEMU_IMAGES], cmsis_nn=True)
    portable = lib.host(cmsis_nn=False).run_raw(lib.quantize(xt[:QEMU_IMAGES]))
    np.testing.assert_array_equal(res.outputs, portable)


def test_cifar10_binary_zoo_model_to_cortex_m4(tmp_path):
    _need_toolchain()
    from tfcompress.conversion import convert
    from tfcompress.data import load
    from tfcompress.data.preprocess import for_model
    from tfcompress.models import BiRealNet

    (_, _), (xt, yt) = load("cifar10")
    xt = for_model("cifar10", xt[:QEMU_IMAGES])
    model = BiRealNet(input_shape=(32, 32, 3), num_classes=10, depth=10, width=8)
    result = convert(model, target="lce")
    lib = result.to_c(tmp_path / "cifar", cpu="cortex-m4")
    rep = lib.verify(xt, yt[:QEMU_IMAGES])
    assert rep.runtime == "lce" and rep.max_rel_diff <= 1e-5 and rep.agreement == 1.0, rep
    _qemu_identical(lib, xt, cmsis_nn=False)
