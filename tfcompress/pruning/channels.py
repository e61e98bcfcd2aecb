"""Which channels of which tensors are the same channel: the dependency analysis behind
coupled filter masks and :func:`~tfcompress.pruning.shrink`.

Every channel of every tensor is labelled with an *atom*. A prunable layer's output filter is
a fresh atom; channel-wise layers (BatchNormalization, pooling, zero-preserving activations,
dropout, padding, masks) pass their input's atoms through; ``DepthwiseConv2D`` repeats each
atom ``depth_multiplier`` times; ``Concatenate`` on the channel axis concatenates atom lists;
``Flatten`` keeps the atoms with a spatial repeat count; a ``Reshape`` that keeps the channel
(last) dimension passes them through (channels-last: element ``p * C + c`` is channel ``c``
before and after, so a 2-D feature map can be stacked into a 3-D cost volume); element-wise
merges (``Add``, ``Multiply``, ...) and ``Concatenate`` along a non-channel axis (stacking
views or depth planes) *unify* their inputs' atoms position by position (union-find), which
is what couples the masks of a residual block's branches. A unified set of atoms is a
*component*: it is pruned or kept as one.

A component is *frozen* (never pruned) when it reaches a model input or output, an unmasked
producer, or a layer tfcompress cannot slice (a ``Reshape`` that changes the channel
dimension, ``Softmax``, ``LayerNormalization``, activations with ``f(0) != 0``, layers that
binarize their inputs since ``sign(0) = +1``, ...);
the reason names that layer. A layer that binarizes its inputs but implements the
``shrunk(in_keep, out_keep)`` protocol (e.g. :class:`tfcompress.pruning.RBConv2D`) does not
freeze them: it folds the constant its quantizer makes of a removed (zero) channel into its
bias. Conv1D/2D/3D and their pooling, padding, cropping, upsampling and dropout layers are
handled alike. Layouts assume channels-last tensors.
"""

from dataclasses import dataclass

import numpy as np

from tfcompress._keras import keras
from tfcompress.pruning.masks import BlockMask, FilterMask

PRODUCER, DEPTHWISE, BN, PASS, MERGE, CONCAT, FLATTEN, MASK, OTHER = (
    "producer", "depthwise", "batchnorm", "pass", "merge", "concat", "flatten", "mask", "other")

# Activations with f(0) == 0 applied element-wise: a zero channel stays zero.
ZERO_PRESERVING = {"linear", "relu", "relu6", "elu", "selu", "tanh", "swish", "silu", "gelu",
                   "softsign", "leaky_relu", "hard_swish", "mish"}
_PASS_TYPES = tuple(getattr(keras.layers, n) for n in (
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D",
    "AveragePooling3D", "GlobalAveragePooling1D", "GlobalAveragePooling2D",
    "GlobalAveragePooling3D", "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "ReLU",
    "LeakyReLU", "ELU", "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "UpSampling1D",
    "UpSampling2D", "UpSampling3D", "Cropping1D", "Cropping2D", "Cropping3D")
    if hasattr(keras.layers, n))
_MERGE_TYPES = (keras.layers.Add, keras.layers.Subtract, keras.layers.Average,
                keras.layers.Maximum, keras.layers.Minimum, keras.layers.Multiply)


def _activation_name(act):
    if act is None:
        return "linear"
    if isinstance(act, str):
        return act
    if isinstance(act, dict):
        return str(act.get("config", act).get("name", act.get("class_name", "")))
    return getattr(act, "__name__", type(act).__name__).lower()


def _channels_last(layer):
    return getattr(layer, "data_format", "channels_last") in ("channels_last", None)


def is_producer(layer):
    """Conv1D / Conv2D / Conv3D (not transposed, not grouped) and Dense, including larq
    subclasses."""
    if isinstance(layer, keras.layers.Dense):
        return True
    conv = isinstance(layer, (keras.layers.Conv3D, keras.layers.Conv2D, keras.layers.Conv1D)) \
        and not isinstance(layer, (keras.layers.Conv3DTranspose, keras.layers.Conv2DTranspose,
                                   keras.layers.Conv1DTranspose))
    return conv and getattr(layer, "groups", 1) == 1 and _channels_last(layer)


