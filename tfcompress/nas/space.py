"""``DartsSpace``: the DARTS cell search space (float or binarized ops) and its derived models.

>>> space = DartsSpace(num_cells=1, channels=4, ops="binary", nodes=2,
...                    primitives=["skip_connect", "max_pool_3x3", "sep_conv_3x3"])
>>> space.num_edges, space.reduction_indices(8)
(5, [2, 5])
"""

import numpy as np

from tfcompress._keras import keras, tf
from tfcompress.nas.genotype import Genotype, check_genotype, num_edges, select_cell
from tfcompress.nas.ops import KINDS, PRIMITIVES, apply_steps, canonical_op, op_steps, preprocess_steps
from tfcompress.nas.supernet import CELL_TYPES, DETECTION_HEADS, HEADS, Supernet, head_layers


class DartsSpace:
    """The DARTS cell space (book ch. 3, card B0; BNAS's binarized space, card B4).

    A network is a stem (3x3 float conv + BN, ``stem_multiplier * channels`` wide), then
    ``num_cells`` cells; cells at 1/3 and 2/3 of the depth are reduction cells (their edges from
    the two cell inputs have stride 2, and the width doubles), then global average pooling and
    a float dense classifier (logits). Each cell has 2 inputs (the previous two cells), ``nodes``
    intermediate nodes and outputs the concatenation of its intermediate nodes.

    Args:
        num_cells: cells in the supernet.
        channels: initial cell width C.
        ops: ``"float"`` (DARTS ops) or ``"binary"`` (BNAS: binarized convolutions, see
            :mod:`tfcompress.nas.ops`; the 1x1 preprocessing convs are binary too, the stem and
            classifier stay float).
        nodes: intermediate nodes per cell (4 in DARTS).
        primitives: the candidate op names (default: the 8 DARTS ops).
        partial_channels: PC-DARTS' K (1 = off; 4 on CIFAR).
        edge_normalization: learn edge weights beta (default: on iff ``partial_channels > 1``).
        stem_multiplier: stem width factor (3 in DARTS).
        bn_momentum: BatchNormalization momentum (Keras convention; 0.9 = PyTorch's 0.1).
    """

    def __init__(self, num_cells=8, channels=16, ops="float", *, nodes=4, primitives=None,
                 partial_channels=1, edge_normalization=None, stem_multiplier=3, bn_momentum=0.9):
        if ops not in KINDS:
            raise ValueError(f"ops must be one of {KINDS} (the kind of operations), got {ops!r}; "
                             "choose the operation names with primitives=[...].")
        for name, v in (("num_cells", num_cells), ("channels", channels), ("nodes", nodes),
                        ("partial_channels", partial_channels), ("stem_multiplier", stem_multiplier)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}.")
        prims = tuple(canonical_op(p) for p in (PRIMITIVES if primitives is None else primitives))
        if not prims:
            raise ValueError("primitives is empty; give at least one operation.")
        dup = sorted({p for p in prims if prims.count(p) > 1})
        if dup:
            raise ValueError(f"primitives lists {', '.join(dup)} more than once.")
        if channels % partial_channels:
            raise ValueError(f"channels ({channels}) must be divisible by partial_channels "
                             f"({partial_channels}).")
        if channels % 2:
            raise ValueError(f"channels must be even (FactorizedReduce halves it), got {channels}.")
        if "skip_connect" in prims and (channels // partial_channels) % 2:
            raise ValueError(f"channels / partial_channels = {channels // partial_channels} must be "
                             "even: skip_connect in a reduction cell is a FactorizedReduce.")
        self.num_cells, self.channels, self.kind = int(num_cells), int(channels), ops
        self.nodes, self.primitives = int(nodes), prims
        self.partial_channels = int(partial_channels)
        self.edge_normalization = (self.partial_channels > 1 if edge_normalization is None
                                   else bool(edge_normalization))
        self.stem_multiplier, self.bn_momentum = int(stem_multiplier), float(bn_momentum)
        self.num_classes = None
        self.input_shape = None
        self.head = "classifier"

    # ----- description --------------------------------------------------------------------
    @property
    def num_edges(self):
        return num_edges(self.nodes)

    @property
    def num_ops(self):
        return len(self.primitives)

    @staticmethod
    def reduction_indices(num_cells):
        """Indices of the reduction cells: ``num_cells // 3`` and ``2 * num_cells // 3``."""
        return sorted({num_cells // 3, 2 * num_cells // 3})

    def get_config(self):
        return {"num_cells": self.num_cells, "channels": self.channels, "ops": self.kind,
                "nodes": self.nodes, "primitives": list(self.primitives),
                "partial_channels": self.partial_channels,
                "edge_normalization": self.edge_normalization,
                "stem_multiplier": self.stem_multiplier, "bn_momentum": self.bn_momentum}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"DartsSpace({args})"

    def _check_input(self, input_shape, num_cells):
        shape = tuple(int(d) for d in input_shape)
        if len(shape) != 3:
            raise ValueError(f"input_shape must be (height, width, channels), got {input_shape!r}.")
        factor = 2 ** len(self.reduction_indices(num_cells))
        if shape[0] % factor or shape[1] % factor:
            raise ValueError(f"input_shape {shape}: height and width must be divisible by {factor} "
                             f"(the {len(self.reduction_indices(num_cells))} reduction cell(s) of "
                             f"a {num_cells}-cell network halve them).")
        return shape

    # ----- supernet -----------------------------------------------------------------------
    def build(self, input_shape, num_classes, *, head="classifier", compile=True,
              name="supernet"):
        """The supernet (a :class:`~tfcompress.nas.supernet.Supernet` Keras model).

        Build it inside ``strategy.scope()`` to train under ``tf.distribute``. With
        ``compile=True`` it is compiled for ``fit`` with the DARTS weight optimizer (float: SGD
        lr 0.025, momentum 0.9, global grad-norm clip 5) or Adam 1e-3 (binary), and sparse
        categorical cross-entropy on logits with accuracy (``head="classifier"``) or
        :class:`tfcompress.detection.YoloLoss` (``head="detection"``: a YOLO head on the last
        cell's feature map, output ``(N, H / s, W / s, 5 + num_classes)`` with ``s`` = 2 to the
        number of reduction cells; train with :func:`tfcompress.detection.encode_targets`
        targets and search with :class:`~tfcompress.nas.BDetNAS`), or ``head="detection2"``: a
        two-scale head (:class:`~tfcompress.nas.supernet.TwoScaleHead`, strides
        :meth:`grid_strides`, output ``(N, cells of both grids, 5 + num_classes)``, targets
        from :func:`tfcompress.detection.encode_scales`). Recompile to change them.
        """
        shape = self._check_input(input_shape, self.num_cells)
        if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}.")
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}.")
        self.input_shape, self.num_classes, self.head = shape, int(num_classes), head
        model = Supernet(self, num_classes, shape, head=head, name=name)
        model(tf.zeros((1,) + shape), training=False)     # eager: creates every op's variables
        if compile:
            _compile(model, self.kind, head)
        return model

    def arch_variables(self, supernet):
        """The architecture parameters of ``supernet`` (alpha per cell type, beta if used)."""
        self._check_supernet(supernet)
        return supernet.arch_variables

    def _check_supernet(self, supernet):
        if not isinstance(supernet, Supernet):
            raise ValueError(f"Expected a supernet built by DartsSpace.build, got {type(supernet).__name__}.")
        if supernet.space.get_config() != self.get_config():
            raise ValueError(f"The supernet was built from {supernet.space!r}, not from {self!r}.")

    # ----- genotypes ----------------------------------------------------------------------
    def genotype(self, supernet=None, scores=None, meta=None):
        """The DARTS genotype of ``supernet``'s current architecture weights, or of ``scores``
        (``{"normal": (edges, ops), "reduce": ...}``, larger is better, ``-inf`` = removed).

        Op weights are the alive-masked softmax of alpha, times the edge weight with edge
        normalization (PC-DARTS).
        """
        if scores is None:
            self._check_supernet(supernet)
            scores = {}
            for t in CELL_TYPES:
                w, ew = supernet.mixing_weights(t, gated=False)
                w = w.numpy() if ew is None else w.numpy() * ew.numpy()[:, None]
                scores[t] = np.where(supernet.alive(t), w, -np.inf)
        concat = list(range(2, self.nodes + 2))
        return Genotype(normal=select_cell(scores["normal"], self.primitives, self.nodes),
                        normal_concat=concat,
                        reduce=select_cell(scores["reduce"], self.primitives, self.nodes),
                        reduce_concat=concat, primitives=self.primitives, kind=self.kind,
                        meta=dict(meta or {}))

    def validate(self, genotype):
        """Raise ValueError naming the problem if ``genotype`` does not fit this space."""
        check_genotype(genotype, self.nodes, self.primitives)

    def grid_stride(self, num_cells=None):
        """The output stride of a detection network: 2 to the number of reduction cells."""
        return 2 ** len(self.reduction_indices(self.num_cells if num_cells is None else num_cells))

    def grid_strides(self, num_cells=None, head=None):
        """The strides of a detection network's output grids, finest first: ``(S,)`` for
        ``head="detection"``, ``(S / 2, S)`` for ``"detection2"`` (default: the last build's
        head), ``S`` = :meth:`grid_stride`."""
        head = self.head if head is None else head
        if head not in DETECTION_HEADS:
            raise ValueError(f"grid_strides is for detection heads {DETECTION_HEADS}, got {head!r}.")
        s = self.grid_stride(num_cells)
        return (s // 2, s) if head == "detection2" else (s,)

    def derive(self, genotype, num_cells=None, channels=None, num_classes=None, input_shape=None,
               *, head=None, compile=True, name="derived"):
        """A plain functional Keras model with only the genotype's ops.

        Same macro structure as the supernet (stem, cells with reductions at 1/3 and 2/3 of
        ``num_cells``, GAP, dense logits), affine BatchNormalization, no mixed ops, masks or
        architecture variables; binary spaces give binary convolutions that
        ``tfcompress.convert(model, target="lce")`` turns into ``LceBconv2d``. Not included from
        the DARTS evaluation recipe: auxiliary head, drop-path, cutout.

        Args:
            genotype: a :class:`Genotype` that fits this space (see :meth:`validate`).
            num_cells, channels: depth and initial width (default: the space's).
            num_classes, input_shape: default: those of the last :meth:`build`.
            head: ``"classifier"``, ``"detection"`` or ``"detection2"`` (default: that of the
                last :meth:`build`).
            compile: compile like :meth:`build`.
        """
        self.validate(genotype)
        num_cells = self.num_cells if num_cells is None else num_cells
        channels = self.channels if channels is None else channels
        for n, v in (("num_cells", num_cells), ("channels", channels)):
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"derive: {n} must be a positive int, got {v!r}.")
        if channels % 2:
            raise ValueError(f"derive: channels must be even, got {channels}.")
        num_classes = self.num_classes if num_classes is None else num_classes
        input_shape = self.input_shape if input_shape is None else input_shape
        if num_classes is None or input_shape is None:
            raise ValueError("derive needs num_classes and input_shape (or call space.build first).")
        head = self.head if head is None else head
        if head not in HEADS:
            raise ValueError(f"derive: head must be one of {HEADS}, got {head!r}.")
        shape = self._check_input(input_shape, num_cells)
        model = _functional(genotype, self, int(num_cells), int(channels), int(num_classes),
                            shape, name, head)
        if compile:
            _compile(model, self.kind, head)
        return model


def _compile(model, kind, head="classifier"):
    if kind == "binary":
        opt = keras.optimizers.Adam(1e-3)
    else:
        opt = keras.optimizers.SGD(0.025, momentum=0.9, global_clipnorm=5.0)
    if head in DETECTION_HEADS:
        from tfcompress.detection.loss import YoloLoss

        model.compile(opt, YoloLoss())
    else:
        model.compile(opt, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])


