"""Layer contracts: Keras signatures, strict config round trips, save/load in a fresh process."""

import inspect
import json
import os
import subprocess
import sys
import textwrap

import larq as lq
import numpy as np
import pytest

import tfcompress  # noqa: F401
from tfcompress._keras import keras
from tfcompress.pruning import FilterMask, PrunableQuantConv2D, PrunableQuantDense


@pytest.mark.parametrize("ours, base", [(PrunableQuantConv2D, lq.layers.QuantConv2D),
                                        (PrunableQuantDense, lq.layers.QuantDense)])
def test_prunable_layers_keep_larqs_signature(ours, base):
    assert inspect.signature(ours) == inspect.signature(base)
    layer = ours(4, **({"kernel_size": 3} if ours is PrunableQuantConv2D else {}),
                 kernel_quantizer="ste_sign", input_quantizer="ste_sign")
    layer.build((None, 8, 8, 2) if ours is PrunableQuantConv2D else (None, 6))
    assert layer.get_prunable_weights() == [layer.kernel]


@pytest.mark.parametrize("make", [
    lambda: FilterMask(target="conv", soft=True, name="m"),
    lambda: FilterMask(target="dense"),
    lambda: PrunableQuantConv2D(4, 3, kernel_quantizer="ste_sign", padding="same"),
    lambda: PrunableQuantDense(5, kernel_quantizer="ste_sign", input_quantizer="ste_sign"),
])
def test_config_round_trip_is_strict(make):
    layer = make()
    cfg = layer.get_config()
    again = type(layer).from_config(json.loads(json.dumps(cfg)))
    assert json.dumps(again.get_config(), sort_keys=True) == json.dumps(cfg, sort_keys=True)
    ser = keras.layers.serialize(layer)
    assert keras.layers.deserialize(json.loads(json.dumps(ser))).get_config() == cfg


def test_filter_mask_multiplies_channels():
    layer = FilterMask(target="x", soft=True)
    x = np.random.default_rng(0).normal(size=(2, 3, 3, 4)).astype("float32")
    layer.build(x.shape)
    layer.set_weights([np.array([1, 0, 1, 1], "float32"),
                       np.array([2.0, 5.0, -1.0, 0.5], "float32"), np.int64(3)])
    np.testing.assert_allclose(layer(x).numpy(), x * np.array([2.0, 0.0, -1.0, 0.5]))
    with pytest.raises(ValueError, match="name of the layer"):
        FilterMask(target="")


def test_save_and_load_in_a_fresh_process(tmp_path):
    model = keras.Sequential([
        keras.Input((8, 8, 1)), PrunableQuantConv2D(4, 3, kernel_quantizer="ste_sign"),
        FilterMask(target="prunable_quant_conv2d", soft=True), keras.layers.Flatten(),
        keras.layers.Dense(3)])
    model.layers[1].set_weights([np.array([1, 0, 1, 1], "float32"),
                                 np.array([0.5, 1.0, 2.0, 1.0], "float32"), np.int64(7)])
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 1)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", model.predict(x, verbose=0))
    model.save(tmp_path / "m.keras")
    script = textwrap.dedent(f"""
        import numpy as np
        import tfcompress.pruning
        from tfcompress._keras import keras
        m = keras.models.load_model({str(tmp_path / "m.keras")!r})
        got = m.predict(np.load({str(tmp_path / "x.npy")!r}), verbose=0)
        assert np.abs(got - np.load({str(tmp_path / "y.npy")!r})).max() < 1e-6
        assert int(m.layers[1].pruning_step.numpy()) == 7
        print("OK")
    """)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-2000:]