def layer_kind(layer):
    """How a layer treats the channel axis (one of the kind constants of this module)."""
    if isinstance(layer, FilterMask):
        return MASK
    if isinstance(layer, BlockMask):       # one scalar for all channels: a zero stays zero
        return PASS
    if is_producer(layer):
        return PRODUCER
    if isinstance(layer, keras.layers.DepthwiseConv2D) and _channels_last(layer):
        return DEPTHWISE
    if isinstance(layer, keras.layers.BatchNormalization):
        axis = list(np.atleast_1d(layer.axis))
        ndim = len(layer.input_shape)
        return BN if axis in ([-1], [ndim - 1]) else OTHER
    if isinstance(layer, keras.layers.Activation):
        return PASS if _activation_name(layer.get_config()["activation"]) in ZERO_PRESERVING \
            else OTHER
    if isinstance(layer, _PASS_TYPES) and _channels_last(layer):
        return PASS
    if isinstance(layer, _MERGE_TYPES):
        return MERGE
    if isinstance(layer, keras.layers.Concatenate):
        ndim = len(layer.output_shape)
        # Along the channel axis the channel lists are concatenated; along any other axis
        # (stacking views / depth planes) channel c of every input is channel c of the output.
        return CONCAT if layer.axis in (-1, ndim - 1) else MERGE
    if isinstance(layer, keras.layers.Reshape) and keeps_channels(layer):
        return PASS
    if isinstance(layer, keras.layers.Flatten) and _channels_last(layer):
        return FLATTEN
    return OTHER


def keeps_channels(layer):
    """True for a ``Reshape`` whose input and output have the same known last dimension."""
    cin, cout = layer.input_shape[-1], layer.output_shape[-1]
    return cin is not None and cin == cout and len(layer.input_shape) > 1 \
        and len(layer.output_shape) > 1


def folds_pruned_inputs(layer):
    """True when a layer that quantizes its inputs implements the ``shrunk`` protocol."""
    return callable(getattr(layer, "shrunk", None))


def out_channels(layer):
    return int(layer.filters if hasattr(layer, "filters") else layer.units)


@dataclass
class Flat:
    """Layout of a flattened tensor: ``spatial`` positions, each holding the ``inner`` atoms."""

    spatial: int
    inner: np.ndarray

    def expand(self, keep_inner):
        """Flat indices kept when the inner positions ``keep_inner`` are kept (sorted)."""
        c = len(self.inner)
        keep_inner = np.asarray(keep_inner, np.int64)
        return (np.arange(self.spatial)[:, None] * c + keep_inner[None, :]).ravel()


def _atoms_of(layout):
    return layout.inner if isinstance(layout, Flat) else layout


@dataclass
class Group:
    """Prunable layers whose filters are coupled, and their shared components."""

    owners: list        # layer names
    components: list    # component roots (prunable, i.e. not frozen)
    members: dict       # root -> [(owner, filter index)]


