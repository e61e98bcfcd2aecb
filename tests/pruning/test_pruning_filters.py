"""FilterPruning: mask placement, ranking against numpy, coupling, zeroing, checkpoints,
TensorBoard, sparsity report and the errors."""

import numpy as np
import pytest
from pruning_models import MODELS, residual_cnn, sequential_cnn

import tfcompress  # noqa: F401
from tfcompress._keras import keras, tf
from tfcompress.errors import PruningError
from tfcompress.pruning import (
    ConstantSparsity, FilterMask, FilterPruning, PolynomialDecay, add_filter_masks,
    filter_masks, plot_sparsity, shrink, sparsity_report,
)


def train(model, pruner, data, batches=8, batch_size=32, epochs=1, callbacks=()):
    (x, y), _ = data
    logits = not isinstance(model.layers[-1], keras.layers.Softmax)
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=logits))
    n = batches * batch_size
    model.fit(x[:n], y[:n], batch_size=batch_size, epochs=epochs, verbose=0,
              callbacks=[pruner, *callbacks])
    return model


def test_masks_sit_after_the_bn_chain_and_never_on_the_classifier():
    masked = add_filter_masks(sequential_cnn())
    names = [layer.name for layer in masked.layers]
    # conv -> BN -> ReLU -> mask; conv(relu) -> mask; dense(relu) -> dropout -> mask
    assert names.index("conv2d_filter_mask") == names.index("re_lu") + 1
    assert names.index("conv2d_1_filter_mask") == names.index("conv2d_1") + 1
    assert names.index("dense_filter_mask") == names.index("dropout") + 1
    assert set(filter_masks(masked)) == {"conv2d", "conv2d_1", "dense"}   # not dense_1
    # Masks of ones leave the function unchanged; the weights were copied.
    x = np.random.default_rng(0).normal(size=(4, 28, 28, 1)).astype("float32")
    model = sequential_cnn()
    masked = add_filter_masks(model)
    np.testing.assert_allclose(masked.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-6)


def test_l1_and_l2_rank_filters_like_numpy():
    model = keras.Sequential([keras.Input((6, 6, 3)), keras.layers.Conv2D(10, 3),
                              keras.layers.Flatten(), keras.layers.Dense(4)])
    rng = np.random.default_rng(1)
    kernel = rng.normal(size=(3, 3, 3, 10)).astype("float32")
    # Filter 7 has a large L1 but small L2 norm (many small weights) vs filter 2 (one spike).
    kernel[..., 7] = 0.9
    kernel[..., 2] = 0.0
    kernel[0, 0, 0, 2] = 15.0
    model.layers[0].set_weights([kernel, np.zeros(10, "float32")])
    chosen = {}
    for method, norm in (("l1", lambda k: np.abs(k).sum((0, 1, 2))),
                         ("l2", lambda k: np.sqrt((k ** 2).sum((0, 1, 2))))):
        pruner = FilterPruning(0.3, method=method)
        masked = pruner.prepare(model)
        pruner.set_model(masked)
        pruner.update_masks(0.3)
        expected = np.ones(10, "float32")
        expected[np.argsort(norm(kernel))[:3]] = 0
        chosen[method] = filter_masks(masked)["conv2d"].mask.numpy()
        np.testing.assert_array_equal(chosen[method], expected)
        # Zeroed in the weights as well.
        k = masked.get_layer("conv2d").kernel.numpy()
        assert (np.abs(k).sum((0, 1, 2)) == 0).sum() == 3
    assert chosen["l1"][2] == 0 and chosen["l2"][2] == 1      # one spike: small L1, big L2


