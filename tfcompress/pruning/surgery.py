"""``shrink``: physically remove masked filters and the input channels that read them.

The model is rebuilt layer by layer (:mod:`tfcompress.pruning.graph`) with narrower layers:

- masked ``Conv1D``/``Conv2D``/``Conv3D``/``Dense``: fewer ``filters``/``units`` (kernel and
  bias sliced);
- every consumer of a pruned channel: ``Conv``/``Dense`` kernels lose those input rows (after a
  ``Flatten``, the rows ``p * C + c`` of every spatial position ``p``), ``DepthwiseConv2D``
  and ``BatchNormalization`` lose those channels, a channel-keeping ``Reshape`` gets the new
  channel count, pooling / activations / dropout / padding / ``Add`` / ``Concatenate`` /
  ``Flatten`` adapt by themselves;
- a layer implementing ``shrunk(in_keep, out_keep) -> (new layer, assign)`` rebuilds itself
  (``assign(new_layer)`` sets the weights once the new layer is built); binary layers use it
  to fold removed input channels, constant after binarization, into a bias;
- ``FilterMask`` layers disappear. A channel is kept when *any* mask of its coupled component
  keeps it (the union across the branches of an ``Add``); where one branch masks a channel the
  union keeps, a sliced ``FilterMask`` stays so the output is unchanged. Soft-mask scales
  (DFS, CoGD) are folded into the preceding BatchNormalization (or float kernel) when the
  layers in between are positively homogeneous (ReLU, linear); otherwise a sliced mask stays.

A masked channel outputs exactly 0 in the masked model, so the shrunk model computes the same
function; only float summation order differs.
"""

import numpy as np

from tfcompress._keras import keras
from tfcompress.errors import PruningError
from tfcompress.pruning.channels import (
    BN, DEPTHWISE, MASK, PASS, PRODUCER, ChannelAnalysis, Flat, _activation_name)
from tfcompress.pruning.blocks import remove_pruned_blocks
from tfcompress.pruning.graph import clone_layer, parse, rebuild
from tfcompress.pruning.masks import FilterMask, block_masks, filter_masks

_HOMOGENEOUS = {"linear", "relu", "leaky_relu"}


def _weight_name(var):
    return var.name.split("/")[-1].split(":")[0]


def _homogeneous(layer):
    """True when ``f(s x) = s f(x)`` for ``s > 0`` (so a positive channel scale commutes)."""
    if isinstance(layer, keras.layers.Dropout):
        return True
    if isinstance(layer, keras.layers.LeakyReLU):
        return True
    if isinstance(layer, keras.layers.ReLU):
        cfg = layer.get_config()
        return cfg.get("max_value") is None and not cfg.get("threshold")
    if isinstance(layer, keras.layers.Activation):
        return _activation_name(layer.get_config()["activation"]) in _HOMOGENEOUS
    return False


