"""The DARTS supernet: mixed operations weighted by architecture parameters.

Every edge ``(i, j)`` of a cell computes the mixed op

    o_bar(x) = sum_o  w_o * o(x),     w = softmax over the alive ops of alpha_(i,j)

(DARTS, Liu et al. 2019, arXiv 1806.09055). Ops removed by a strategy (``alive = 0``) get weight
exactly 0 and the others are renormalized. A second 0/1 mask, the *gate*, restricts the mix
further without touching ``alive`` (ABanditNAS and the evolution sample one op per edge by
gating; BNAS scores sampled sub-networks that way).

Ops with weight 0 are not computed at all: they are left out of the traced graph (training
graphs leave out ops with ``alive * gate = 0``, inference graphs ops with ``alive = 0``), which
is what makes op pruning and one-op sampling cheap. The masks are read when a function is
traced; changing them through :meth:`Supernet.set_alive` / :meth:`Supernet.set_gate` (or
``load_weights``) switches the Keras train function to one traced for the new masks (cached by
mask pattern). A traced step checks that no left-out op has been switched back on behind its
back (``assign`` on the mask variables directly) and fails with a message saying to call
:meth:`Supernet.refresh`.

With partial channels (PC-DARTS, Xu et al. 2020, arXiv 1907.05737) only the first ``C/K``
channels pass through the mixed op, the rest bypass it (max-pooled 2x2 in reduction cells), and
the concatenation is channel-shuffled with ``K`` groups. Edge normalization multiplies each
edge's output by ``softmax_i(beta_(i,j))`` over the incoming edges of node ``j``.

Architecture parameters are variables of the model named ``arch_alpha_normal``,
``arch_alpha_reduce`` (and ``arch_beta_*``), one set shared by all cells of a type as in DARTS;
they are non-trainable from Keras' point of view, so ``model.fit`` only updates the network
weights and the search strategy updates them from its own data split. The masks are
``arch_state_*`` variables. All of them are saved by ``model.save_weights`` and
``tf.train.Checkpoint``.
"""

import numpy as np

from tfcompress._keras import keras, tf
from tfcompress.nas.genotype import edge_index, num_edges
from tfcompress.nas.ops import OpLayer, apply_steps, channel_shuffle, op_steps, preprocess_steps, step_layers

ARCH_PREFIX = "arch_"
_CACHE = 8          # traced train functions kept per supernet
CELL_TYPES = ("normal", "reduce")
HEADS = ("classifier", "detection", "detection2")
DETECTION_HEADS = ("detection", "detection2")


def head_layers(head, num_classes, width, momentum):
    """The real-valued output layers after the last cell.

    ``"classifier"``: global average pooling -> Dense logits. ``"detection"``: the TinyYOLO
    head (:func:`tfcompress.models.TinyYOLO`) on the last cell's feature map: 1x1 conv -> BN ->
    SiLU -> 1x1 conv with ``5 + num_classes`` outputs per grid cell (raw
    ``[tx, ty, tw, th, objectness, class logits]``, decoded by
    :func:`tfcompress.detection.decode`; the grid stride is the product of the reductions).
    ``"detection2"``: the two-scale :class:`TwoScaleHead` (applied to ``(fine, coarse)``).
    """
    if head == "detection2":
        return [TwoScaleHead(num_classes, width, momentum)]
    if head == "classifier":
        return [keras.layers.GlobalAveragePooling2D(name="gap"),
                keras.layers.Dense(num_classes, name="classifier")]
    if head == "detection":
        return [keras.layers.Conv2D(width, 1, use_bias=False, name="head_conv"),
                keras.layers.BatchNormalization(momentum=momentum, epsilon=1e-5, name="head_bn"),
                keras.layers.Activation("silu", name="head_act"),
                keras.layers.Conv2D(5 + num_classes, 1, name="head_out")]
    raise ValueError(f"head must be one of {HEADS}, got {head!r}.")


