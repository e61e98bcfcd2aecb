"""Structured filter pruning as a Keras callback (book §5.1; L1/L2 criteria of Li et al. 2017).

Three pieces, in TF-MOT's style:

1. :func:`add_filter_masks` (or :meth:`FilterPruning.prepare`) returns a copy of the model
   with a :class:`~tfcompress.pruning.masks.FilterMask` after every prunable ``Conv2D`` /
   ``Conv1D`` / ``Dense`` (after the BatchNormalization / activation / dropout chain that
   directly follows it). Layers whose channels reach a model output, or a layer that cannot
   be sliced by channel, are left without a mask (see :mod:`tfcompress.pruning.channels`).
2. :class:`FilterPruning` is the callback: at the steps its schedule says, it ranks filters by
   the criterion and sets the masks so that the schedule's fraction of filters is masked, per
   group of coupled layers (the branches of a residual ``Add`` share one mask); masks only
   grow. After every batch it re-zeroes the masked filters' kernel and bias and the
   BatchNormalization ``gamma``/``beta`` of masked channels, so the weights stay zero. The
   mask and step live in the ``FilterMask`` layers' weights, so they survive
   ``ModelCheckpoint`` and ``load_model``.
3. :func:`~tfcompress.pruning.shrink` rebuilds the model without the masked filters.
"""

import warnings

import numpy as np

from tfcompress._distribute import check_workers_agree
from tfcompress._keras import keras, tf
from tfcompress.errors import PruningError
from tfcompress.pruning import schedules as _schedules
from tfcompress.pruning.blocks import add_block_masks
from tfcompress.pruning.channels import BN, DEPTHWISE, PRODUCER, ChannelAnalysis, layer_kind
from tfcompress.pruning.graph import clone_layer, parse, rebuild
from tfcompress.pruning.masks import FilterMask, block_masks, filter_masks
from tfcompress.training import unwrap

# Layers that may sit between a prunable layer and its mask (element-wise per channel).
_CHAIN_TYPES = (keras.layers.BatchNormalization, keras.layers.Activation, keras.layers.ReLU,
                keras.layers.LeakyReLU, keras.layers.ELU, keras.layers.Dropout)


def _chain_end(graph, name):
    cur = name
    while not graph.is_output(cur):
        consumers = graph.consumers_of(cur)
        if len(consumers) != 1:
            break
        nxt = graph.by_name[consumers[0]]
        if not isinstance(nxt.layer, _CHAIN_TYPES) or nxt.inbound != [(cur, 0)]:
            break
        if isinstance(nxt.layer, keras.layers.BatchNormalization) and layer_kind(nxt.layer) != BN:
            break
        cur = nxt.name
    return cur


def add_filter_masks(model, *, layers=None, exclude=(), soft=False):
    """A copy of ``model`` (same weights) with a ``FilterMask`` after each prunable layer.

    Args:
        model: a built Sequential or functional tf_keras model.
        layers: names of the layers to mask (default: every Conv2D/Conv1D/Dense whose filters
            can be removed).
        exclude: names of layers to leave unmasked (e.g. the first convolution).
        soft: give the masks a trainable ``scale`` (the soft masks of DFS / CoGD).

    Raises:
        PruningError: no prunable layer; a named layer that is unknown, not a Conv/Dense, or
            whose channels cannot be removed (the message names the layer that blocks it);
            the model already has masks.
    """
    graph = parse(model)
    if filter_masks(model):
        raise PruningError(f"Model {model.name!r} already has FilterMask layers.")
    producers = [c.name for c in graph.calls if layer_kind(c.layer) == PRODUCER]
    names = {c.name for c in graph.calls}
    for n in list(exclude) + list(layers or []):
        if n not in names:
            raise PruningError(f"Model {model.name!r} has no layer {n!r}.")
    if layers is not None:
        bad = [n for n in layers if n not in producers]
        if bad:
            raise PruningError(f"Layer(s) {', '.join(map(repr, bad))} are not Conv1D/Conv2D/"
                               "Dense layers whose filters FilterPruning can remove.")
        chosen = list(layers)
    else:
        chosen = [n for n in producers if n not in set(exclude)]
    analysis = ChannelAnalysis(graph, chosen)
    prunable, blocked = [], {}
    for n in chosen:
        reason = analysis.blocker(n)
        if reason is None:
            prunable.append(n)
        else:
            blocked[n] = reason
    if layers is not None and blocked:
        n, reason = next(iter(blocked.items()))
        raise PruningError(f"Layer {n!r} cannot be filter-pruned: its channels reach {reason}.")
    if not prunable:
        detail = "; ".join(f"{n!r}: reaches {r}" for n, r in blocked.items())
        raise PruningError(
            f"Model {model.name!r} has no prunable layers (Conv1D/Conv2D/Dense whose output "
            f"channels can be removed){': ' + detail if detail else ''}.")
    insert_after = {_chain_end(graph, n): n for n in prunable}

    def build(call, x):
        new = clone_layer(call.layer)
        y = new(x, **call.kwargs)
        new.set_weights(call.layer.get_weights())
        target = insert_after.get(call.name)
        if target is not None:
            y = FilterMask(target=target, soft=soft, name=f"{target}_filter_mask")(y)
        return y

    return rebuild(graph, build)


