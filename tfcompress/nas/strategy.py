"""The base of the search strategies: a Keras callback attached to a supernet.

A strategy is a ``keras.callbacks.Callback`` given to ``supernet.fit(..., callbacks=[search])``;
``fit`` trains the network weights on the training data, the strategy changes the architecture
(its own optimizer on its own data split, or op sampling and removal). Its bookkeeping is
``get_state()`` (JSON-serializable) / ``set_state()``; the architecture parameters and masks are
variables of the supernet, saved with its weights.
"""

import json

import numpy as np

from tfcompress._keras import keras, tf
from tfcompress.nas.genotype import edge_index
from tfcompress.nas.supernet import CELL_TYPES, Supernet


def as_dataset(data, batch_size, *, labels=True, shuffle=True, seed=0, repeat=True):
    """A batched ``tf.data.Dataset`` from ``(x, y)`` arrays, ``x`` alone or a dataset.

    A dataset whose images are unbatched (rank 3) is batched with ``batch_size``.
    """
    if isinstance(data, tf.data.Dataset):
        spec = data.element_spec
        x_spec = spec[0] if isinstance(spec, tuple) else spec
        ds = data.batch(batch_size) if len(x_spec.shape) == 3 else data
    else:
        if labels:
            if not (isinstance(data, (tuple, list)) and len(data) == 2):
                raise ValueError("Expected validation data as an (x, y) pair of arrays or a "
                                 f"tf.data.Dataset of (x, y) batches, got {type(data).__name__}.")
            x, y = np.asarray(data[0], np.float32), np.asarray(data[1])
            if len(x) != len(y) or len(x) == 0:
                raise ValueError(f"Validation data: {len(x)} inputs and {len(y)} labels; need the "
                                 "same, non-zero count.")
            ds = tf.data.Dataset.from_tensor_slices((x, y))
        else:
            x = np.asarray(data[0] if isinstance(data, (tuple, list)) else data, np.float32)
            if len(x) == 0:
                raise ValueError("The data is empty.")
            ds = tf.data.Dataset.from_tensor_slices(x)
        if shuffle:
            ds = ds.shuffle(min(len(x), 10000), seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size)
    return ds.repeat() if repeat else ds


def fixed_arrays(data, limit, *, labels=True):
    """The first ``limit`` examples of arrays or a dataset, as numpy (a fixed scoring set)."""
    if not isinstance(data, tf.data.Dataset):
        if labels:
            x, y = as_pair(data)
            return x[:limit], y[:limit]
        x = np.asarray(data[0] if isinstance(data, (tuple, list)) else data, np.float32)
        return x[:limit]
    xs, ys, n = [], [], 0
    for batch in data:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        x = x.numpy()
        if x.ndim == 3:
            x = x[None]
        xs.append(x)
        if labels:
            y = batch[1].numpy()
            ys.append(y.reshape(len(x), *y.shape[1:]) if y.ndim else y[None])
        n += len(x)
        if n >= limit:
            break
    if not xs:
        raise ValueError("The scoring dataset is empty.")
    x = np.concatenate(xs)[:limit].astype(np.float32)
    return (x, np.concatenate(ys)[:limit]) if labels else x


def as_pair(data):
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise ValueError(f"Expected an (x, y) pair of arrays, got {type(data).__name__}.")
    x, y = np.asarray(data[0], np.float32), np.asarray(data[1])
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"{len(x)} inputs and {len(y)} labels; need the same, non-zero count.")
    return x, y


class Forward:
    """Batched inference through a supernet (retraced only when its alive ops change)."""

    def __init__(self, model, batch_size=256, features=False):
        self.model, self.batch_size, self.features = model, batch_size, features
        self._fns = {}

    def __call__(self, x):
        key = self.model.structure_key(training=False)
        if key not in self._fns:
            model, feats = self.model, self.features
            self._fns[key] = tf.function(lambda b: model(b, training=False, return_features=feats))
        fn = self._fns[key]
        self._fn = fn
        out = [self._fn(tf.constant(x[i: i + self.batch_size]))
               for i in range(0, len(x), self.batch_size)]
        return np.concatenate([o.numpy() for o in out])

    def accuracy(self, x, y):
        pred = self(x).argmax(-1)
        return float(np.mean(pred == np.asarray(y).reshape(-1)))


