"""The base of the search strategies: a Keras callback attached to a supernet.

A strategy is a ``keras.callbacks.Callback`` given to ``supernet.fit(..., callbacks=[search])``;
``fit`` trains the network weights on the training data, the strategy changes the architecture
(its own optimizer on its own data split, or op sampling and removal). Its bookkeeping is
``get_state()`` (JSON-serializable) / ``set_state()``; the architecture parameters and masks are
variables of the supernet, saved with its weights.
"""

import json

import numpy as np

from tfcompress._distribute import check_workers_agree
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


class StrategyState:
    """The JSON state of a search strategy, declared once instead of written out per strategy.

    A strategy class lists the attributes its :meth:`SearchStrategy.get_state` saves in a
    class attribute ``state_fields = StrategyState(...)``; the fields of every class in the
    hierarchy are saved and restored (``DARTS`` adds ``arch_steps`` to the base's
    ``epochs_done``, ``BNAS`` adds its bandit table to DARTS'). Restoring checks that every
    field is present and that per-cell arrays have the shape the strategy has now.

    Args:
        cells: ``{attribute: numpy dtype}`` for per-cell-type arrays, attributes holding
            ``{"normal": array, "reduce": array}`` (bandit tables ``m``/``n``, choices).
        ints: int attributes (counters).
        records: list attributes whose items are tuples (histories); saved as JSON lists and
            restored as tuples.
        rng: save the state of the strategy's ``numpy.random.Generator`` ``self.rng``.

    >>> spec = StrategyState(cells={"n": np.int64}, ints=("since_prune",), records=("history",))
    >>> class S: pass
    >>> s = S(); s.n = {"normal": np.zeros((2, 3), np.int64), "reduce": np.ones((2, 3), np.int64)}
    >>> s.since_prune, s.history = 4, [(0, 0.5)]
    >>> state = spec.dump(s)
    >>> state["n"]["reduce"], state["since_prune"], state["history"]
    ([[1, 1, 1], [1, 1, 1]], 4, [[0, 0.5]])
    >>> t = S(); t.n = {"normal": np.zeros((2, 3), np.int64), "reduce": np.zeros((2, 3), np.int64)}
    >>> spec.load(t, state); int(t.n["reduce"].sum()), t.history
    (6, [(0, 0.5)])
    """

    def __init__(self, *, cells=None, ints=(), records=(), rng=False):
        self.cells = dict(cells or {})
        self.ints, self.records, self.rng = tuple(ints), tuple(records), bool(rng)

    def dump(self, strategy):
        """The fields of ``strategy`` as JSON-serializable values."""
        out = {}
        for name in self.cells:
            out[name] = {t: np.asarray(a).tolist() for t, a in getattr(strategy, name).items()}
        for name in self.ints:
            out[name] = int(getattr(strategy, name))
        for name in self.records:
            out[name] = [list(r) for r in getattr(strategy, name)]
        if self.rng:
            out["rng"] = strategy.rng.bit_generator.state
        return out

    def load(self, strategy, state):
        """Set the fields of ``strategy`` from ``state`` (a :meth:`dump` result)."""
        names = list(self.cells) + list(self.ints) + list(self.records) + (["rng"] if self.rng else [])
        missing = [n for n in names if n not in state]
        if missing:
            raise ValueError(f"The {type(strategy).__name__} state lacks the field(s) "
                             f"{', '.join(missing)}; was it saved by an older version?")
        for name, dtype in self.cells.items():
            current = getattr(strategy, name)
            if set(state[name]) != set(current):
                raise ValueError(f"State field {name!r} has cell types {sorted(state[name])}; "
                                 f"expected {sorted(current)}.")
            new = {}
            for t, value in state[name].items():
                a = np.asarray(value, dtype)
                if a.shape != np.shape(current[t]):
                    raise ValueError(f"State field {name}[{t!r}] has shape {a.shape}; this "
                                     f"strategy's space needs {np.shape(current[t])}.")
                new[t] = a
            setattr(strategy, name, new)
        for name in self.ints:
            setattr(strategy, name, int(state[name]))
        for name in self.records:
            setattr(strategy, name, [tuple(r) for r in state[name]])
        if self.rng:
            strategy.rng.bit_generator.state = state["rng"]