# ---------------------------------------------------------------------------- criteria
def filter_norms(kernel, order=1):
    """Per-output-filter L1 (``order=1``) or L2 (``order=2``) norm of a kernel whose last axis
    is the filters (Conv ``(kh, kw, in, out)``, Dense ``(in, out)``)."""
    w = np.asarray(kernel, np.float64).reshape(-1, np.shape(kernel)[-1])
    return np.abs(w).sum(0) if order == 1 else np.sqrt((w * w).sum(0))


class Criterion:
    """How FilterPruning ranks filters (higher score = more important = kept).

    ``soft``: the masks need a trainable scale. ``on_batch_end`` runs after every batch
    (proximal steps, regularizing pulls).
    """

    name = None
    soft = False

    def scores(self, pruner, owner):
        """``(filters,)`` importance of ``owner``'s filters; every criterion defines it."""
        raise NotImplementedError(f"{type(self).__name__} must define scores(pruner, owner).")

    def on_batch_begin(self, pruner, step):
        pass

    def on_batch_end(self, pruner, step):
        pass

    def get_config(self):
        return {}


class NormCriterion(Criterion):
    """L1 or L2 norm of each filter's kernel (Li et al., ICLR 2017, arXiv:1608.08710)."""

    def __init__(self, order=1):
        self.order = order
        self.name = "l1" if order == 1 else "l2"

    def scores(self, pruner, owner):
        return filter_norms(pruner.layer(owner).kernel.numpy(), self.order)


def _make_criterion(method, options):
    if method in ("l1", "l2"):
        if options:
            raise PruningError(f"Method {method!r} takes no options, got {sorted(options)}.")
        return NormCriterion(1 if method == "l1" else 2)
    from tfcompress.pruning import methods

    try:
        return methods.CRITERIA[method](**options)
    except TypeError as err:
        raise PruningError(f"Bad option for method {method!r}: {err}") from err


METHODS = ("l1", "l2", "dfs", "em", "cogd")