class TwoScaleHead:
    """A two-scale detection head (BDetNAS, card B5's proposal, ❓; YOLOv3-tiny-style).

    Inputs: the last cell's map ``coarse`` (stride ``S``) and ``fine``, the map entering the
    last reduction cell (stride ``S / 2``). Each scale gets a TinyYOLO head (1x1 conv ``width``
    -> BN -> SiLU -> 1x1 conv with ``5 + num_classes`` outputs); the fine scale first
    concatenates ``fine`` with the coarse map brought up to its size (1x1 conv ``width // 2``
    -> BN -> SiLU -> 2x nearest upsampling), as YOLOv3's second scale does::

        coarse ----------------------------> head_s2 -> (N, H/S,  W/S,  5 + C)
           '-> lateral -> upsample x2 -.
        fine ------------------------- concat -> head_s1 -> (N, 2H/S, 2W/S, 5 + C)

    Output: both grids flattened row-major and concatenated, fine first:
    ``(N, (2H/S)(2W/S) + (H/S)(W/S), 5 + C)``, each row a raw ``[tx, ty, tw, th, objectness,
    class logits]`` decoded with its scale's stride by :func:`tfcompress.detection.decode`
    (``strides=(S / 2, S)``); targets from :func:`tfcompress.detection.encode_scales`.
    """

    def __init__(self, num_classes, width, momentum):
        out = 5 + num_classes
        bn = keras.layers.BatchNormalization

        def branch(tag):
            return [keras.layers.Conv2D(width, 1, use_bias=False, name=f"head_{tag}_conv"),
                    bn(momentum=momentum, epsilon=1e-5, name=f"head_{tag}_bn"),
                    keras.layers.Activation("silu", name=f"head_{tag}_act"),
                    keras.layers.Conv2D(out, 1, name=f"head_{tag}_out")]

        self.coarse = branch("s2")
        self.fine = branch("s1")
        self.lateral = [keras.layers.Conv2D(max(width // 2, 1), 1, use_bias=False,
                                            name="head_lateral_conv"),
                        bn(momentum=momentum, epsilon=1e-5, name="head_lateral_bn"),
                        keras.layers.Activation("silu", name="head_lateral_act"),
                        keras.layers.UpSampling2D(2, name="head_upsample")]
        self.concat = keras.layers.Concatenate(name="head_concat")
        self.flat = [keras.layers.Reshape((-1, out), name="head_s1_flat"),
                     keras.layers.Reshape((-1, out), name="head_s2_flat")]
        self.join = keras.layers.Concatenate(axis=1, name="head_output")

    @property
    def layers(self):
        return self.coarse + self.lateral + [self.concat] + self.fine + self.flat + [self.join]

    def __call__(self, features):
        fine, coarse = features
        y2 = apply_steps(self.coarse, coarse)
        y1 = apply_steps(self.fine, self.concat([fine, apply_steps(self.lateral, coarse)]))
        return self.join([self.flat[0](y1), self.flat[1](y2)])


def masked_softmax(logits, mask):
    """Softmax over the last axis restricted to ``mask > 0``; masked entries are exactly 0.

    >>> import numpy as np
    >>> w = masked_softmax(tf.constant([[0.0, 1.0, 2.0]]), tf.constant([[1.0, 0.0, 1.0]]))
    >>> [round(float(v), 4) for v in w.numpy()[0]]
    [0.1192, 0.0, 0.8808]
    """
    logits = tf.convert_to_tensor(logits)
    keep = tf.convert_to_tensor(mask) > 0
    low = tf.fill(tf.shape(logits), tf.constant(-1e9, logits.dtype))
    w = tf.nn.softmax(tf.where(keep, logits, low), axis=-1)
    return tf.where(keep, w, tf.zeros_like(w))


def node_softmax(beta, nodes):
    """Edge weights: ``softmax`` of ``beta`` over the incoming edges of each node."""
    parts, start = [], 0
    for j in range(nodes):
        parts.append(tf.nn.softmax(beta[start: start + j + 2]))
        start += j + 2
    return tf.concat(parts, 0)


class MixedOp(keras.layers.Layer):
    """Weighted sum of the candidate ops of one edge (partial channels when ``partial > 1``)."""

    def __init__(self, primitives, channels, stride, kind, partial=1, momentum=0.9, **kwargs):
        super().__init__(**kwargs)
        self.primitives, self.stride, self.partial = tuple(primitives), stride, partial
        self.op_channels = channels // partial
        self.candidates = [
            OpLayer(op_steps(p, self.op_channels, stride, kind, affine=False, momentum=momentum,
                             prefix=f"{self.name}", search=True), p, name=f"{self.name}_{p}")
            for p in self.primitives]
        self.bypass_pool = (keras.layers.MaxPooling2D(2, padding="same", name=f"{self.name}_bypass")
                            if partial > 1 and stride == 2 else None)
        self._all_built = False

    def call(self, x, weights, include=None):
        """``include``: which ops are in the graph (Python bools; ``None``: all)."""
        xa = x[..., : self.op_channels] if self.partial > 1 else x
        if not self._all_built:
            include = None     # first (eager) call: create every op's variables
            self._all_built = True
        outs = [weights[i] * op(xa) for i, op in enumerate(self.candidates)
                if include is None or include[i]]
        y = tf.add_n(outs)
        if self.partial == 1:
            return y
        xb = x[..., self.op_channels:]
        if self.bypass_pool is not None:
            xb = self.bypass_pool(xb)
        return channel_shuffle(tf.concat([y, xb], -1), self.partial)


class SearchCell(keras.layers.Layer):
    """A DARTS cell of the supernet: 2 inputs, ``nodes`` intermediate nodes, concat output."""

    def __init__(self, space, channels, reduction, reduction_prev, **kwargs):
        super().__init__(**kwargs)
        self.nodes, self.reduction = space.nodes, reduction
        self.cell_type = "reduce" if reduction else "normal"
        m = space.bn_momentum
        self._pre0 = preprocess_steps(channels, space.kind, affine=False, momentum=m,
                                      name=f"{self.name}_pre0", reduce=reduction_prev)
        self._pre1 = preprocess_steps(channels, space.kind, affine=False, momentum=m,
                                      name=f"{self.name}_pre1")
        self.pre_layers = step_layers(self._pre0) + step_layers(self._pre1)
        self.edges = [MixedOp(space.primitives, channels, 2 if reduction and i < 2 else 1,
                              space.kind, partial=space.partial_channels, momentum=m,
                              name=f"{self.name}_e{i}{j + 2}")
                      for _, i, j in edge_index(space.nodes)]

    def call(self, s0, s1, op_weights, edge_weights=None, include=None):
        states = [apply_steps(self._pre0, s0), apply_steps(self._pre1, s1)]
        k = 0
        for _ in range(self.nodes):
            acc = []
            for h in states:
                y = self.edges[k](h, op_weights[k], None if include is None else include[k].tolist())
                if edge_weights is not None:
                    y = edge_weights[k] * y
                acc.append(y)
                k += 1
            states.append(tf.add_n(acc))
        return tf.concat(states[2:], -1)


@keras.utils.register_keras_serializable(package="tfcompress")
class Supernet(keras.Model):
    """A DARTS supernet built by :meth:`tfcompress.nas.DartsSpace.build` (use that)."""

    def __init__(self, space, num_classes, input_shape, head="classifier", **kwargs):
        from tfcompress.nas.space import DartsSpace

        if isinstance(space, dict):
            space = DartsSpace.from_config(space)
        super().__init__(**kwargs)
        self.space, self.num_classes, self.image_shape = space, int(num_classes), tuple(input_shape)
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}.")
        self.head = head
        c, m = space.channels, space.bn_momentum
        self.stem = [keras.layers.Conv2D(space.stem_multiplier * c, 3, padding="same", use_bias=False,
                                         name="stem_conv"),
                     keras.layers.BatchNormalization(momentum=m, epsilon=1e-5, name="stem_bn")]
        self.cells, red_prev = [], False
        reductions = space.reduction_indices(space.num_cells)
        for i in range(space.num_cells):
            red = i in reductions
            if red:
                c *= 2
            self.cells.append(SearchCell(space, c, red, red_prev, name=f"cell{i}"))
            red_prev = red
        self.gap = keras.layers.GlobalAveragePooling2D(name="gap")
        self._fine_index = reductions[-1] if reductions else 0   # the cell the fine map enters
        if head == "classifier":
            self.classifier = keras.layers.Dense(self.num_classes, name="classifier")
        else:
            self.detection_head = head_layers(head, self.num_classes, 2 * c, m)
            if head == "detection2":
                self.detection_head_layers = step_layers(self.detection_head)   # Keras tracks these
        e, o = num_edges(space.nodes), len(space.primitives)
        self._alpha, self._beta, self._alive, self._gate = {}, {}, {}, {}
        for t in CELL_TYPES:
            self._alpha[t] = self.add_weight(name=f"{ARCH_PREFIX}alpha_{t}", shape=(e, o),
                                             initializer=_arch_init(), trainable=False)
            if space.edge_normalization:
                self._beta[t] = self.add_weight(name=f"{ARCH_PREFIX}beta_{t}", shape=(e,),
                                                initializer=_arch_init(), trainable=False)
            self._alive[t] = self.add_weight(name=f"{ARCH_PREFIX}state_alive_{t}", shape=(e, o),
                                             initializer="ones", trainable=False)
            self._gate[t] = self.add_weight(name=f"{ARCH_PREFIX}state_gate_{t}", shape=(e, o),
                                            initializer="ones", trainable=False)
        self.structure_version = 0   # bumped whenever the masks change
        self._train_functions = _FunctionCache()   # structure_key -> Keras train function
        self.adversary = None   # callable(model, x, y) -> x_adv, installed by a strategy
        self.objective = None   # callable(model, x, y) -> loss or (loss, aux) replacing the loss
        self.after_step = None  # callable(model, aux) run after the weight update (MoCo)

    # ----- architecture parameters -------------------------------------------------------
    @property
    def arch_variables(self):
        """The architecture parameters (alpha, and beta with edge normalization)."""
        return [self._alpha[t] for t in CELL_TYPES] + [self._beta[t] for t in CELL_TYPES if self._beta]

    @property
    def arch_state_variables(self):
        """The alive and gate masks (0/1, not parameters)."""
        return [self._alive[t] for t in CELL_TYPES] + [self._gate[t] for t in CELL_TYPES]

    @property
    def weight_variables(self):
        """The network weights ``model.fit`` trains (everything but the architecture)."""
        return list(self.trainable_variables)

    def alpha(self, cell_type):
        return self._alpha[_cell(cell_type)]

    def beta(self, cell_type):
        return self._beta.get(_cell(cell_type))

    def alive(self, cell_type):
        return self._alive[_cell(cell_type)].numpy().astype(bool)

    def set_alive(self, cell_type, mask):
        """Set the alive mask ``(edges, ops)``; every edge must keep at least one op."""
        self._set_mask(self._alive[_cell(cell_type)], mask, "alive")

    def set_gate(self, cell_type, mask):
        """Set the gate mask ``(edges, ops)`` (``None``: all ones)."""
        var = self._gate[_cell(cell_type)]
        self._set_mask(var, np.ones(var.shape) if mask is None else mask, "gate", check_alive=cell_type)

    def _set_mask(self, var, mask, what, check_alive=None):
        mask = np.asarray(mask, np.float32)
        if mask.shape != tuple(var.shape):
            raise ValueError(f"The {what} mask has shape {mask.shape}; expected {tuple(var.shape)} "
                             "(edges, ops).")
        eff = mask if check_alive is None else mask * self._alive[_cell(check_alive)].numpy()
        empty = np.where(eff.sum(axis=1) == 0)[0]
        if empty.size:
            raise ValueError(f"The {what} mask leaves edge(s) {empty.tolist()} with no alive operation; "
                             "every edge needs at least one.")
        var.assign(mask)
        self.refresh()

    def refresh(self):
        """Point the Keras train function at a graph traced for the current masks (done by
        set_alive/set_gate/load_weights). Graphs are cached by mask pattern, so returning to
        an earlier pattern (BNAS scoring, evolution reverting a mutation) does not retrace."""
        self.structure_version += 1
        if getattr(self, "train_function", None) is not None:
            self.train_function = None
            self.make_train_function()
        self.test_function = None
        self.predict_function = None

    def make_train_function(self, force=False):
        if self.train_function is not None and not force:
            return self.train_function
        key = self.structure_key(training=True)
        fn = None if force else self._train_functions.pop(key, None)
        if fn is None:
            fn = super().make_train_function(force=True)
        self._train_functions[key] = fn                   # most recent last
        self.train_function = fn
        return fn

    def compile(self, *args, **kwargs):
        super().compile(*args, **kwargs)
        self._train_functions.clear()      # traced with the previous optimizer and loss

    def reset_train_functions(self):
        """Forget the traced train functions (after changing ``adversary``, ``objective`` or
        ``after_step``)."""
        self._train_functions.clear()
        self.train_function = None

    def load_weights(self, *args, **kwargs):
        status = super().load_weights(*args, **kwargs)
        self.refresh()
        return status

    def included(self, training=True):
        """``{cell_type: (edges, ops) bool}``: the ops a graph traced now computes. Training
        graphs leave out ops that are dead or gated off (no gradient, no BatchNormalization
        update); inference graphs keep the gated-off alive ops (their weight is exactly 0, so
        the output is the same), so changing the gate does not retrace them."""
        with tf.init_scope():
            return {t: (self._alive[t].numpy() * (self._gate[t].numpy() if training else 1.0)) > 0
                    for t in CELL_TYPES}

    def structure_key(self, training=True):
        """A hashable key of :meth:`included` (graphs are cached by it)."""
        inc = self.included(training)
        return (bool(training),) + tuple(inc[t].tobytes() for t in CELL_TYPES)

    def mixing_weights(self, cell_type, gated=True):
        """``(op_weights (edges, ops), edge_weights (edges,) or None)`` as tensors."""
        t = _cell(cell_type)
        mask = self._alive[t] * self._gate[t] if gated else self._alive[t]
        w = masked_softmax(self._alpha[t], mask)
        ew = node_softmax(self._beta[t], self.space.nodes) if self._beta else None
        return w, ew

    # ----- forward ------------------------------------------------------------------------
    def call(self, inputs, training=None, return_features=False):
        x = apply_steps(self.stem, inputs)
        s0 = s1 = x
        weights = {t: self.mixing_weights(t) for t in CELL_TYPES}
        training = bool(training)
        include = self.included(training)
        if not tf.executing_eagerly():
            for t in CELL_TYPES:
                used = self._alive[t] * self._gate[t] if training else self._alive[t]
                left_out = tf.constant((~include[t]).astype(np.float32), dtype=used.dtype)
                tf.debugging.assert_equal(
                    tf.reduce_sum(used * left_out), tf.zeros((), used.dtype),
                    message=f"An op of the {t} cells was switched back on after this graph was "
                            "traced; change masks with set_alive/set_gate or call supernet.refresh().")
        fine = None
        for i, cell in enumerate(self.cells):
            if i == self._fine_index:
                fine = s1
            s0, s1 = s1, cell(s0, s1, *weights[cell.cell_type], include=include[cell.cell_type])
        if return_features:
            return self.gap(s1)
        if self.head == "detection":
            return apply_steps(self.detection_head, s1)
        if self.head == "detection2":
            return apply_steps(self.detection_head, (fine, s1))
        return self.classifier(self.gap(s1))

    def train_step(self, data):
        """Keras' train step on the network weights, applied only to the weights of the ops in
        the graph (the others have no gradient). A strategy may install an ``adversary``
        (adversarial examples, ABanditNAS) or an ``objective`` (contrastive loss, evolution)
        returning the loss or ``(loss, aux)``; ``after_step(model, aux)``, if set, runs after the
        weight update (the evolution's momentum encoder and key queue)."""
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if self.adversary is not None:
            x = tf.stop_gradient(self.adversary(self, x, y))
        variables = self.trainable_variables
        if self.objective is None:
            with tf.GradientTape() as tape:
                y_pred = self(x, training=True)
                loss = self.compute_loss(x, y, y_pred, sample_weight)
            self._apply(tape.gradient(loss, variables), variables)
            return self.compute_metrics(x, y, y_pred, sample_weight)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            out = self.objective(self, x, y)
            loss, aux = out if isinstance(out, (tuple, list)) else (out, None)
            scaled = loss / replicas
        self._apply(tape.gradient(scaled, variables), variables)
        if self.after_step is not None:
            self.after_step(self, aux)
        return {"objective": loss}

    def _apply(self, grads, variables):
        opt = self.optimizer
        if isinstance(opt, keras.optimizers.Optimizer):
            # Keras' optimizer makes its slots for the variables of its first update; build
            # it for all weights, since ops left out of this graph may come back later.
            with tf.init_scope():
                opt.build(variables)
        pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
        opt.apply_gradients(pairs)

    def get_config(self):
        return {"space": self.space.get_config(), "num_classes": self.num_classes,
                "input_shape": list(self.image_shape), "head": self.head, "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


class _FunctionCache:
    """A dict of traced functions, in a plain object so Keras does not track it as state."""

    def __init__(self):
        self.items = {}

    def pop(self, key, default=None):
        return self.items.pop(key, default)

    def __setitem__(self, key, fn):
        self.items[key] = fn
        while len(self.items) > _CACHE:
            self.items.pop(next(iter(self.items)))

    def clear(self):
        self.items.clear()


def _arch_init():
    # A fresh initializer per variable: one unseeded instance returns the same values each call.
    return keras.initializers.RandomNormal(stddev=1e-3)


def _cell(cell_type):
    if cell_type not in CELL_TYPES:
        raise ValueError(f"cell_type must be one of {CELL_TYPES}, got {cell_type!r}.")
    return cell_type