class ChannelAnalysis:
    """Atoms, components and frozen reasons for every tensor of a :class:`~.graph.Graph`.

    Args:
        graph: the parsed model.
        owners: names of producer layers whose output filters may be pruned.
    """

    def __init__(self, graph, owners):
        self.graph = graph
        self.owners = set(owners)
        self._parent = []
        self.frozen = {}          # atom -> reason
        self.atom_owner = {}      # atom -> (owner, filter)
        self.owner_atoms = {}     # owner -> np.ndarray of atoms
        self.layouts = {}         # (layer name, tensor index) -> layout
        self.kinds = {}
        self._run()

    # ------------------------------------------------------------------ union-find
    def _new(self, n, reason=None):
        start = len(self._parent)
        self._parent.extend(range(start, start + n))
        atoms = np.arange(start, start + n, dtype=np.int64)
        if reason is not None:
            for a in atoms:
                self.frozen[int(a)] = reason
        return atoms

    def find(self, a):
        a = int(a)
        while self._parent[a] != a:
            self._parent[a] = self._parent[self._parent[a]]
            a = self._parent[a]
        return a

    def _union(self, a, b):
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self._parent[rb] = ra

    def _freeze(self, layout, reason):
        for a in _atoms_of(layout):
            self.frozen.setdefault(int(a), reason)

    # ------------------------------------------------------------------ propagation
    def _run(self):
        g = self.graph
        for name in g.inputs:
            self.layouts[(name, 0)] = self._new(int(g.input_shapes[name][-1]),
                                                f"model input {name!r}")
        for call in g.calls:
            layer = call.layer
            ins = [self.layouts[key] for key in call.inbound]
            kind = layer_kind(layer)
            self.kinds[call.name] = kind
            reason = f"layer {call.name!r} ({type(layer).__name__})"
            quantizes_inputs = getattr(layer, "input_quantizer", None) is not None
            if kind in (PRODUCER, DEPTHWISE) and quantizes_inputs and not (
                    kind == PRODUCER and folds_pruned_inputs(layer)):
                self._freeze(ins[0], f"{reason} quantizes its inputs (a zero channel would not "
                                     "stay zero, e.g. sign(0) = +1)")
            if kind == PRODUCER:
                if isinstance(ins[0], Flat) and not isinstance(layer, keras.layers.Dense):
                    self._freeze(ins[0], reason)
                n = out_channels(layer)
                if call.name in self.owners:
                    out = self._new(n)
                    self.owner_atoms[call.name] = out
                    for f, a in enumerate(out):
                        self.atom_owner[int(a)] = (call.name, f)
                else:
                    out = self._new(n, f"{reason} is not masked")
            elif kind == DEPTHWISE and not isinstance(ins[0], Flat):
                out = np.repeat(ins[0], int(layer.depth_multiplier))
            elif kind in (BN, MASK) and not isinstance(ins[0], Flat):
                out = ins[0]
            elif kind == PASS and not (isinstance(layer, keras.layers.Reshape)
                                       and isinstance(ins[0], Flat)):
                out = ins[0]
            elif kind == MERGE and all(not isinstance(x, Flat) for x in ins) \
                    and len({len(x) for x in ins}) == 1:
                for other in ins[1:]:
                    for a, b in zip(ins[0], other):
                        self._union(a, b)
                out = ins[0]
            elif kind == CONCAT and all(not isinstance(x, Flat) for x in ins):
                out = np.concatenate(ins)
            elif kind == FLATTEN:
                if isinstance(ins[0], Flat):
                    out = ins[0]
                else:
                    shape = layer.input_shape
                    spatial = int(np.prod(shape[1:-1])) if len(shape) > 2 else 1
                    out = Flat(spatial, ins[0])
            else:
                self.kinds[call.name] = OTHER
                for x in ins:
                    self._freeze(x, f"{reason}, which tfcompress cannot slice by channel")
                shapes = layer.output_shape if isinstance(layer.output_shape, list) \
                    else [layer.output_shape]
                outs = [self._new(int(s[-1]) if s[-1] is not None else 0, reason) for s in shapes]
                for i, o in enumerate(outs):
                    self.layouts[(call.name, i)] = o
                continue
            self.layouts[(call.name, 0)] = out
        for key in g.outputs:
            self._freeze(self.layouts[key], f"model output {key[0]!r}")

    # ------------------------------------------------------------------ queries
    def component_frozen(self):
        """``{component root: reason}`` of frozen components."""
        out = {}
        for a, reason in self.frozen.items():
            out.setdefault(self.find(a), reason)
        return out

    def groups(self):
        """Coupled :class:`Group` s of owners, with their prunable components."""
        frozen = self.component_frozen()
        members = {}
        for a, (owner, f) in self.atom_owner.items():
            members.setdefault(self.find(a), []).append((owner, f))
        # Union owners that share a component.
        parent = {o: o for o in self.owner_atoms}

        def top(o):
            while parent[o] != o:
                o = parent[o]
            return o

        for mem in members.values():
            first = top(mem[0][0])
            for owner, _ in mem[1:]:
                r = top(owner)
                if r != first:
                    parent[r] = first
        by_top = {}
        for o in self.owner_atoms:
            by_top.setdefault(top(o), []).append(o)
        groups = []
        for owners in by_top.values():
            comps = sorted({self.find(a) for o in owners for a in self.owner_atoms[o]})
            prunable = [c for c in comps if c not in frozen]
            groups.append(Group(owners=sorted(owners, key=list(self.owner_atoms).index),
                                components=prunable,
                                members={c: sorted(members[c]) for c in prunable}))
        return groups

    def blocker(self, owner):
        """Why ``owner`` cannot be pruned at all (its first frozen reason), or None."""
        frozen = self.component_frozen()
        reasons = [frozen.get(self.find(a)) for a in self.owner_atoms[owner]]
        if all(reasons):
            return reasons[0]
        return None

    def roots(self, layout):
        """Component roots of each position of a (non-flat) layout."""
        return np.array([self.find(a) for a in _atoms_of(layout)], np.int64)
