"""DFS (card 5.3): block-level masks (whole residual branches zeroed, removed by shrink with
the outputs unchanged), their FISTA step against the closed form, and DFSTrainer's centre loss
against a hand-computed gradient and Wen et al.'s centre update in numpy."""

import numpy as np
import pytest

import tfcompress  # noqa: F401
from tfcompress._keras import keras, tf
from tfcompress.errors import PruningError
from tfcompress.pruning import (
    BlockMask, ConstantSparsity, DFSTrainer, FilterPruning, add_block_masks, block_masks,
    find_blocks, remove_pruned_blocks, shrink,
)
from tfcompress.pruning.methods import DFSCriterion, soft_threshold

L = keras.layers


def _x(shape, seed=0):
    return np.random.default_rng(seed).normal(0, 1, shape).astype(np.float32)


def resnet(blocks=3, width=8):
    """Stem + ``blocks`` identity residual blocks (conv-BN-ReLU-conv-BN + x) + a projection
    block that is not found automatically."""
    i = keras.Input((8, 8, 3))
    x = L.ReLU()(L.BatchNormalization(name="stem_bn")(L.Conv2D(width, 3, padding="same",
                                                               name="stem")(i)))
    for b in range(blocks):
        h = L.ReLU()(L.BatchNormalization(name=f"b{b}_bn1")(
            L.Conv2D(width, 3, padding="same", name=f"b{b}_c1")(x)))
        h = L.BatchNormalization(name=f"b{b}_bn2")(L.Conv2D(width, 3, padding="same",
                                                            name=f"b{b}_c2")(h))
        x = L.ReLU()(L.Add(name=f"add{b}")([x, h]))
    p = L.Conv2D(2 * width, 1, strides=2, name="proj")(x)
    h = L.Conv2D(2 * width, 3, strides=2, padding="same", name="down")(x)
    x = L.Add(name="add_proj")([h, p])
    out = L.Dense(3, name="fc")(L.GlobalAveragePooling2D(name="gap")(x))
    return keras.Model(i, out, name="tiny_resnet")


def _randomize_bn(model, seed=1):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(np.float32)
                               if i in (0, 3) else rng.normal(0, 0.3, w.shape).astype(np.float32)
                               for i, w in enumerate(layer.get_weights())])


def test_find_and_add_block_masks_keep_the_function():
    keras.utils.set_random_seed(0)
    model = resnet()
    _randomize_bn(model)
    assert find_blocks(model) == {"add0": 1, "add1": 1, "add2": 1}   # not the projection
    masked = add_block_masks(model)
    x = _x((5, 8, 8, 3))
    np.testing.assert_allclose(masked.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-5)
    assert sorted(block_masks(masked)) == ["add0", "add1", "add2"]
    named = add_block_masks(model, blocks={"add_proj": 0})
    assert list(block_masks(named)) == ["add_proj"]
    with pytest.raises(PruningError, match="already has BlockMask"):
        add_block_masks(masked)
    with pytest.raises(PruningError, match="projection shortcut"):
        add_block_masks(model, blocks=["add_proj"])
    with pytest.raises(PruningError, match="not a two-input Add"):
        add_block_masks(model, blocks=["stem"])


def test_zero_block_mask_equals_removed_branch_and_shrink_removes_it():
    keras.utils.set_random_seed(0)
    model = resnet()
    _randomize_bn(model)
    masked = add_block_masks(model)
    block_masks(masked)["add1"].mask.assign(0.0)
    block_masks(masked)["add2"].scale.assign(0.0)        # a soft mask the prox zeroed
    block_masks(masked)["add0"].scale.assign(0.5)
    # Reference: the plain model with the branches' last BN outputting exactly 0 (gamma = beta
    # = 0) and add0's branch halved (gamma, beta * 0.5).
    ref = keras.models.clone_model(model)
    ref.set_weights(model.get_weights())
    for name, f in (("b1_bn2", 0.0), ("b2_bn2", 0.0), ("b0_bn2", 0.5)):
        g, b, mm, mv = ref.get_layer(name).get_weights()
        ref.get_layer(name).set_weights([g * f, b * f, mm, mv])
    x = _x((6, 8, 8, 3), 2)
    np.testing.assert_allclose(masked.predict(x, verbose=0), ref.predict(x, verbose=0), atol=1e-5)
    small = remove_pruned_blocks(masked)
    names = {layer.name for layer in small.layers}
    assert not names & {"b1_c1", "b1_c2", "b1_bn2", "add1", "b2_c1", "b2_c2", "add2"}
    assert {"b0_c1", "add0", "add0_block_mask"} <= names
    assert small.count_params() < masked.count_params()
    np.testing.assert_allclose(small.predict(x, verbose=0), masked.predict(x, verbose=0),
                               atol=1e-5)


def test_block_prox_matches_soft_threshold():
    keras.utils.set_random_seed(0)
    masked = add_block_masks(resnet())

    class Pruner:                                   # what the criterion reads of the callback
        pass

    Pruner.block_masks = block_masks(masked)

    crit = DFSCriterion(block_penalty=0.5, fista=False)
    z = {"add0": 0.3, "add1": 0.8, "add2": -1.2}
    for n, v in z.items():
        Pruner.block_masks[n].scale.assign(v)
    Pruner.block_masks["add2"].mask.assign(0.0)     # hard-masked: stays 0
    crit.block_proximal_step(Pruner, eta=1.0)
    got = {n: float(m.scale.numpy()) for n, m in Pruner.block_masks.items()}
    assert got == pytest.approx({"add0": float(soft_threshold(0.3, 0.5)),
                                 "add1": float(soft_threshold(0.8, 0.5)), "add2": 0.0})
    crit.update_block_masks(Pruner, 2 / 3)          # add2 already masked + the lowest (add0)
    assert [float(m.mask.numpy()) for m in Pruner.block_masks.values()] == [0.0, 1.0, 0.0]
    with pytest.raises(PruningError, match="block_sparsity"):
        DFSCriterion(block_sparsity=1.5)


