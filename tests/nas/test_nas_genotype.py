"""Genotypes: DARTS derivation, JSON round trips, validation, and derived models that train,
save, reload and convert to LCE."""

import itertools
import json

import numpy as np
import pytest
from nas_helpers import SMALL_OPS, cifar8, tiny_space

import tfcompress
from tfcompress._keras import keras
from tfcompress.inspection import binary_layers
from tfcompress.layers import QuantConv2D
from tfcompress.nas import PRIMITIVES, DartsSpace, Genotype, select_cell
from tfcompress.nas.genotype import num_edges
from tfcompress.report import summary

GENO = Genotype(
    normal=[("sep_conv_3x3", 0), ("skip_connect", 1), ("dil_conv_3x3", 2), ("max_pool_3x3", 0)],
    normal_concat=[2, 3],
    # two dil_conv_5x5 reading state 1: the case the TFLite converter used to leave as float
    reduce=[("max_pool_3x3", 0), ("dil_conv_5x5", 1), ("sep_conv_5x5", 2), ("dil_conv_5x5", 1)],
    reduce_concat=[2, 3], kind="binary")


def _reference_select(scores, prims, nodes):
    """DARTS' rule written out by brute force: for each node try every pair of inputs."""
    out, start = [], 0
    for j in range(nodes):
        block = scores[start: start + j + 2]
        best_op = [max((s, o) for o, s in enumerate(row) if prims[o] != "none") for row in block]
        pair = max(itertools.combinations(range(j + 2), 2),
                   key=lambda p: (best_op[p[0]][0] + best_op[p[1]][0], -p[0] - p[1]))
        pair = sorted(pair, key=lambda i: -best_op[i][0])
        out += [(prims[best_op[i][1]], i) for i in pair]
        start += j + 2
    return out


def test_select_cell_matches_the_darts_rule(rng):
    for _ in range(20):
        scores = rng.random((num_edges(4), len(PRIMITIVES)))
        assert select_cell(scores, PRIMITIVES, 4) == _reference_select(scores, PRIMITIVES, 4)
    # 'none' never wins, even when it has the largest weight everywhere
    scores = rng.random((num_edges(4), 8)) * 0.1
    scores[:, 0] = 1.0
    assert all(op != "none" for op, _ in select_cell(scores, PRIMITIVES, 4))
    # removed ops (-inf) are skipped
    scores[:, 1:] = -np.inf
    with pytest.raises(ValueError, match="Node 0 has fewer than two"):
        select_cell(scores, PRIMITIVES, 4)


def test_genotype_json_round_trip():
    text = GENO.to_json()
    back = Genotype.from_json(text)
    assert back == GENO and back.to_dict() == json.loads(text)
    assert back.nodes == 2 and back.kind == "binary"
    g = Genotype.from_dict({"normal": [["zero", 0], ["identity", 1]], "normal_concat": [2],
                            "reduce": [["max_pool_3x3", 0], ["skip_connect", 1]],
                            "reduce_concat": [2], "meta": {"scores": np.arange(2)}})
    assert g.normal == [("none", 0), ("skip_connect", 1)]          # aliases canonicalised
    assert json.loads(g.to_json())["meta"]["scores"] == [0, 1]


def test_genotype_bad_input_names_the_problem():
    with pytest.raises(ValueError, match="not valid JSON"):
        Genotype.from_json("{normal: ")
    with pytest.raises(ValueError, match="lacks the field.*reduce_concat"):
        Genotype.from_dict({"normal": [], "normal_concat": [], "reduce": []})
    with pytest.raises(ValueError, match="Unknown operation 'conv_9x9'"):
        Genotype(normal=[("conv_9x9", 0), ("skip_connect", 1)], normal_concat=[2],
                 reduce=[("skip_connect", 0), ("skip_connect", 1)], reduce_concat=[2])
    with pytest.raises(ValueError, match="normal cell has 1 nodes but the reduction cell 2"):
        Genotype(normal=GENO.normal[:2], normal_concat=[2], reduce=GENO.reduce, reduce_concat=[2, 3])

    space = DartsSpace(num_cells=2, channels=8, ops="binary", nodes=4)
    with pytest.raises(ValueError, match="normal cell has 2 intermediate nodes; this space's cells "
                                         "have 4"):
        space.validate(GENO)
    small = tiny_space()
    with pytest.raises(ValueError, match="'dil_conv_3x3'.*normal cell \\(node 1\\) is not in this "
                                         "space's operations"):
        small.validate(GENO)
    bad_input = Genotype(normal=[("skip_connect", 0), ("skip_connect", 3)] + GENO.normal[2:],
                         normal_concat=[2, 3], reduce=GENO.reduce, reduce_concat=[2, 3])
    with pytest.raises(ValueError, match="Node 0 of the genotype's normal cell reads state 3"):
        DartsSpace(nodes=2).validate(bad_input)
    bad_concat = Genotype(normal=GENO.normal, normal_concat=[0, 3], reduce=GENO.reduce,
                          reduce_concat=[2, 3])
    with pytest.raises(ValueError, match="normal_concat names state 0"):
        DartsSpace(nodes=2).validate(bad_concat)
    with pytest.raises(ValueError, match="intermediate nodes"):
        space.derive(GENO, num_classes=10, input_shape=(8, 8, 3))


