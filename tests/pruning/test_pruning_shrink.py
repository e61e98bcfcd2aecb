"""shrink(): the rebuilt model computes what the masked model computes, with fewer filters,
and runs int8 in ai-edge-litert."""

import numpy as np
import pytest
from pruning_models import MODELS, residual_cnn, sequential_cnn

import tfcompress
from tfcompress._keras import keras
from tfcompress.errors import PruningError
from tfcompress.pruning import (
    ConstantSparsity, FilterMask, FilterPruning, add_filter_masks, count_macs, filter_masks,
    shrink,
)


def pruned(name, data, sparsity=0.5, batches=6):
    (x, y), _ = data
    model = MODELS[name]()
    pruner = FilterPruning(sparsity, schedule=ConstantSparsity(sparsity, frequency=2))
    masked = pruner.prepare(model)
    logits = not isinstance(masked.layers[-1], keras.layers.Softmax)
    masked.compile(keras.optimizers.Adam(1e-3),
                   keras.losses.SparseCategoricalCrossentropy(from_logits=logits))
    masked.fit(x[:32 * batches], y[:32 * batches], batch_size=32, verbose=0, callbacks=[pruner])
    return masked


@pytest.mark.parametrize("name", sorted(MODELS))
def test_shrunk_model_equals_masked_model(name, mnist_small):
    masked = pruned(name, mnist_small)
    small = shrink(masked)
    xt = mnist_small[1][0][:64]
    ref = masked.predict(xt, verbose=0)
    got = small.predict(xt, verbose=0)
    assert np.abs(ref - got).max() <= 1e-4
    assert not any(isinstance(layer, FilterMask) for layer in small.layers)
    assert isinstance(small, keras.Sequential) == (name == "sequential")
    for owner, m in filter_masks(masked).items():
        kept = int((m.mask.numpy() != 0).sum())
        layer = small.get_layer(owner)
        assert getattr(layer, "filters", None) or layer.units
        assert (layer.filters if hasattr(layer, "filters") else layer.units) == kept, owner
    assert count_macs(small) < 0.6 * count_macs(masked)
    # An ordinary model: saves and reloads without tfcompress objects.
    assert "FilterMask" not in small.to_json()


def test_flatten_dense_rows_follow_the_kept_channels(mnist_small):
    masked = pruned("sequential", mnist_small)
    small = shrink(masked)
    keep = np.flatnonzero(filter_masks(masked)["conv2d_1"].mask.numpy())
    w = masked.get_layer("dense").kernel.numpy()                   # (5*5*16, 32)
    keep_units = np.flatnonzero(filter_masks(masked)["dense"].mask.numpy())
    rows = (np.arange(25)[:, None] * 16 + keep[None, :]).ravel()   # index p*C + c
    np.testing.assert_array_equal(small.get_layer("dense").kernel.numpy(),
                                  w[rows][:, keep_units])


def test_concat_and_depthwise_slicing(mnist_small):
    masked = pruned("concat", mnist_small)
    small = shrink(masked)
    ka = np.flatnonzero(filter_masks(masked)["branch_a"].mask.numpy())
    kb = np.flatnonzero(filter_masks(masked)["branch_b"].mask.numpy())
    concat_keep = np.concatenate([ka, 8 + kb])
    dw = masked.get_layer("dw").depthwise_kernel.numpy()
    np.testing.assert_array_equal(small.get_layer("dw").depthwise_kernel.numpy(),
                                  dw[:, :, concat_keep])
    head = masked.get_layer("head").kernel.numpy()
    rows = np.repeat(concat_keep, 2) * 2 + np.tile([0, 1], len(concat_keep))   # c*m + k
    keep_head = np.flatnonzero(filter_masks(masked)["head"].mask.numpy())
    np.testing.assert_array_equal(small.get_layer("head").kernel.numpy(),
                                  head[:, :, rows][..., keep_head])


