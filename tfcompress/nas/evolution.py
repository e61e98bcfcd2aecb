"""Fast unsupervised architecture evolution with a contrastive fitness (FaUNAE, card B3) —
a reduced version.

One architecture (one op per edge, a gated supernet) evolves by mutation, without labels:

1. every epoch ``fit`` trains the current architecture's weights; with
   ``train_contrastive=True`` the supernet's training objective is replaced by the contrastive
   loss below (labels ignored), else the supervised loss is kept;
2. at the start of every epoch after the first, one edge (of the normal or the reduction cell)
   mutates: a new alive op ``k`` is drawn with ``p = lambda1 p_mt + (1 - lambda1) p_rm``, where
   ``p_mt ∝ exp(-(l_k - sqrt(2 ln(N + 1) / (n_k + 1))))`` favours a low running loss ``l_k`` and
   rarely tried ops (an LCB of the loss), and ``p_rm ∝ exp(-MS_k / max MS)`` favours ops with
   few parameters ``MS_k`` (the card's model-size restriction);
3. at the end of the epoch the parent and the child are both evaluated with the current weights
   on a fixed batch with fixed augmentations: ``a`` = contrastive loss; every op of an evaluated
   architecture gets ``l <- lambda2 l + (1 - lambda2) a`` (``l = a`` the first time); the child
   is kept if its loss is lower, else the parent is restored (Eq. 5);
4. every ``eliminate_every`` epochs, on every edge the tried alive op with the highest running
   loss (other than the current one) is eliminated (removed from the alive mask).

Contrastive loss: SimCLR's NT-Xent (Chen et al. 2020, arXiv 2002.05709) between two augmented
views (random horizontal flip and random shift by up to ``shift`` pixels) of each image, on the
L2-normalized global-average-pooled features of the supernet, with in-batch negatives:

    L = -1/(2B) sum_i log( exp(z_i . z_p(i) / tau) / sum_{k != i} exp(z_i . z_k / tau) )

**Reduced (❓/🟡, documented).** FaUNAE's exact mutation probability (its Eq. 1) and the
weighting of its Eq. 4 were not recovered; the forms above are this implementation's. It uses
SimCLR's in-batch negatives instead of MoCo's momentum teacher and queue, no projection head,
a single evolving individual (no population), and starts from a random architecture instead of
a searched one (pass ``initial=genotype``-style choices through :meth:`set_choice`).
"""

import numpy as np

from tfcompress._keras import tf
from tfcompress.nas.strategy import Forward, SearchStrategy, exclude_mask, fixed_arrays
from tfcompress.nas.supernet import CELL_TYPES


def nt_xent(z1, z2, temperature=0.2):
    """SimCLR's normalized-temperature cross-entropy between two views ``(B, d)`` each."""
    z = tf.math.l2_normalize(tf.concat([z1, z2], 0), axis=1)
    n = tf.shape(z)[0]
    b = n // 2
    sim = tf.matmul(z, z, transpose_b=True) / temperature
    sim = sim - 1e9 * tf.eye(n, dtype=sim.dtype)          # exclude k == i
    positive = tf.concat([tf.range(b, n), tf.range(0, b)], 0)
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=positive, logits=sim)
    return tf.reduce_mean(losses)


def augment(x, shift=2, seed=None):
    """Random horizontal flip and random translation by up to ``shift`` pixels (zero fill), per
    image. ``seed``: a ``(2,)`` int tensor for a deterministic (stateless) draw."""
    x = tf.convert_to_tensor(x)
    b, h, w = tf.shape(x)[0], x.shape[1], x.shape[2]
    if seed is None:
        u = tf.random.uniform((b, 3))
    else:
        u = tf.random.stateless_uniform((b, 3), seed=seed)
    flipped = tf.where(u[:, :1, None, None] < 0.5, x[:, :, ::-1, :], x)
    if not shift:
        return flipped
    padded = tf.pad(flipped, [[0, 0], [shift, shift], [shift, shift], [0, 0]])
    oy = tf.cast(u[:, 1] * (2 * shift + 1), tf.int32)
    ox = tf.cast(u[:, 2] * (2 * shift + 1), tf.int32)
    hp, wp = h + 2 * shift, w + 2 * shift
    boxes = tf.stack([tf.cast(oy, tf.float32) / (hp - 1), tf.cast(ox, tf.float32) / (wp - 1),
                      tf.cast(oy + h - 1, tf.float32) / (hp - 1),
                      tf.cast(ox + w - 1, tf.float32) / (wp - 1)], 1)
    return tf.image.crop_and_resize(padded, boxes, tf.range(b), (h, w), method="nearest")