def test_genotype_of_a_supernet_follows_its_alphas():
    space = tiny_space()
    net = space.build((8, 8, 3), 4)
    a = np.full((space.num_edges, space.num_ops), -3.0, np.float32)
    a[:, SMALL_OPS.index("max_pool_3x3")] = 1.0
    a[:, SMALL_OPS.index("none")] = 5.0                # the strongest, but never chosen
    a[2, SMALL_OPS.index("sep_conv_3x3")] = 4.0        # node 1: edge from state 0 is strongest
    net.alpha("reduce").assign(a)
    g = space.genotype(net)
    assert g.reduce == [("max_pool_3x3", 0), ("max_pool_3x3", 1),
                        ("sep_conv_3x3", 0), ("max_pool_3x3", 1)]
    alive = np.ones_like(a, bool)
    alive[:, SMALL_OPS.index("max_pool_3x3")] = False  # removed ops are never chosen
    net.set_alive("reduce", alive)
    assert all(op != "max_pool_3x3" for op, _ in space.genotype(net).reduce)


def test_derived_binary_model_trains_saves_reloads_and_converts(tmp_path):
    (x, y), (xv, _) = cifar8()
    space = DartsSpace(num_cells=1, channels=8, ops="binary", nodes=2)
    space.build((8, 8, 3), 4)
    model = space.derive(GENO, num_cells=3, channels=8)
    assert isinstance(model, keras.Model) and not hasattr(model, "arch_variables")
    assert [lay.name for lay in model.layers if lay.name.endswith("_node0")] == \
        ["cell0_node0", "cell1_node0", "cell2_node0"]
    # the ops of the genotype, and only them (no mixed op, mask or alpha)
    names = {lay.name for lay in model.layers}
    assert "cell0_n0_0_sep_conv_3x3_dw" in names and "cell1_n1_0_sep_conv_5x5_pw" in names
    assert "cell1_n0_1_dil_conv_5x5_conv" in names
    assert not any("none" in n or "arch" in n for n in names)
    assert len(binary_layers(model)) >= 10
    w0 = [w.copy() for w in model.get_weights()]
    model.fit(x[:32], y[:32], batch_size=32, epochs=1, verbose=0)
    assert any(not np.array_equal(a, b) for a, b in zip(model.get_weights(), w0))

    path = tmp_path / "derived.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(xv, verbose=0), model.predict(xv, verbose=0),
                               rtol=1e-5, atol=1e-5)

    result = tfcompress.convert(model, target="lce")
    # every binary (non-depthwise) convolution became an LceBconv2d; the stem is the only float conv
    bconvs = [lay for lay in model.layers if isinstance(lay, QuantConv2D)]
    assert result.ops.count("LceBconv2d") == len(bconvs) >= 10
    assert result.ops.count("CONV_2D") == 1 and "SPACE_TO_BATCH_ND" not in result.ops
    report = result.verify(xv, latency_runs=3, warmup=1)
    # Keras and LCE compute the same +-1 products; only float summation order differs.
    assert report.max_abs_diff < 1e-3 and report.agreement == 1.0
    assert summary(model).totals["bops_share"] > 0.5


def test_derived_float_model_matches_the_space_and_bad_derive_arguments():
    space = tiny_space(kind="float", ops=PRIMITIVES, partial_channels=2)
    g = Genotype(normal=GENO.normal, normal_concat=[2, 3], reduce=GENO.reduce,
                 reduce_concat=[2, 3])
    with pytest.raises(ValueError, match="needs num_classes and input_shape"):
        space.derive(g)
    model = space.derive(g, num_cells=2, channels=4, num_classes=3, input_shape=(8, 8, 3))
    assert model.output_shape == (None, 3) and not binary_layers(model)
    assert model.get_layer("cell0_out").output_shape == (None, 4, 4, 16)    # reduction: 2C x 2
    with pytest.raises(ValueError, match="channels must be even"):
        space.derive(g, channels=5, num_classes=3, input_shape=(8, 8, 3))
    with pytest.raises(ValueError, match="divisible by 4"):
        space.derive(g, num_cells=3, num_classes=3, input_shape=(6, 6, 3))