def test_schedule_drives_the_fraction_of_masked_filters(mnist_small):
    sched = PolynomialDecay(0.0, 0.75, begin_step=0, end_step=8, frequency=4)
    pruner = FilterPruning(0.75, schedule=sched)
    seen = []

    class Probe(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(pruner.sparsity()["conv2d_1"])

    model = pruner.prepare(sequential_cnn())
    train(model, pruner, mnist_small, batches=12, callbacks=[Probe()])
    n = 16
    at4 = round(sched(4)[1] * n) / n
    assert seen == [0.0] * 3 + [at4] * 4 + [0.75] * 5
    assert pruner.step == 12
    # Masked filters keep exactly zero weights (kernel, bias) after training.
    mask = filter_masks(model)["conv2d_1"].mask.numpy()
    k, b = model.get_layer("conv2d_1").get_weights()
    assert np.all(k[..., mask == 0] == 0) and np.all(b[mask == 0] == 0)
    assert np.all(np.abs(k[..., mask == 1]).sum((0, 1, 2)) > 0)
    # The chain BN of the first conv is zeroed too.
    mask0 = filter_masks(model)["conv2d"].mask.numpy()
    gamma, beta = model.get_layer("batch_normalization").get_weights()[:2]
    assert np.all(gamma[mask0 == 0] == 0) and np.all(beta[mask0 == 0] == 0)


def test_residual_branches_share_one_mask(mnist_small):
    pruner = FilterPruning(0.5, schedule=ConstantSparsity(0.5, frequency=2))
    model = pruner.prepare(residual_cnn(preact_bn=True))
    train(model, pruner, mnist_small, batches=4)
    masks = {k: v.mask.numpy() for k, v in filter_masks(model).items()}
    np.testing.assert_array_equal(masks["stem"], masks["b1_c2"])            # add1
    np.testing.assert_array_equal(masks["b2_proj"], masks["b2_c2"])         # add2
    assert masks["stem"].sum() == 8 and masks["b2_c1"].sum() == 16
    # The BN after add1 (outside any mask chain) has zero gamma/beta on pruned channels,
    # so the pruned channels stay exactly 0 after it.
    gamma, beta = model.get_layer("post_add_bn").get_weights()[:2]
    assert np.all(gamma[masks["stem"] == 0] == 0) and np.all(beta[masks["stem"] == 0] == 0)
    probe = keras.Model(model.inputs, model.get_layer("post_add_bn").output)
    out = probe.predict(mnist_small[1][0][:8], verbose=0)
    assert np.all(out[..., masks["stem"] == 0] == 0)


def test_masks_and_step_survive_model_checkpoint(mnist_small, tmp_path):
    sched = PolynomialDecay(0.0, 0.5, begin_step=0, end_step=16, frequency=4)
    pruner = FilterPruning(0.5, schedule=sched)
    model = pruner.prepare(sequential_cnn())
    ckpt = keras.callbacks.ModelCheckpoint(str(tmp_path / "ckpt.keras"))
    with pytest.warns(UserWarning, match="before reaching target sparsity 0.5"):
        train(model, pruner, mnist_small, batches=6, callbacks=[ckpt])
    masks = {k: v.mask.numpy() for k, v in filter_masks(model).items()}
    reloaded = keras.models.load_model(tmp_path / "ckpt.keras")
    again = {k: v.mask.numpy() for k, v in filter_masks(reloaded).items()}
    assert masks.keys() == again.keys()
    for k in masks:
        np.testing.assert_array_equal(masks[k], again[k])
    assert int(filter_masks(reloaded)["conv2d"].pruning_step.numpy()) == 6
    # Resuming with a new callback continues the schedule at step 7.
    resumed = FilterPruning(0.5, schedule=sched)
    steps = []

    class Probe(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            steps.append(resumed.step + 1)

    (x, y), _ = mnist_small
    reloaded.fit(x[:320], y[:320], batch_size=32, verbose=0, callbacks=[Probe(), resumed])
    assert steps[0] == 7 and resumed.step == 16
    assert resumed.sparsity()["conv2d_1"] == 0.5
    # Also with weights-only checkpoints in a freshly prepared model.
    model.save_weights(tmp_path / "w.h5")
    fresh = FilterPruning(0.5).prepare(sequential_cnn())
    fresh.load_weights(tmp_path / "w.h5")
    for got, want in zip(filter_masks(fresh).values(), masks.values()):
        np.testing.assert_array_equal(got.mask.numpy(), want)


def test_tensorboard_scalars_and_sparsity_report(mnist_small, tmp_path):
    pruner = FilterPruning(0.5, schedule=ConstantSparsity(0.5, frequency=2),
                           log_dir=tmp_path / "tb")
    model = pruner.prepare(sequential_cnn())
    train(model, pruner, mnist_small, batches=4, epochs=2)
    files = list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert files
    tags = {}
    for rec in tf.data.TFRecordDataset([str(f) for f in files]):
        ev = tf.compat.v1.Event.FromString(rec.numpy())
        for v in ev.summary.value:
            tags.setdefault(v.tag, []).append((ev.step, float(tf.make_ndarray(v.tensor))))
    assert tags["filter_sparsity/conv2d_1"] == [(4, 0.5), (8, 0.5)]
    assert "filter_sparsity/mean" in tags
    rows = {r["layer"]: r for r in sparsity_report(model)}
    assert rows["conv2d_1"]["pruned_filters"] == 8 and rows["conv2d_1"]["filter_sparsity"] == 0.5
    k = model.get_layer("conv2d_1").kernel.numpy()
    assert rows["conv2d_1"]["weight_sparsity"] == pytest.approx((k == 0).mean())
    assert rows["dense_1"]["filter_sparsity"] == 0.0
    png = plot_sparsity(model, tmp_path / "sparsity.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_clear_errors(mnist_small):
    for bad in (-0.1, 1.0, 2):
        with pytest.raises(PruningError, match=r"\[0, 1\)"):
            FilterPruning(bad)
    with pytest.raises(PruningError, match="Unknown filter pruning method"):
        FilterPruning(0.5, method="taylor")
    with pytest.raises(PruningError, match="ends at sparsity"):
        FilterPruning(0.5, schedule=ConstantSparsity(0.3))
    only_head = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    with pytest.raises(PruningError, match="no prunable layers.*model output"):
        add_filter_masks(only_head)
    no_conv = keras.Sequential([keras.Input((8,)), keras.layers.Softmax()])
    with pytest.raises(PruningError, match="no prunable layers"):
        add_filter_masks(no_conv)
    with pytest.raises(PruningError, match="reshape"):
        add_filter_masks(keras.Sequential([
            keras.Input((4, 4, 1)), keras.layers.Conv2D(4, 1, name="c"),
            keras.layers.Reshape((4, 16)), keras.layers.Flatten(), keras.layers.Dense(2)]),
            layers=["c"])
    # Forgetting prepare(): clear error when training starts.
    pruner = FilterPruning(0.5)
    with pytest.raises(PruningError, match="pruner.prepare"):
        train(sequential_cnn(), pruner, mnist_small, batches=1)
    # Shrinking a model the callback never ran on.
    with pytest.raises(PruningError, match="never ran"):
        shrink(FilterPruning(0.5).prepare(sequential_cnn()))
    with pytest.raises(PruningError, match="no filter masks"):
        shrink(sequential_cnn())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_prepare_keeps_the_function(name):
    model = MODELS[name]()
    masked = add_filter_masks(model)
    assert all(isinstance(m, FilterMask) for m in filter_masks(masked).values())
    x = np.random.default_rng(0).normal(size=(3, 28, 28, 1)).astype("float32")
    np.testing.assert_allclose(masked.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-5)