class Evolution(SearchStrategy):
    """Unsupervised evolution with a contrastive fitness (reduced FaUNAE; module docstring).

    Args:
        space: the :class:`~tfcompress.nas.DartsSpace` of the supernet.
        data: unlabeled images (an array, ``(x, y)`` with ``y`` ignored, or a dataset); the
            first ``eval_size`` form the fixed fitness batch.
        temperature: NT-Xent temperature.
        lambda1, lambda2: mutation mixing weight and running-loss weight.
        eliminate_every: epochs between eliminations.
        train_contrastive: train the weights on the contrastive loss (unsupervised).
        exclude: ops never used (``none`` by default).
        shift: the augmentation's maximum translation.
        seed: mutation seed.
    """

    name = "Evolution"

    def __init__(self, space, data, *, temperature=0.2, lambda1=0.5, lambda2=0.7,
                 eliminate_every=2, train_contrastive=True, exclude=("none",), eval_size=256,
                 shift=2, seed=0, verbose=0, log_dir=None):
        super().__init__(space, verbose=verbose, log_dir=log_dir)
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature!r}.")
        for name, v in (("lambda1", lambda1), ("lambda2", lambda2)):
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v!r}.")
        if not isinstance(eliminate_every, int) or eliminate_every < 1:
            raise ValueError(f"eliminate_every must be a positive int, got {eliminate_every!r}.")
        x = fixed_arrays(data, eval_size, labels=False)
        if len(x) < 2:
            raise ValueError("The fitness batch needs at least 2 images (contrastive negatives).")
        self.temperature, self.lambda1, self.lambda2 = float(temperature), float(lambda1), float(lambda2)
        self.eliminate_every, self.train_contrastive, self.shift = eliminate_every, train_contrastive, shift
        self.keep = exclude_mask(space, exclude)
        self.rng = np.random.default_rng(seed)
        # fixed views for a fair comparison of parent and child
        self.view1 = augment(x, shift, seed=tf.constant([seed, 1])).numpy()
        self.view2 = augment(x, shift, seed=tf.constant([seed, 2])).numpy()
        e, o = space.num_edges, space.num_ops
        self.loss = {t: np.zeros((e, o)) for t in CELL_TYPES}
        self.n = {t: np.zeros((e, o), np.int64) for t in CELL_TYPES}
        self.choice = {t: np.zeros(e, np.int64) for t in CELL_TYPES}
        self.mutation = None          # (cell, edge, parent op) of the pending child
        self.history = []             # (epoch, parent loss, child loss, accepted)

    # ----- attachment ---------------------------------------------------------------------
    def _attach(self, model):
        for t in CELL_TYPES:
            alive = model.alive(t) & self.keep[None, :]
            model.set_alive(t, alive)
            for e in range(self.space.num_edges):
                self.choice[t][e] = self.rng.choice(np.where(alive[e])[0])
        self.sizes = {t: self._op_sizes(model, t) for t in CELL_TYPES}
        self._features = Forward(model, features=True)
        if self.train_contrastive:
            temperature, shift = self.temperature, self.shift

            def objective(m, x, y):
                z1 = m(augment(x, shift), training=True, return_features=True)
                z2 = m(augment(x, shift), training=True, return_features=True)
                return nt_xent(z1, z2, temperature)

            model.objective = objective
            model.reset_train_functions()
        self._apply_choice()

    def _op_sizes(self, model, cell_type):
        """Parameters of each op on each edge (from the first cell of that type)."""
        cell = next((c for c in model.cells if c.cell_type == cell_type), None)
        sizes = np.zeros((self.space.num_edges, self.space.num_ops))
        if cell is not None:
            for e, mixed in enumerate(cell.edges):
                for o, op in enumerate(mixed.candidates):
                    sizes[e, o] = sum(int(np.prod(w.shape)) for w in op.trainable_weights)
        return sizes

    def _apply_choice(self):
        model = self.supernet
        for t in CELL_TYPES:
            gate = np.zeros((self.space.num_edges, self.space.num_ops))
            gate[np.arange(self.space.num_edges), self.choice[t]] = 1.0
            model.set_gate(t, gate)

    def set_choice(self, choice):
        """Set the current architecture: ``{cell_type: op index (or name) per edge}``."""
        for t in CELL_TYPES:
            ops = [self.space.primitives.index(c) if isinstance(c, str) else int(c) for c in choice[t]]
            if len(ops) != self.space.num_edges:
                raise ValueError(f"choice[{t!r}] has {len(ops)} entries; the cell has "
                                 f"{self.space.num_edges} edges.")
            self.choice[t] = np.asarray(ops, np.int64)
        if self._attached is not None:
            self._apply_choice()

    # ----- evolution ----------------------------------------------------------------------
    def fitness(self):
        """Contrastive loss of the current (gated) architecture on the fixed views."""
        z1, z2 = self._features(self.view1), self._features(self.view2)
        return float(nt_xent(tf.constant(z1), tf.constant(z2), self.temperature))

    def mutation_probs(self, cell_type, edge):
        """``lambda1 p_mt + (1 - lambda1) p_rm`` over the alive ops other than the current."""
        alive = self.supernet.alive(cell_type)[edge].copy()
        alive[self.choice[cell_type][edge]] = False
        if not alive.any():
            return None
        n, loss = self.n[cell_type][edge], self.loss[cell_type][edge]
        seen = n > 0
        mean = loss[seen].mean() if seen.any() else 0.0
        l_hat = np.where(seen, loss, mean)
        s = -(l_hat - np.sqrt(2 * np.log(n.sum() + 1) / (n + 1)))
        size = self.sizes[cell_type][edge]
        r = -size / max(size.max(), 1.0)
        p = np.zeros(len(alive))
        for score, weight in ((s, self.lambda1), (r, 1 - self.lambda1)):
            e = np.where(alive, np.exp(score - score[alive].max()), 0.0)
            p += weight * e / e.sum()
        return p / p.sum()

    def on_epoch_begin(self, epoch, logs=None):
        if self.epochs_done == 0:
            return
        order = [(t, e) for t in CELL_TYPES for e in range(self.space.num_edges)]
        self.rng.shuffle(order)
        for t, e in order:
            p = self.mutation_probs(t, e)
            if p is not None:
                parent = int(self.choice[t][e])
                self.choice[t][e] = int(self.rng.choice(len(p), p=p))
                self.mutation = (t, e, parent)
                self._apply_choice()
                return
        self.mutation = None

    def _record(self, value):
        for t in CELL_TYPES:
            rows, k = np.arange(self.space.num_edges), self.choice[t]
            first = self.n[t][rows, k] == 0
            self.loss[t][rows, k] = np.where(
                first, value, self.lambda2 * self.loss[t][rows, k] + (1 - self.lambda2) * value)
            self.n[t][rows, k] += 1

    def on_epoch_end(self, epoch, logs=None):
        child = self.fitness()
        self._record(child)
        parent_loss, accepted = None, None
        if self.mutation is not None:
            t, e, parent = self.mutation
            mutated = int(self.choice[t][e])
            self.choice[t][e] = parent
            self._apply_choice()
            parent_loss = self.fitness()
            self._record(parent_loss)
            accepted = child < parent_loss
            if accepted:
                self.choice[t][e] = mutated
                self._apply_choice()
            self.mutation = None
        self.history.append((epoch, parent_loss, child, accepted))
        if (self.epochs_done + 1) % self.eliminate_every == 0:
            self._eliminate()
        super().on_epoch_end(epoch, logs)

    def _eliminate(self):
        model = self.supernet
        for t in CELL_TYPES:
            alive = model.alive(t)
            for e in range(self.space.num_edges):
                cand = alive[e] & (self.n[t][e] > 0)
                cand[self.choice[t][e]] = False
                if alive[e].sum() > 1 and cand.any():
                    worst = np.where(cand, self.loss[t][e], -np.inf)
                    alive[e, int(np.argmax(worst))] = False
            model.set_gate(t, None)
            model.set_alive(t, alive)
        self._apply_choice()

    def on_train_end(self, logs=None):
        if self.train_contrastive:
            self.supernet.objective = None
            self.supernet.reset_train_functions()

    def scores(self):
        """The current architecture only; an edge's strength is minus its op's running loss."""
        out = {}
        for t in CELL_TYPES:
            s = np.full((self.space.num_edges, self.space.num_ops), -np.inf)
            rows, k = np.arange(self.space.num_edges), self.choice[t]
            s[rows, k] = np.where(self.n[t][rows, k] > 0, -self.loss[t][rows, k], 0.0)
            out[t] = s
        return out

    def get_state(self):
        state = super().get_state()
        state.update({"loss": {t: self.loss[t].tolist() for t in CELL_TYPES},
                      "n": {t: self.n[t].tolist() for t in CELL_TYPES},
                      "choice": {t: self.choice[t].tolist() for t in CELL_TYPES},
                      "rng": self.rng.bit_generator.state,
                      "history": [list(h) for h in self.history]})
        return state

    def _set_counters(self, state):
        super()._set_counters(state)
        for t in CELL_TYPES:
            self.loss[t] = np.asarray(state["loss"][t], float)
            self.n[t] = np.asarray(state["n"][t], np.int64)
            self.choice[t] = np.asarray(state["choice"][t], np.int64)
        self.rng.bit_generator.state = state["rng"]
        self.history = [tuple(h) for h in state.get("history", [])]

    def _restore(self, state):
        self._apply_choice()