def _validate_sparsity(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise PruningError(f"target_sparsity must be a fraction of filters in [0, 1), got "
                           f"{value!r}.")
    return float(value)


def write_scalar(tag, value, step):
    """A TensorBoard scalar via ``tf.summary.write`` (works without the tensorboard package,
    which ``tf.summary.scalar`` needs); call inside ``writer.as_default()``."""
    meta = tf.compat.v1.SummaryMetadata()
    meta.plugin_data.plugin_name = "scalars"
    return tf.summary.write(tag, tf.constant(float(value), tf.float32), step=int(step),
                            metadata=meta)


class FilterPruning(keras.callbacks.Callback):
    """Prune whole filters of a masked model during ``fit``.

    Args:
        target_sparsity: final fraction of filters masked in each layer group, in [0, 1).
        method: ``"l1"``, ``"l2"`` (filter norms), ``"dfs"``, ``"em"`` or ``"cogd"`` (see
            :mod:`tfcompress.pruning.methods`).
        schedule: ``None`` (all of ``target_sparsity`` at step 10, the first pruning step, then
            re-checked every 10 steps), a schedule, a name or config for
            :func:`tfcompress.pruning.schedules.get` (its final sparsity is filled with or must
            equal ``target_sparsity``), or any callable ``step -> (should_prune, sparsity)``.
        log_dir: write per-layer filter sparsity as TensorBoard scalars here.
        exclude: layer names :meth:`prepare` leaves unmasked.
        **method_options: options of the chosen method (e.g. ``l1_penalty`` for DFS).

    Steps count batches from 1 (as TF-MOT does), continuing across ``fit`` calls and reloads
    (the step is stored in the masks' ``pruning_step`` weight).

    Example::

        pruner = FilterPruning(0.5, method="l1", schedule=PolynomialDecay(0, 0.5, 0, 200))
        model = pruner.prepare(model)          # adds FilterMask layers; compile after this
        model.compile(...)
        model.fit(x, y, epochs=3, callbacks=[pruner])
        small = tfcompress.pruning.shrink(model)

    Raises:
        PruningError: sparsity outside [0, 1), an unknown method, a schedule ending elsewhere,
            or (when training starts) a model without filter masks.
    """

    def __init__(self, target_sparsity, method="l1", schedule=None, *, log_dir=None,
                 exclude=(), **method_options):
        super().__init__()
        self.target_sparsity = _validate_sparsity(target_sparsity)
        if method not in METHODS:
            raise PruningError(f"Unknown filter pruning method {method!r}; valid: "
                               f"{', '.join(METHODS)}.")
        self.method = method
        try:
            self.schedule = _schedules.get(schedule, sparsity=self.target_sparsity)
        except ValueError as err:
            raise PruningError(str(err)) from err
        final = getattr(self.schedule, "final_sparsity", None)
        if final is not None and abs(final - self.target_sparsity) > 1e-9:
            raise PruningError(f"The schedule ends at sparsity {final:g} but target_sparsity is "
                               f"{self.target_sparsity:g}; make them agree.")
        self.criterion = _make_criterion(method, method_options)
        self.log_dir = log_dir
        self.exclude = tuple(exclude)
        self._writer = None
        self._ready_for = None

    # ------------------------------------------------------------------ model setup
    def prepare(self, model, *, layers=None):
        """``add_filter_masks(model, ...)`` with this pruner's ``exclude`` and mask kind; for a
        criterion that prunes residual blocks too (DFS with ``block_penalty``), also
        :func:`~tfcompress.pruning.blocks.add_block_masks`."""
        masked = add_filter_masks(model, layers=layers, exclude=self.exclude,
                                  soft=self.criterion.soft)
        if getattr(self.criterion, "blocks", False):
            masked = add_block_masks(masked, soft=True)
        return masked

    def set_model(self, model):
        super().set_model(model)
        self._setup(model)

    def _setup(self, model):
        if self._ready_for is model:
            return
        ready_for = model
        model = unwrap(model)              # a Trainer (e.g. DFSTrainer) trains the network
        masks = filter_masks(model)
        if not masks:
            raise PruningError(
                f"Model {model.name!r} has no filter masks, so FilterPruning has nothing to "
                "prune. Add them once before compiling: model = pruner.prepare(model) (or "
                "tfcompress.pruning.add_filter_masks(model)).")
        if self.criterion.soft and not all(m.soft for m in masks.values()):
            raise PruningError(f"Method {self.method!r} needs soft masks (a trainable scale); "
                               "prepare the model with this pruner's prepare().")
        self.masks = masks
        self.block_masks = block_masks(model)
        if getattr(self.criterion, "blocks", False) and not self.block_masks:
            raise PruningError(f"Method {self.method!r} prunes residual blocks, but model "
                               f"{model.name!r} has no BlockMask; prepare it with this "
                               "pruner's prepare().")
        graph = parse(model)
        self.graph = graph
        self.analysis = ChannelAnalysis(graph, list(masks))
        self.groups = [g for g in self.analysis.groups() if g.components]
        self._chains = {o: self._chain(graph, o, m.name) for o, m in masks.items()}
        in_chain = {n for names in self._chains.values() for n in names}
        # Channel-wise layers outside a mask chain that map a zero channel to a constant
        # (BatchNormalization's beta, DepthwiseConv2D's bias): their parameters of fully
        # pruned channels are zeroed too, so a pruned channel stays exactly 0 downstream.
        self._downstream = [
            c for c in graph.calls
            if (layer_kind(c.layer) == BN and c.name not in in_chain)
            or layer_kind(c.layer) == DEPTHWISE]
        self._multipliers = None
        self._ready_for = ready_for

    @staticmethod
    def _chain(graph, owner, mask_name):
        names, cur = [], owner
        while True:
            consumers = graph.consumers_of(cur)
            if not consumers or consumers[0] == mask_name:
                return names
            cur = consumers[0]
            names.append(cur)

    def layer(self, name):
        return self.graph.by_name[name].layer

    # ------------------------------------------------------------------ state
    @property
    def step(self):
        return int(next(iter(self.masks.values())).pruning_step.numpy())

    def _set_step(self, step):
        for m in self.masks.values():
            m.pruning_step.assign(step)

    def sparsity(self):
        """``{layer name: fraction of its filters masked}``."""
        return {o: float(1.0 - (m.mask.numpy() != 0).mean()) for o, m in self.masks.items()}

    # ------------------------------------------------------------------ mask updates
    def update_masks(self, sparsity):
        """Mask the lowest-scoring ``sparsity`` fraction of each group's components.

        Already-masked filters stay masked; at least one component per group is kept.
        """
        for group in self.groups:
            comps = group.components
            n = len(comps)
            k = min(int(round(sparsity * n)), n - 1)
            agg = {c: 0.0 for c in comps}
            masked = {c: True for c in comps}
            for owner in group.owners:
                s = np.asarray(self.criterion.scores(self, owner), np.float64)
                mask = self.masks[owner].mask.numpy()
                live = s[mask != 0]
                scale = live.mean() if live.size and live.mean() > 0 else 1.0
                for c in comps:
                    for o, f in group.members[c]:
                        if o == owner:
                            agg[c] += s[f] / scale / len(group.members[c])
                            masked[c] = masked[c] and mask[f] == 0
            order = sorted(comps, key=lambda c: (not masked[c], agg[c]))
            pruned = set(order[:max(k, sum(masked.values()))])
            for owner in group.owners:
                mask = np.ones(self.masks[owner].channels, np.float32)
                for c in pruned:
                    for o, f in group.members[c]:
                        if o == owner:
                            mask[f] = 0.0
                self.masks[owner].mask.assign(mask)
        self._multipliers = None
        self.zero_masked_weights()
        self._check_workers_agree()

    def _check_workers_agree(self):
        """Under ``MultiWorkerMirroredStrategy`` every worker runs this callback on its own
        copy of the weights; the copies are equal (all-reduced updates), so the masks are too.
        One all-reduce of a fingerprint of the masks (and soft-mask scales) per mask update
        checks it, and every worker raises :class:`PruningError` if they differ."""
        model = getattr(self, "model", None)
        if model is None:
            return
        arrays = [self.step]
        for m in self.masks.values():
            arrays += [m.mask] + ([m.scale] if m.scale is not None else [])
        check_workers_agree(model.distribute_strategy, arrays,
                            f"the filter masks at pruning step {self.step}", PruningError)

    def _pruned_components(self):
        frozen = self.analysis.component_frozen()
        out = set()
        for group in self.groups:
            for c in group.components:
                if c in frozen:
                    continue
                if all(self.masks[o].mask.numpy()[f] == 0 for o, f in group.members[c]):
                    out.add(c)
        return out

    def _build_multipliers(self):
        mults = []
        for owner, m in self.masks.items():
            keep = (m.mask.numpy() != 0).astype(np.float32)
            layer = self.layer(owner)
            for w in (getattr(layer, "kernel", None), getattr(layer, "bias", None)):
                if w is not None:
                    mults.append((w, keep))
            for name in self._chains[owner]:
                bn = self.layer(name)
                if layer_kind(bn) == BN:
                    mults += [(v, keep) for v in (bn.gamma, bn.beta) if v is not None]
        pruned = self._pruned_components()
        for call in self._downstream:
            roots = self.analysis.roots(self.analysis.layouts[call.inbound[0]])
            keep = np.array([r not in pruned for r in roots], np.float32)
            if keep.all():
                continue
            layer = call.layer
            if layer_kind(layer) == BN:
                mults += [(v, keep) for v in (layer.gamma, layer.beta) if v is not None]
            else:
                mult = int(layer.depth_multiplier)
                mults.append((layer.depthwise_kernel, keep[:, None]))
                if layer.bias is not None:
                    mults.append((layer.bias, np.repeat(keep, mult)))
        self._multipliers = [(v, tf.constant(k, v.dtype)) for v, k in mults]

    def zero_masked_weights(self):
        """Set the masked filters' kernel/bias and their BatchNormalization gamma/beta to 0."""
        if self._multipliers is None:
            self._build_multipliers()
        for var, keep in self._multipliers:
            var.assign(var * keep)

    # ------------------------------------------------------------------ Keras hooks
    def on_train_begin(self, logs=None):
        self._setup(self.model)
        if self.step < 0:
            self._set_step(0)
        if self.log_dir and self._writer is None:
            self._writer = tf.summary.create_file_writer(str(self.log_dir))

    def on_train_batch_begin(self, batch, logs=None):
        step = self.step + 1
        self._set_step(step)
        should, sparsity = self.schedule(step)
        if bool(should):
            self.update_masks(float(sparsity))
        self.criterion.on_batch_begin(self, step)

    def on_train_batch_end(self, batch, logs=None):
        self.criterion.on_batch_end(self, self.step)
        self.zero_masked_weights()

    def on_epoch_end(self, epoch, logs=None):
        if self._writer is not None:
            with self._writer.as_default():
                step = self.step
                values = self.sparsity()
                for name, value in values.items():
                    write_scalar(f"filter_sparsity/{name}", value, step)
                write_scalar("filter_sparsity/mean", float(np.mean(list(values.values()))), step)
            self._writer.flush()

    def on_train_end(self, logs=None):
        self.zero_masked_weights()
        final = getattr(self.schedule, "final_sparsity", None)
        reached = self.sparsity()
        low = {n: v for n, v in reached.items()
               if final is not None and v < final - 1.0 / self.masks[n].channels}
        if low and self.groups:
            warnings.warn(
                f"FilterPruning stopped at step {self.step} before reaching target sparsity "
                f"{final:g} (reached: " + ", ".join(f"{n} {v:.2f}" for n, v in low.items())
                + "); train longer or end the schedule earlier (pruning steps are every "
                f"{getattr(self.schedule, 'frequency', '?')} batches).", stacklevel=2)
        if self._writer is not None:
            self._writer.flush()
