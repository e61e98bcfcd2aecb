"""Conv3D channel pruning in a small multi-view-stereo network (card 5.5): a 2-D feature
extractor per view, a variance cost volume, a 3-D regularizer; shrink == masked model."""

import numpy as np
import pytest

import tfcompress  # noqa: F401
from tfcompress._keras import keras
from tfcompress.errors import PruningError
from tfcompress.pruning import (
    ConstantSparsity, FilterPruning, MixedBackpropPruning, add_filter_masks, filter_masks,
    layer_macs, select_module, shrink, variance_cost_volume,
)

L = keras.layers
D, H, W = 3, 6, 8


def extractor(x, p):
    x = L.ReLU()(L.BatchNormalization(name=f"{p}_bn1")(L.Conv2D(8, 3, padding="same",
                                                                 name=f"{p}_c1")(x)))
    return L.ReLU()(L.BatchNormalization(name=f"{p}_bn2")(L.Conv2D(8, 3, padding="same",
                                                                    name=f"{p}_c2")(x)))


def mvs_model():
    left, right = keras.Input((H, W, 3), name="left"), keras.Input((H, W, 3), name="right")
    vol = variance_cost_volume([extractor(left, "l"), extractor(right, "r")], D)
    h = L.ReLU()(L.BatchNormalization(name="bn3d1")(L.Conv3D(8, 3, padding="same",
                                                               name="reg1")(vol)))
    h = L.MaxPooling3D((1, 2, 2), padding="same")(h)
    h = L.UpSampling3D((1, 2, 2))(h)
    h = L.ReLU()(L.BatchNormalization(name="bn3d2")(L.Conv3D(6, 3, padding="same",
                                                               name="reg2")(h)))
    h = L.Conv3D(1, 3, padding="same", name="prob")(h)
    p = L.Softmax(axis=1)(L.Reshape((D, H, W))(h))          # depth probabilities
    return keras.Model([left, right], p, name="mvs")


def data(n, seed=0):
    rng = np.random.default_rng(seed)
    x = [rng.normal(size=(n, H, W, 3)).astype("float32") for _ in range(2)]
    y = rng.dirichlet(np.ones(D), size=(n, H, W)).transpose(0, 3, 1, 2).astype("float32")
    return x, y


def fit(model, pruner, batches=3):
    x, y = data(8 * batches)
    model.compile(keras.optimizers.SGD(0.05), "mse")
    model.fit(x, y, batch_size=8, verbose=0, callbacks=[pruner])
    return model


def test_variance_cost_volume_matches_numpy():
    a, b = keras.Input((H, W, 2)), keras.Input((H, W, 2))
    model = keras.Model([a, b], variance_cost_volume([a, b], D))
    rng = np.random.default_rng(1)
    fa, fb = rng.normal(size=(2, 2, H, W, 2)).astype("float32")
    got = model.predict([fa, fb], verbose=0)
    assert got.shape == (2, D, H, W, 2)
    for d in range(D):
        shifted = np.zeros_like(fb)
        shifted[:, :, d:] = fb[:, :, :W - d]
        np.testing.assert_allclose(got[:, d], np.var(np.stack([fa, shifted]), axis=0),
                                   atol=1e-5)
    with pytest.raises(ValueError, match="image width"):
        variance_cost_volume([a, b], W + 1)