def _functional(genotype, space, num_cells, channels, num_classes, input_shape, name,
                head="classifier"):
    kind, m = space.kind, space.bn_momentum
    inp = keras.Input(input_shape, name="image")
    x = keras.layers.Conv2D(space.stem_multiplier * channels, 3, padding="same", use_bias=False,
                            name="stem_conv")(inp)
    x = keras.layers.BatchNormalization(momentum=m, epsilon=1e-5, name="stem_bn")(x)
    s0 = s1 = x
    c, red_prev = channels, False
    reductions = space.reduction_indices(num_cells)
    fine, fine_index = None, reductions[-1] if reductions else 0
    for i in range(num_cells):
        if i == fine_index:
            fine = s1                      # the map entering the last reduction cell
        red = i in reductions
        if red:
            c *= 2
        gene, concat = (genotype.reduce, genotype.reduce_concat) if red else (genotype.normal,
                                                                            genotype.normal_concat)
        states = [apply_steps(preprocess_steps(c, kind, momentum=m, name=f"cell{i}_pre0",
                                               reduce=red_prev), s0),
                  apply_steps(preprocess_steps(c, kind, momentum=m, name=f"cell{i}_pre1"), s1)]
        for j in range(len(gene) // 2):
            hs = []
            for k in (0, 1):
                op, src = gene[2 * j + k]
                stride = 2 if red and src < 2 else 1
                hs.append(apply_steps(op_steps(op, c, stride, kind, momentum=m,
                                               prefix=f"cell{i}_n{j}_{k}"), states[src]))
            states.append(keras.layers.Add(name=f"cell{i}_node{j}")(hs))
        out = [states[s] for s in concat]
        s0, s1 = s1, (keras.layers.Concatenate(name=f"cell{i}_out")(out) if len(out) > 1 else out[0])
        red_prev = red
    head_input = (fine, s1) if head == "detection2" else s1
    out = apply_steps(head_layers(head, num_classes, 2 * c, m), head_input)
    return keras.Model(inp, out, name=name)
