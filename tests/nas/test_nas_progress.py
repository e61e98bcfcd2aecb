"""Progress: the per-epoch printout, TensorBoard scalars of the architecture weights, and the
genotype drawing."""

import glob

import numpy as np
from nas_helpers import SMALL_OPS, cifar8, tiny_space

from tfcompress._keras import tf
from tfcompress.nas import DARTS, Genotype, plot_genotype


def _attached(tmp_path=None, verbose=0):
    (_, _), (xv, yv) = cifar8()
    space = tiny_space(partial_channels=2)
    net = space.build((8, 8, 3), 4)
    a = np.linspace(-1, 1, space.num_edges * space.num_ops, dtype=np.float32)
    net.alpha("reduce").assign(a.reshape(space.num_edges, space.num_ops))
    search = DARTS(space, (xv, yv), verbose=verbose,
                   log_dir=None if tmp_path is None else str(tmp_path / "tb"))
    search.set_model(net)
    return space, net, search


def _effective(net):
    w, ew = net.mixing_weights("reduce", gated=False)
    return w.numpy() * ew.numpy()[:, None]          # op weight x edge weight (PC-DARTS)


def test_verbose_prints_the_genotype_and_every_op_weight(capsys):
    space, net, search = _attached(verbose=1)
    search.on_epoch_end(0)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"[DARTS] epoch 1: {search.genotype()}"
    assert out[0].startswith("[DARTS] epoch 1: normal=[") and "reduce=[" in out[0]
    w = _effective(net)
    reduce_lines = [line for line in out if line.startswith("  reduce")]
    assert [line.split(":")[0].split()[-1] for line in reduce_lines] == \
        ["0->2", "1->2", "0->3", "1->3", "2->3"]
    for e, line in enumerate(reduce_lines):
        expected = " ".join(f"{op}={w[e, o]:.3f}" for o, op in enumerate(SMALL_OPS))
        assert line.endswith(expected)
    # a removed op shows as 'x'
    alive = np.ones_like(w, bool)
    alive[0, 1] = False
    net.set_alive("reduce", alive)
    search.on_epoch_end(1)
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("  reduce 0->2")][0]
    assert "skip_connect=x" in line


def test_tensorboard_scalars_hold_the_architecture_weights(tmp_path):
    space, net, search = _attached(tmp_path)
    search.on_epoch_end(0)
    search.on_epoch_end(1)
    values, texts = {}, 0
    for path in glob.glob(str(tmp_path / "tb" / "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for v in event.summary.value:
                if v.tag == "genotype":
                    assert v.metadata.plugin_data.plugin_name == "text"
                    texts += 1
                else:
                    assert v.metadata.plugin_data.plugin_name == "scalars"
                    values[(v.tag, event.step)] = float(tf.make_ndarray(v.tensor))
    w = _effective(net)
    assert len(values) == 2 * 2 * space.num_edges * space.num_ops     # both cells, 2 epochs
    for o, op in enumerate(SMALL_OPS):
        np.testing.assert_allclose(values[(f"reduce/1->3/{op}", 1)], w[3, o], rtol=1e-6)
    assert texts == 2


def test_plot_genotype_draws_both_cells(tmp_path):
    import matplotlib.image

    g = Genotype(normal=[("sep_conv_3x3", 0), ("skip_connect", 1), ("dil_conv_3x3", 2),
                         ("max_pool_3x3", 0)], normal_concat=[2, 3],
                 reduce=[("max_pool_3x3", 0), ("sep_conv_5x5", 1), ("skip_connect", 2),
                         ("dil_conv_5x5", 1)], reduce_concat=[2, 3], kind="binary")
    fig = plot_genotype(g.to_json(), tmp_path / "cells" / "g.png")
    # two incoming edges per node and one concat edge per kept state, in each of the two cells
    assert fig.arrows == 2 * (2 * g.nodes + len(g.normal_concat))
    labels = [t.get_text() for ax in fig.axes for t in ax.texts]
    for op, _ in g.normal + g.reduce:
        assert op in labels
    assert {"c_{k-2}", "c_{k-1}", "c_{k}"} <= set(labels)
    assert [ax.get_title() for ax in fig.axes] == ["normal cell (binary)", "reduction cell (binary)"]
    img = matplotlib.image.imread(tmp_path / "cells" / "g.png")
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 300