def test_conv3d_shrink_equals_masked_model():
    pruner = FilterPruning(0.5, schedule=ConstantSparsity(0.5, frequency=1))
    masked = fit(pruner.prepare(mvs_model()), pruner)
    masks = filter_masks(masked)
    # Every 2-D and 3-D conv but the output one is masked; the two views' last 2-D convs are
    # coupled through the variance volume (one component per channel).
    assert set(masks) == {"l_c1", "l_c2", "r_c1", "r_c2", "reg1", "reg2"}
    np.testing.assert_array_equal(masks["l_c2"].mask.numpy(), masks["r_c2"].mask.numpy())
    assert all((m.mask.numpy() == 0).sum() == m.channels // 2 for m in masks.values())
    small = shrink(masked)
    x, _ = data(4, seed=3)
    np.testing.assert_allclose(small.predict(x, verbose=0), masked.predict(x, verbose=0),
                               atol=1e-4)
    keep = {o: np.flatnonzero(m.mask.numpy()) for o, m in masks.items()}
    # Conv3D kernels (kd, kh, kw, in, out): input rows follow the volume's kept channels.
    np.testing.assert_array_equal(
        small.get_layer("reg1").kernel.numpy(),
        masked.get_layer("reg1").kernel.numpy()[:, :, :, keep["l_c2"]][..., keep["reg1"]])
    np.testing.assert_array_equal(small.get_layer("bn3d2").gamma.numpy(),
                                  masked.get_layer("bn3d2").gamma.numpy()[keep["reg2"]])
    assert small.get_layer("cost_volume_v1_d2").target_shape == (1, H, W, 4)
    macs = {n: layer_macs(small.get_layer(n)) / layer_macs(masked.get_layer(n))
            for n in ("reg1", "reg2", "prob")}
    assert macs == {"reg1": 0.25, "reg2": 0.25, "prob": 0.5}


def test_layers_that_mix_channels_are_named():
    inp = keras.Input((H, W, 3))
    f = L.Conv2D(4, 3, padding="same", name="feat")(inp)
    vol = L.Concatenate(axis=1)([L.Reshape((1, H, W, 4))(f)] * 2)
    folded = L.Reshape((H, W, 2 * 4), name="fold_depth")(vol)        # depth into channels
    out = L.GlobalAveragePooling2D()(L.Conv2D(2, 1, name="head")(folded))
    with pytest.raises(PruningError, match="'feat'.*'fold_depth' \\(Reshape\\)"):
        add_filter_masks(keras.Model(inp, out), layers=["feat"])
    warp = L.Lambda(lambda t: t[:, :, ::-1], name="warp")(f)
    out = L.GlobalAveragePooling2D()(L.Conv2D(2, 1)(warp))
    with pytest.raises(PruningError, match="'warp' \\(Lambda\\)"):
        add_filter_masks(keras.Model(inp, out), layers=["feat"])


def test_mixed_backprop_warms_up_then_zeroes_masks_by_fista():
    pruner = MixedBackpropPruning(0.25, schedule=ConstantSparsity(0.25, begin_step=6,
                                                                  frequency=100),
                                  l1_penalty=30.0, step_size=0.01, warmup_steps=2,
                                  exclude=("reg1", "reg2"))
    masked = pruner.prepare(mvs_model())
    masks = filter_masks(masked)
    assert set(masks) == {"l_c1", "l_c2", "r_c1", "r_c2"}
    rng = np.random.default_rng(4)
    for m in masks.values():
        m.scale.assign(rng.uniform(0.2, 2.0, m.channels).astype("float32"))
    start = {o: m.scale.numpy().copy() for o, m in masks.items()}
    seen = []

    class Probe(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append({o: m.scale.numpy().copy() for o, m in masks.items()})

    x, y = data(48)
    masked.compile(keras.optimizers.SGD(0.01), "mse")
    masked.fit(x, y, batch_size=8, verbose=0, callbacks=[pruner, Probe()])
    for o in masks:
        # Warm-up (steps 1-2): back-propagation moves the masks a little, no shrinkage.
        np.testing.assert_allclose(seen[1][o], start[o], atol=0.05)
        # Step 3: the first proximal step, soft-thresholding by eta * lambda = 0.3.
        np.testing.assert_allclose(seen[2][o], np.maximum(seen[1][o] - 0.3, 0), atol=0.05)
        assert (seen[-1][o] == 0).any() and (seen[-1][o] != 0).any(), seen[-1][o]
    assert pruner.criterion.get_config()["warmup_steps"] == 2
    small = shrink(masked)
    assert small.get_layer("l_c1").filters == int((seen[-1]["l_c1"] != 0).sum())
    xt, _ = data(4, seed=5)
    np.testing.assert_allclose(small.predict(xt, verbose=0), masked.predict(xt, verbose=0),
                               atol=1e-4)
    with pytest.raises(PruningError, match="warmup_steps"):
        MixedBackpropPruning(0.5, warmup_steps=-1)


def test_select_module_keeps_one_branch_of_a_multiscale_regularizer():
    inp = keras.Input((D, H, W, 4))
    fine = L.Conv3D(1, 3, padding="same", name="fine")(L.Conv3D(4, 3, padding="same")(inp))
    coarse = L.UpSampling3D((1, 2, 2))(L.Conv3D(1, 3, padding="same")(
        L.AveragePooling3D((1, 2, 2))(inp)))
    both = L.Average(name="fused")([fine, coarse])
    model = keras.Model(inp, both)
    one = select_module(model, "fine")
    x = np.random.default_rng(2).normal(size=(2, D, H, W, 4)).astype("float32")
    ref = keras.Model(inp, model.get_layer("fine").output).predict(x, verbose=0)
    np.testing.assert_allclose(one.predict(x, verbose=0), ref, atol=1e-6)
    assert one.count_params() < model.count_params()
    assert all(w is not v for w, v in zip(one.weights, model.weights))
    with pytest.raises(PruningError, match="no layer 'nope'"):
        select_module(model, "nope")


def test_shrink_refuses_a_layer_whose_masks_are_all_zero():
    masked = add_filter_masks(mvs_model(), layers=["reg1"], soft=True)
    m = filter_masks(masked)["reg1"]
    m.set_weights([np.ones(8, "float32"), np.zeros(8, "float32"), np.int64(1)])
    with pytest.raises(PruningError, match="Every filter of layer 'reg1'"):
        shrink(masked)