class _Plan:
    """What to keep and where to fold, computed from the masks before rebuilding."""

    def __init__(self, model):
        self.graph = parse(model)
        self.masks = filter_masks(model)
        if not self.masks:
            raise PruningError(
                f"Model {model.name!r} has no filter masks: shrink() removes the filters that "
                "FilterPruning masked. Prepare the model (pruner.prepare(model)) and train it "
                "with the FilterPruning callback first.")
        never = [m.name for m in self.masks.values() if int(m.pruning_step.numpy()) < 0]
        if len(never) == len(self.masks):
            raise PruningError(
                f"The FilterPruning callback never ran on model {model.name!r} (the masks' "
                "pruning_step is -1), so no filter was chosen for removal. Train with "
                "model.fit(..., callbacks=[pruner]) before shrink().")
        self.analysis = a = ChannelAnalysis(self.graph, list(self.masks))
        frozen = a.component_frozen()
        keep = {}
        for owner, m in self.masks.items():
            eff = m.effective()
            for f, atom in enumerate(a.owner_atoms[owner]):
                r = a.find(atom)
                keep[r] = keep.get(r, False) or bool(eff[f] != 0)
        for r in frozen:
            keep[r] = True
        self.keep_root = keep
        for owner in self.masks:
            if not any(keep[a.find(atom)] for atom in a.owner_atoms[owner]):
                raise PruningError(
                    f"Every filter of layer {owner!r} is masked or has a zero soft-mask scale, "
                    "so shrink() would leave it with no filters; lower the L1 penalty or "
                    "exclude the layer.")
        self.fold = {}          # layer name -> per-channel factor (original channel indexing)
        self.mask_action = {}   # mask layer name -> "drop" | "fold" | "keep"
        for owner, m in self.masks.items():
            self._plan_mask(owner, m)

    def kept(self, layout):
        if isinstance(layout, Flat):
            return layout.expand(self.kept(layout.inner))
        roots = self.analysis.roots(layout)
        return np.array([i for i, r in enumerate(roots) if self.keep_root.get(int(r), True)],
                        np.int64)

    def _chain(self, owner, mask_name):
        names, cur = [], owner
        while True:
            consumers = self.graph.consumers_of(cur)
            if not consumers or consumers[0] == mask_name:
                return names
            cur = consumers[0]
            names.append(cur)

    def _plan_mask(self, owner, m):
        call = self.graph.by_name[m.name]
        positions = self.kept(self.analysis.layouts[call.inbound[0]])
        eff = m.effective()[positions]
        if np.all(eff == 1.0):
            self.mask_action[m.name] = "drop"
            return
        if m.soft and np.all(eff > 0):
            chain = self._chain(owner, m.name)
            bns = [i for i, n in enumerate(chain)
                   if self.analysis.kinds.get(n) == BN]
            start = bns[-1] if bns else None
            after = chain[start + 1:] if start is not None else chain
            target = chain[start] if start is not None else owner
            owner_layer = self.graph.by_name[owner].layer
            ok = all(_homogeneous(self.graph.by_name[n].layer) for n in after)
            if start is not None:
                ok = ok and bool(self.graph.by_name[target].layer.scale)
            else:
                ok = ok and getattr(owner_layer, "kernel_quantizer", None) is None and \
                    _activation_name(owner_layer.get_config().get("activation")) in _HOMOGENEOUS
            if ok:
                self.fold[target] = m.effective()
                self.mask_action[m.name] = "fold"
                return
        self.mask_action[m.name] = "keep"


def _take(w, idx, axis):
    return np.take(w, idx, axis=axis)


