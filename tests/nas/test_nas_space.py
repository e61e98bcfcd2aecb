"""The search space: ops, mixed-op weights, the supernet's split between weights and
architecture, gradients from their own data, op removal, checkpoints and bad input."""

import numpy as np
import pytest
from nas_helpers import SMALL_OPS, cifar8, tiny_space

from tfcompress._keras import keras, tf
from tfcompress.layers import QuantConv2D, QuantDepthwiseConv2D
from tfcompress.nas import DARTS, PRIMITIVES, DartsSpace, channel_shuffle, masked_softmax
from tfcompress.nas.ops import op_steps
from tfcompress.nas.supernet import MixedOp


def test_masked_softmax_matches_softmax_over_alive_ops(rng):
    logits = rng.normal(size=(5, 8)).astype(np.float32)
    mask = rng.random((5, 8)) < 0.6
    mask[:, 0] = True                                   # every edge keeps an op
    w = masked_softmax(logits, mask.astype(np.float32)).numpy()
    ref = np.where(mask, np.exp(logits), 0.0)
    ref /= ref.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(w, ref, rtol=1e-5, atol=1e-7)
    assert (w[~mask] == 0.0).all()                     # exactly zero, not tiny
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-6)


def test_supernet_mixing_weights_sum_to_one_and_removed_ops_are_zero():
    space = tiny_space()
    net = space.build((8, 8, 3), 4)
    alive = np.ones((space.num_edges, space.num_ops), bool)
    alive[:, SMALL_OPS.index("sep_conv_3x3")] = False
    alive[0, 0] = False
    net.set_alive("reduce", alive)
    for t in ("normal", "reduce"):
        w = net.mixing_weights(t)[0].numpy()
        np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-6)
        a = net.alpha(t).numpy()
        live = net.alive(t)
        ref = np.where(live, np.exp(a), 0) / np.where(live, np.exp(a), 0).sum(1, keepdims=True)
        np.testing.assert_allclose(w, ref, rtol=1e-5)
    assert (net.mixing_weights("reduce")[0].numpy()[~alive] == 0).all()


def test_channel_shuffle_is_the_pcdarts_permutation():
    x = np.arange(2 * 12, dtype=np.float32).reshape(1, 1, 2, 12)
    y = channel_shuffle(tf.constant(x), 4).numpy()
    # PyTorch: x.view(b, g, c/g, h, w).transpose(1, 2): channel i*(c/g)+j -> j*g+i
    ref = x.reshape(1, 1, 2, 4, 3).transpose(0, 1, 2, 4, 3).reshape(1, 1, 2, 12)
    np.testing.assert_array_equal(y, ref)