def test_dfs_block_pruning_end_to_end_zeroes_whole_blocks():
    keras.utils.set_random_seed(0)
    model = resnet()
    x, y = _x((64, 8, 8, 3), 3), np.random.default_rng(3).integers(0, 3, 64)
    pruner = FilterPruning(0.25, method="dfs", schedule=ConstantSparsity(0.25, 0, frequency=2),
                           l1_penalty=1e-3, block_penalty=1e-3, block_sparsity=2 / 3,
                           exclude=("stem",))
    masked = pruner.prepare(model)
    assert len(block_masks(masked)) == 3
    trainer = DFSTrainer(masked, center_weight=1e-2, feature_layer="gap")
    trainer.compile(keras.optimizers.SGD(0.01), keras.losses.SparseCategoricalCrossentropy(
        from_logits=True), ["accuracy"])
    hist = trainer.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[pruner])
    assert hist.history["center_loss"][0] > 0
    dead = [n for n, m in block_masks(masked).items() if m.effective() == 0.0]
    assert len(dead) == 2                            # 2 of 3 blocks, lowest |m_b| first
    # The whole branch of a masked block is zero at the Add.
    probe = keras.Model(masked.inputs, [block_masks(masked)[n].output for n in dead])
    outs = probe.predict(x[:4], verbose=0)
    assert all(np.all(o == 0) for o in (outs if isinstance(outs, list) else [outs]))
    small = shrink(masked)
    adds = [la.name for la in small.layers if isinstance(la, L.Add)]
    assert set(dead).isdisjoint(adds) and "add_proj" in adds
    assert not any(isinstance(la, BlockMask) and la.block in dead for la in small.layers)
    np.testing.assert_allclose(small.predict(x, verbose=0), masked.predict(x, verbose=0),
                               atol=1e-4)
    with pytest.raises(PruningError, match="no BlockMask"):
        p2 = FilterPruning(0.25, method="dfs", block_penalty=1e-3)
        plain = FilterPruning(0.25, method="dfs").prepare(resnet())
        p2.set_model(plain)


def test_dfs_trainer_step_matches_hand_computed_gradient_and_centres():
    keras.utils.set_random_seed(0)
    model = resnet(blocks=1)
    masked = FilterPruning(0.5, method="dfs").prepare(model)
    x, y = _x((8, 8, 8, 3), 4), np.array([0, 1, 2, 0, 1, 2, 0, 1])
    mu, lr = 0.4, 0.05
    trainer = DFSTrainer(masked, center_weight=mu, feature_layer="gap")
    trainer.compile(keras.optimizers.SGD(lr), keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    trainer.center_loss([np.zeros((1, 16), np.float32), np.zeros((1,))])
    c0 = _x((3, 16), 5)
    trainer.center_loss.centers.assign(c0)
    feats_model = keras.Model(masked.inputs, [masked.output, masked.get_layer("gap").output])
    variables = masked.trainable_variables
    before = [v.numpy() for v in variables]
    with tf.GradientTape() as tape:
        logits, f = feats_model(x, training=True)
        ce = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, logits,
                                                                         from_logits=True))
        lc = 0.5 * mu * tf.reduce_mean(tf.reduce_sum(tf.square(f - c0[y]), -1))
        total = ce + lc
    grads = tape.gradient(total, variables)
    f = f.numpy()
    hist = trainer.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    assert any("scale" in v.name for v in variables)        # soft masks get the smooth step
    for v, b0, g in zip(variables, before, grads):
        np.testing.assert_allclose(v.numpy(), b0 - lr * g.numpy(), rtol=1e-4, atol=1e-5,
                                   err_msg=v.name)
    np.testing.assert_allclose(hist.history["center_loss"][0], float(lc), rtol=1e-4)
    expected = c0.copy()
    for j in range(3):
        sel = y == j
        expected[j] -= 0.5 * (sel.sum() * c0[j] - f[sel].sum(0)) / (1 + sel.sum())
    np.testing.assert_allclose(trainer.center_loss.centers.numpy(), expected, rtol=1e-4,
                               atol=1e-5)
    assert trainer.get_config()["center_weight"] == mu


def test_dfs_trainer_on_a_prepared_sequential_model():
    """FilterPruning.prepare returns a Sequential model whose layers were first built in a
    functional graph; the feature model must still connect (it did not: 'Graph disconnected')."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6, 6, 1)), L.Conv2D(4, 3, name="c"), L.ReLU(),
                              L.Flatten(), L.Dense(8, activation="relu", name="fc1"),
                              L.Dense(3, name="logits")])
    pruner = FilterPruning(0.5, method="dfs", schedule=ConstantSparsity(0.5, 0, frequency=1))
    masked = pruner.prepare(model)
    assert isinstance(masked, keras.Sequential)
    trainer = DFSTrainer(masked, center_weight=0.1)
    trainer.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _x((16, 6, 6, 1), 6), np.arange(16) % 3
    hist = trainer.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[pruner])
    assert hist.history["center_loss"][0] > 0
    assert trainer.center_loss.centers.shape == (3, 8)           # fc1's 8 outputs
    assert shrink(masked).get_layer("c").filters == 2