def test_union_of_branch_masks_keeps_a_sliced_mask():
    """Masks set by hand so the two branches of an Add disagree: the union is kept and the
    branch that masked a kept channel keeps a (sliced) FilterMask, so outputs still agree."""
    masked = add_filter_masks(residual_cnn())
    masks = filter_masks(masked)
    a = np.ones(16, "float32")
    a[:6] = 0
    b = np.ones(16, "float32")
    b[3:9] = 0
    for owner, m in masks.items():
        m.pruning_step.assign(1)
    masks["stem"].mask.assign(a)
    masks["b1_c2"].mask.assign(b)
    small = shrink(masked)
    x = np.random.default_rng(0).normal(size=(4, 28, 28, 1)).astype("float32")
    np.testing.assert_allclose(small.predict(x, verbose=0), masked.predict(x, verbose=0),
                               atol=1e-4)
    union = np.flatnonzero((a != 0) | (b != 0))                      # channels 3..15
    assert small.get_layer("stem").filters == small.get_layer("b1_c2").filters == len(union)
    left = {layer.target: layer for layer in small.layers if isinstance(layer, FilterMask)}
    assert set(left) == {"stem", "b1_c2"}
    np.testing.assert_array_equal(left["stem"].mask.numpy(), a[union])


def test_soft_masks_fold_into_batchnorm():
    masked = add_filter_masks(residual_cnn(), soft=True)
    rng = np.random.default_rng(2)
    for m in filter_masks(masked).values():
        m.pruning_step.assign(1)
        scale = rng.uniform(0.3, 2.0, m.channels).astype("float32")
        mask = (rng.random(m.channels) > 0.3).astype("float32")
        m.set_weights([mask, scale, np.int64(1)])
    # Coupled masks must agree for a clean fold; make the Add partners equal.
    fm = filter_masks(masked)
    for a, b in (("stem", "b1_c2"), ("b2_proj", "b2_c2")):
        fm[b].set_weights(fm[a].get_weights())
    small = shrink(masked)
    x = rng.normal(size=(4, 28, 28, 1)).astype("float32")
    np.testing.assert_allclose(small.predict(x, verbose=0), masked.predict(x, verbose=0),
                               atol=1e-4)
    assert not any(isinstance(layer, FilterMask) for layer in small.layers)


def test_shrunk_int8_model_runs_in_litert_and_is_smaller(mnist_small):
    (x, _), (xt, yt) = mnist_small
    masked = pruned("concat", mnist_small, batches=10)
    small = shrink(masked)
    res = tfcompress.convert(small, target="int8", representative_data=x[:100])
    rep = res.verify(xt[:100], yt[:100], latency_runs=3)
    # int8 quantization moves logits by a few quantization steps; the argmax agrees.
    assert rep.runtime == "litert" and rep.agreement >= 0.95, rep
    assert rep.max_abs_diff < 0.1 * np.abs(small.predict(xt[:100], verbose=0)).max() + 0.05
    dense = tfcompress.convert(masked, target="int8", representative_data=x[:100])
    # Half the filters of a tiny model: weights shrink ~2-4x, the flatbuffer's fixed
    # overhead (~5 KB of graph and tensor tables) does not.
    assert res.size < 0.75 * dense.size, (res.size, dense.size)


def test_graphs_it_cannot_shrink_name_the_layer():
    shared = keras.layers.Conv2D(4, 3, padding="same", name="shared_conv")
    i = keras.Input((8, 8, 4))
    model = keras.Model(i, keras.layers.Flatten()(shared(shared(i))))
    with pytest.raises(PruningError, match="shared_conv"):
        add_filter_masks(model)
    inner = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3)], name="inner")
    j = keras.Input((8, 8, 1))
    nested = keras.Model(j, keras.layers.Flatten()(inner(j)))
    with pytest.raises(PruningError, match="inner.*nested"):
        shrink(nested)


def test_shrink_keeps_sequential_io_and_config(mnist_small):
    masked = pruned("sequential", mnist_small)
    small = shrink(masked)
    again = keras.Sequential.from_config(small.get_config())
    again.set_weights(small.get_weights())
    xt = mnist_small[1][0][:8]
    np.testing.assert_allclose(again.predict(xt, verbose=0), small.predict(xt, verbose=0),
                               atol=1e-6)
    assert small.input_shape == sequential_cnn().input_shape