@pytest.mark.parametrize("partial", [1, 4])
def test_mixed_op_is_the_weighted_sum_of_its_ops(partial, rng):
    prims = ("skip_connect", "max_pool_3x3", "sep_conv_3x3")
    op = MixedOp(prims, 8, 1, "float", partial=partial, name="m")
    x = tf.constant(rng.normal(size=(2, 8, 8, 8)).astype(np.float32))
    w = tf.constant([0.2, 0.5, 0.3])
    y = op(x, w).numpy()
    xa = x[..., : 8 // partial]
    ref = sum(float(w[i]) * cand(xa).numpy() for i, cand in enumerate(op.candidates))
    if partial > 1:
        ref = channel_shuffle(tf.concat([ref, x[..., 8 // partial:]], -1), partial).numpy()
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)
    # with an op left out of the graph the sum skips it (its weight is 0 there)
    y2 = op(x, tf.constant([0.4, 0.6, 0.0]), include=[True, True, False]).numpy()
    ref2 = 0.4 * op.candidates[0](xa).numpy() + 0.6 * op.candidates[1](xa).numpy()
    if partial > 1:
        ref2 = channel_shuffle(tf.concat([ref2, x[..., 8 // partial:]], -1), partial).numpy()
    np.testing.assert_allclose(y2, ref2, rtol=1e-5, atol=1e-6)


def test_binary_ops_use_binary_larq_layers():
    sep = op_steps("sep_conv_3x3", 8, 1, "binary")
    assert [type(s) for s in sep] == [QuantDepthwiseConv2D, keras.layers.BatchNormalization,
                                      QuantConv2D, keras.layers.BatchNormalization]
    for layer in (sep[0], sep[2]):
        assert layer.input_quantizer.precision == 1
        q = getattr(layer, "depthwise_quantizer", None) or layer.kernel_quantizer
        assert q.precision == 1
    dil = op_steps("dil_conv_5x5", 8, 2, "binary")
    assert isinstance(dil[0], QuantConv2D) and dil[0].dilation_rate == (2, 2)
    assert dil[0].kernel_size == (5, 5)
    # stride-2 dilated conv = stride-1 dilated conv subsampled (Keras forbids both at once)
    assert isinstance(dil[1], keras.layers.MaxPooling2D) and dil[1].pool_size == (1, 1)


def test_supernet_shapes_reductions_and_arch_variables():
    space = DartsSpace(num_cells=3, channels=4, ops="float", nodes=2,
                       primitives=["skip_connect", "avg_pool_3x3"], partial_channels=2)
    net = space.build((8, 8, 3), 5)
    assert space.reduction_indices(3) == [1, 2]
    assert [c.reduction for c in net.cells] == [False, True, True]
    assert net(tf.zeros((2, 8, 8, 3))).shape == (2, 5)
    names = [v.name for v in space.arch_variables(net)]
    assert names == ["arch_alpha_normal:0", "arch_alpha_reduce:0", "arch_beta_normal:0",
                     "arch_beta_reduce:0"]
    trainable = {id(v) for v in net.trainable_variables}
    assert not any(id(v) in trainable for v in net.arch_variables + net.arch_state_variables)
    # the two cell types have their own, independently initialised parameters
    assert not np.allclose(net.alpha("normal").numpy(), net.alpha("reduce").numpy())
    assert np.abs(net.alpha("normal").numpy()).max() < 0.01      # 1e-3 * N(0, 1)


def test_fit_trains_weights_only_and_the_arch_step_trains_alpha_only():
    (x, y), (xv, yv) = cifar8()
    space = tiny_space()
    net = space.build((8, 8, 3), 4)
    alpha0 = [v.numpy().copy() for v in net.arch_variables]
    w0 = [v.numpy().copy() for v in net.trainable_variables]
    net.fit(x, y, batch_size=32, epochs=1, verbose=0)
    for v, a in zip(net.arch_variables, alpha0):
        np.testing.assert_array_equal(v.numpy(), a)         # fit never touches alpha
    changed = [not np.array_equal(v.numpy(), w) for v, w in zip(net.trainable_variables, w0)]
    assert sum(changed) > len(changed) // 2                  # the training loss reached the weights

    search = DARTS(space, (xv, yv), batch_size=16)
    search.set_model(net)
    alpha = net.alpha("reduce").numpy().copy()
    xb, yb = xv[:16], yv[:16]
    # reference: the gradient of the validation loss w.r.t. alpha, plus weight decay
    with tf.GradientTape() as tape:
        tape.watch(net.arch_variables)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
            yb, net(xb, training=True), from_logits=True))
    g = tape.gradient(loss, net.alpha("reduce")).numpy() + 1e-3 * alpha
    weights = [v.numpy().copy() for v in net.trainable_variables]
    search.arch_step(xb, yb)
    # first step of Keras' Adam (beta_2 = 0.999, epsilon = 1e-7 added to sqrt(v) before the
    # bias correction): alpha -= lr * g / (|g| + eps / sqrt(1 - beta_2))
    expected = alpha - 6e-4 * g / (np.abs(g) + 1e-7 / np.sqrt(1 - 0.999))
    np.testing.assert_allclose(net.alpha("reduce").numpy(), expected, rtol=1e-5, atol=1e-8)
    for v, w in zip(net.trainable_variables, weights):
        np.testing.assert_array_equal(v.numpy(), w)          # the arch step never touches weights


def test_removed_ops_get_no_updates_and_stale_masks_are_caught():
    (x, y), _ = cifar8()
    space = tiny_space()
    net = space.build((8, 8, 3), 4)
    alive = np.ones((space.num_edges, space.num_ops), bool)
    alive[:, SMALL_OPS.index("sep_conv_3x3")] = False
    net.set_alive("reduce", alive)
    conv = [v for v in net.trainable_variables if "sep_conv" in v.name]
    other = [v for v in net.trainable_variables if "pre1_conv" in v.name]
    before = [v.numpy().copy() for v in conv + other]
    net.fit(x, y, batch_size=32, epochs=1, verbose=0)
    for v, b in zip(conv, before):
        np.testing.assert_array_equal(v.numpy(), b)
    assert not np.array_equal(other[0].numpy(), before[len(conv)])
    # switching an op back on behind the supernet's back is refused with a clear message
    net._alive["reduce"].assign(np.ones_like(alive, np.float32))
    with pytest.raises(tf.errors.InvalidArgumentError, match="switched back on"):
        net.fit(x, y, batch_size=32, epochs=1, verbose=0)
    net.refresh()
    net.fit(x, y, batch_size=32, epochs=1, verbose=0)


def test_architecture_survives_a_checkpoint(tmp_path):
    space = tiny_space()
    net = space.build((8, 8, 3), 4)
    alive = np.ones((space.num_edges, space.num_ops), bool)
    alive[1:, 2] = False
    net.set_alive("reduce", alive)
    net.alpha("reduce").assign(np.arange(net.alpha("reduce").numpy().size, dtype=np.float32)
                               .reshape(space.num_edges, space.num_ops))
    net.save_weights(str(tmp_path / "ckpt"))
    other = space.build((8, 8, 3), 4)
    other.load_weights(str(tmp_path / "ckpt"))
    np.testing.assert_array_equal(other.alive("reduce"), alive)
    np.testing.assert_array_equal(other.alpha("reduce").numpy(), net.alpha("reduce").numpy())
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(other(x).numpy(), net(x).numpy(), rtol=1e-5, atol=1e-6)


def test_supernet_round_trips_through_keras_save(tmp_path):
    space = tiny_space(nodes=1)
    net = space.build((8, 8, 3), 4)
    alive = np.ones((space.num_edges, space.num_ops), bool)
    alive[0, 3] = False
    net.set_alive("reduce", alive)
    net.alpha("reduce").assign(np.random.default_rng(1).normal(size=(2, 4)).astype(np.float32))
    net.save(tmp_path / "supernet.keras")
    loaded = keras.models.load_model(tmp_path / "supernet.keras")
    assert type(loaded).__name__ == "Supernet" and loaded.space.get_config() == space.get_config()
    np.testing.assert_array_equal(loaded.alive("reduce"), alive)
    np.testing.assert_array_equal(loaded.alpha("reduce").numpy(), net.alpha("reduce").numpy())
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded(x).numpy(), net(x).numpy(), rtol=1e-6, atol=1e-6)


def test_bad_space_arguments_name_the_problem():
    with pytest.raises(ValueError, match="Unknown operation 'conv_7x1'.*valid operations"):
        DartsSpace(primitives=["skip_connect", "conv_7x1"])
    with pytest.raises(ValueError, match="ops must be one of"):
        DartsSpace(ops="ternary")
    with pytest.raises(ValueError, match="divisible by partial_channels"):
        DartsSpace(channels=18, partial_channels=4)
    with pytest.raises(ValueError, match="more than once"):
        DartsSpace(primitives=["skip_connect", "identity"])
    with pytest.raises(ValueError, match="divisible by 4"):
        tiny_space(cells=3).build((10, 10, 3), 4)
    space = tiny_space()
    net = space.build((8, 8, 3), 4)
    with pytest.raises(ValueError, match="leaves edge"):
        net.set_alive("normal", np.zeros((space.num_edges, space.num_ops)))
    with pytest.raises(ValueError, match="cell_type"):
        net.alive("middle")
    with pytest.raises(ValueError, match="built from"):
        tiny_space(kind="float").arch_variables(net)
    assert DartsSpace().primitives == PRIMITIVES and DartsSpace().num_edges == 14