class SearchStrategy(keras.callbacks.Callback):
    """Base class: attaches to a supernet of ``space``, reports, derives the genotype.

    Args:
        space: the :class:`~tfcompress.nas.DartsSpace` the supernet was built from.
        verbose: print the genotype and the op weights after every epoch.
        log_dir: write the op weights as TensorBoard scalars
            (``<cell>/<src>-><node>/<op>``) and the genotype as text there.
    """

    name = "search"

    def __init__(self, space, *, verbose=0, log_dir=None):
        super().__init__()
        from tfcompress.nas.space import DartsSpace

        if not isinstance(space, DartsSpace):
            raise ValueError(f"Expected a tfcompress.nas.DartsSpace, got {type(space).__name__}.")
        self.space, self.verbose, self.log_dir = space, int(verbose), log_dir
        self.epochs_done = 0
        self._writer = None
        self._attached = None
        self._pending = None

    # ----- attachment ---------------------------------------------------------------------
    def set_model(self, model):
        if not isinstance(model, Supernet):
            raise ValueError(f"{type(self).__name__} works on a supernet from DartsSpace.build, "
                             f"got {type(model).__name__}.")
        self.space._check_supernet(model)
        self._check_head(model)
        super().set_model(model)
        if self._attached is not model:
            self._attached = model
            self._attach(model)
            if self._pending is not None:
                self._restore(self._pending)
                self._pending = None

    def _check_head(self, model):
        """Refuse a supernet whose output this strategy cannot score (default: classifiers)."""
        if model.head != "classifier":
            raise ValueError(f"{type(self).__name__} scores classifiers; this supernet has a "
                             f"{model.head!r} head. Search detection backbones with "
                             "tfcompress.nas.BDetNAS (or DARTS/PCDARTS/IDARTS, which use the "
                             "compiled loss).")

    def _attach(self, model):
        """Hook: prepare state for ``model`` (called once per supernet)."""

    @property
    def supernet(self):
        if self._attached is None:
            raise RuntimeError(f"{type(self).__name__} is not attached to a supernet yet; pass it "
                               "to supernet.fit(..., callbacks=[search]) first.")
        return self._attached

    # ----- architecture -------------------------------------------------------------------
    def scores(self):
        """``{cell_type: (edges, ops)}`` op scores the genotype is derived from (``-inf``:
        removed). Default: DARTS' alive-masked softmax(alpha), times the edge weight."""
        model = self.supernet
        out = {}
        for t in CELL_TYPES:
            w, ew = model.mixing_weights(t, gated=False)
            w = w.numpy() if ew is None else w.numpy() * ew.numpy()[:, None]
            out[t] = np.where(model.alive(t), w, -np.inf)
        return out

    def genotype(self):
        """The current :class:`~tfcompress.nas.Genotype` (top-2 edges per node, no ``none``)."""
        return self.space.genotype(scores=self.scores(),
                                   meta={"strategy": self.name, "epochs": self.epochs_done})

    # ----- progress -----------------------------------------------------------------------
    def on_epoch_end(self, epoch, logs=None):
        self.epochs_done += 1
        self.report(epoch)

    def report(self, epoch):
        if not self.verbose and not self.log_dir:
            return
        scores, geno = self.scores(), self.genotype()
        if self.verbose:
            print(self.format_report(epoch, scores, geno), flush=True)
        if self.log_dir:
            if self._writer is None:
                self._writer = tf.summary.create_file_writer(str(self.log_dir))
            with self._writer.as_default():
                for t in CELL_TYPES:
                    for k, i, j in edge_index(self.space.nodes):
                        for o, op in enumerate(self.space.primitives):
                            v = scores[t][k, o]
                            if np.isfinite(v):
                                _write(f"{t}/{i}->{j + 2}/{op}", tf.constant(float(v)), epoch, "scalars")
                _write("genotype", tf.constant(geno.to_json()), epoch, "text")
            self._writer.flush()

    def format_report(self, epoch, scores, genotype):
        """The text printed with ``verbose``: the genotype, then one line per edge."""
        lines = [f"[{self.name}] epoch {epoch + 1}: {genotype}"]
        for t in CELL_TYPES:
            for k, i, j in edge_index(self.space.nodes):
                cells = [f"{op}={scores[t][k, o]:.3f}" if np.isfinite(scores[t][k, o]) else f"{op}=x"
                         for o, op in enumerate(self.space.primitives)]
                lines.append(f"  {t:6s} {i}->{j + 2}: " + " ".join(cells))
        return "\n".join(lines)

    # ----- state --------------------------------------------------------------------------
    def get_state(self):
        """JSON-serializable bookkeeping (the supernet's variables are saved with its weights)."""
        return {"strategy": self.name, "space": self.space.get_config(),
                "epochs_done": self.epochs_done}

    def set_state(self, state):
        """Restore :meth:`get_state` (before or after attaching to the supernet)."""
        state = json.loads(state) if isinstance(state, str) else dict(state)
        if state.get("strategy") != self.name:
            raise ValueError(f"This state was saved by {state.get('strategy')!r}, not {self.name!r}.")
        if state.get("space") != self.space.get_config():
            raise ValueError("This state was saved for a different search space: "
                             f"{state.get('space')} vs {self.space.get_config()}.")
        self._set_counters(state)
        if self._attached is None:
            self._pending = state
        else:
            self._restore(state)

    def _set_counters(self, state):
        """Hook: restore the plain bookkeeping of ``state`` (no supernet needed)."""
        self.epochs_done = int(state["epochs_done"])

    def _restore(self, state):
        """Hook: restore the parts of ``state`` that need the supernet."""


def _write(tag, value, step, plugin):
    """A TensorBoard summary in the ``plugin`` format (``scalars``, ``text``), written with
    ``tf.summary.write`` so that the ``tensorboard`` package is not needed to log."""
    from tensorflow.core.framework import summary_pb2

    meta = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin))
    tf.summary.write(tag, value, step=step, metadata=meta)


def exclude_mask(space, exclude):
    """``(ops,)`` bool: ops left alive after removing ``exclude`` (names) from ``space``."""
    from tfcompress.nas.ops import canonical_op

    names = {canonical_op(e) for e in (exclude or ())}
    keep = np.array([p not in names for p in space.primitives])
    if not keep.any():
        raise ValueError(f"Excluding {sorted(names)} leaves no operation in {space.primitives}.")
    return keep