def shrink(model):
    """Rebuild ``model`` without its masked filters and the channels that read them.

    Args:
        model: a model prepared with :func:`~tfcompress.pruning.add_filter_masks` and trained
            with the :class:`~tfcompress.pruning.FilterPruning` callback (or reloaded from a
            checkpoint of one).

    Returns:
        An ordinary Keras model (Sequential if ``model`` is) with fewer filters, computing the
        same outputs as ``model``. Residual branches whose ``BlockMask`` is 0 (DFS block
        pruning) are removed first (:func:`~tfcompress.pruning.blocks.remove_pruned_blocks`).

    Raises:
        PruningError: no masks, masks the callback never set, or a layer that cannot be
            rebuilt (shared layers, nested models, unknown per-channel weights; named).
    """
    if block_masks(model):                 # DFS block pruning: drop zero-masked branches
        model = remove_pruned_blocks(model)
        if not filter_masks(model):
            return model
    plan = _Plan(model)
    a = plan.analysis

    def build(call, x):
        layer = call.layer
        kind = a.kinds[call.name]
        layout = a.layouts[call.inbound[0]]
        if kind == MASK:
            action = plan.mask_action[call.name]
            if action in ("drop", "fold"):
                return x
            pos = plan.kept(layout)
            new = FilterMask(target=layer.target, soft=layer.soft, name=layer.name)
            y = new(x)
            ws = [layer.mask.numpy()[pos]] + ([layer.scale.numpy()[pos]] if layer.soft else [])
            new.set_weights(ws + [layer.pruning_step.numpy()])
            return y
        if kind == PRODUCER:
            in_keep = plan.kept(layout)
            n_out = len(a.owner_atoms[call.name]) if call.name in a.owner_atoms else None
            out_keep = (plan.kept(a.owner_atoms[call.name]) if n_out is not None
                        else np.arange(int(getattr(layer, "filters", None) or layer.units)))
            if callable(getattr(layer, "shrunk", None)):
                if call.name in plan.fold:
                    raise PruningError(f"Layer {call.name!r} rebuilds itself (shrunk()); a "
                                       "soft-mask scale cannot be folded into its kernel.")
                new, assign = layer.shrunk(in_keep, out_keep)
                y = new(x, **call.kwargs)
                assign(new)
                return y
            key = "filters" if hasattr(layer, "filters") else "units"
            new = clone_layer(layer, **{key: int(len(out_keep))})
            y = new(x, **call.kwargs)
            factor = plan.fold.get(call.name)
            ws = []
            for var in layer.weights:
                w, wn = var.numpy(), _weight_name(var)
                if wn == "kernel":
                    w = _take(_take(w, in_keep, -2), out_keep, -1)
                    if factor is not None:
                        w = w * factor[out_keep]
                elif wn == "bias":
                    w = w[out_keep] * (factor[out_keep] if factor is not None else 1)
                elif w.ndim and w.shape[-1] in (len(in_keep), n_out):
                    raise PruningError(
                        f"Layer {call.name!r} has a per-channel weight {wn!r} of shape {w.shape} "
                        "that shrink() does not know how to slice.")
                ws.append(w)
            new.set_weights(ws)
            return y
        if kind == DEPTHWISE:
            keep = plan.kept(layout)
            mult = int(layer.depth_multiplier)
            new = clone_layer(layer)
            y = new(x, **call.kwargs)
            ws = []
            for var in layer.weights:
                w, wn = var.numpy(), _weight_name(var)
                if wn == "depthwise_kernel":
                    w = _take(w, keep, 2)
                elif wn == "bias":
                    w = w.reshape(-1, mult)[keep].ravel()
                else:
                    raise PruningError(f"Layer {call.name!r}: unknown weight {wn!r} in "
                                       "DepthwiseConv2D.")
                ws.append(w)
            new.set_weights(ws)
            return y
        if kind == BN:
            keep = plan.kept(layout)
            new = clone_layer(layer)
            y = new(x, **call.kwargs)
            factor = plan.fold.get(call.name)
            ws = []
            for var in layer.weights:
                w, wn = var.numpy()[keep], _weight_name(var)
                if factor is not None and wn in ("gamma", "beta"):
                    w = w * factor[keep]
                ws.append(w)
            new.set_weights(ws)
            return y
        if isinstance(layer, keras.layers.Reshape) and kind == PASS:
            target = list(layer.target_shape)
            target[-1] = int(len(plan.kept(layout)))
            new = clone_layer(layer, target_shape=tuple(target))
            return new(x, **call.kwargs)
        new = clone_layer(layer)
        y = new(x, **call.kwargs)
        if layer.weights:
            new.set_weights(layer.get_weights())
        return y

    out = rebuild(plan.graph, build)
    for old_t, new_t in zip(model.outputs, out.outputs):
        if tuple(old_t.shape[1:]) != tuple(new_t.shape[1:]):
            raise PruningError(f"shrink() changed output {old_t.name!r} from {old_t.shape} to "
                               f"{new_t.shape}; this is a bug, please report it.")
    return out


def removed_filters(model):
    """``{layer name: number of masked filters}`` that :func:`shrink` would remove."""
    return {o: int((m.mask.numpy() == 0).sum()) for o, m in filter_masks(model).items()}


__all__ = ["removed_filters", "shrink"]