class SearchStrategy(keras.callbacks.Callback):
    """Base class: attaches to a supernet of ``space``, reports, derives the genotype.

    Args:
        space: the :class:`~tfcompress.nas.DartsSpace` the supernet was built from.
        verbose: print the genotype and the op weights after every epoch.
        log_dir: write the op weights as TensorBoard scalars
            (``<cell>/<src>-><node>/<op>``) and the genotype as text there.
    """

    name = "search"
    state_fields = StrategyState(ints=("epochs_done",))

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
        self._restored_from_checkpoint = False

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
            # The bookkeeping rides along in the supernet's checkpoints (BackupAndRestore,
            # tf.train.Checkpoint, save_weights in TF format): see _CheckpointedState.
            model._search_strategy_state = _CheckpointedState(self)

    def on_epoch_begin(self, epoch, logs=None):
        if self._restored_from_checkpoint:
            # A checkpoint restore wrote the op masks straight into their variables: point the
            # train function at a graph traced for them (as set_alive would have).
            self._restored_from_checkpoint = False
            self.supernet.refresh()

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
        self._check_workers_agree(epoch)
        self.report(epoch)

    def _check_workers_agree(self, epoch):
        """Under ``MultiWorkerMirroredStrategy`` each worker runs its own copy of this callback;
        the architecture steps are all-reduced and the numpy bookkeeping (sampling, scores,
        op removal) is computed from identical weights with identically seeded generators,
        so the copies agree. One all-reduce of a fingerprint per epoch checks it, and every
        worker raises if they do not (instead of searching on with different supernets)."""
        model = self.supernet
        arrays = list(model.arch_variables) + list(model.arch_state_variables)
        arrays.append(json.dumps(self.get_state(), sort_keys=True))
        check_workers_agree(model.distribute_strategy, arrays,
                            f"the architecture and the {self.name} state after epoch {epoch}")

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
    def _state_specs(self):
        return [c.__dict__["state_fields"] for c in reversed(type(self).__mro__)
                if isinstance(c.__dict__.get("state_fields"), StrategyState)]

    def get_state(self):
        """JSON-serializable bookkeeping (the supernet's variables are saved with its weights):
        the fields every class of the strategy declares in its ``state_fields``."""
        state = {"strategy": self.name, "space": self.space.get_config()}
        for spec in self._state_specs():
            state.update(spec.dump(self))
        return state

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
        """Hook: restore the plain bookkeeping of ``state`` (no supernet needed); by default
        the ``state_fields`` of every class."""
        for spec in self._state_specs():
            spec.load(self, state)

    def _restore(self, state):
        """Hook: restore the parts of ``state`` that need the supernet."""


class _CheckpointedState(tf.train.experimental.PythonState):
    """A strategy's :meth:`~SearchStrategy.get_state` JSON as an object of the supernet's
    checkpoints.

    Attached to the supernet when the strategy attaches, so ``tf.keras.callbacks.
    BackupAndRestore`` (and ``tf.train.Checkpoint(model=supernet)``, ``save_weights`` in TF
    format) save the bookkeeping with the weights, architecture parameters and op masks, and a
    restore sets it back with :meth:`~SearchStrategy.set_state`. Put the strategy before
    ``BackupAndRestore`` in the callback list, so an epoch's backup holds the strategy's
    end-of-epoch work (scores, op removal).
    """

    def __init__(self, strategy):
        self._strategy = strategy

    def serialize(self):
        return json.dumps(self._strategy.get_state())

    def deserialize(self, string_value):
        text = string_value.decode() if isinstance(string_value, bytes) else str(string_value)
        self._strategy.set_state(text)
        self._strategy._restored_from_checkpoint = True


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
