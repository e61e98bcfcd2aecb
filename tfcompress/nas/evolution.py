"""Fast unsupervised architecture evolution with a contrastive fitness (FaUNAE, card B3):
a population of architectures on a weight-sharing supernet, scored without labels by MoCo.

A population of ``population`` architectures (one op per edge each; a gated supernet runs one
of them at a time, all sharing the supernet's weights) evolves without labels:

1. every epoch ``fit`` trains the weights of one architecture (the child, or at the first epoch
   the first member); with ``train_contrastive=True`` the supernet's training objective is the
   contrastive loss below (labels ignored), else the supervised loss is kept;
2. at the start of every epoch after the first, a parent is picked by tournament (the lowest
   fitness loss of ``tournament`` members drawn at random) and one of its edges (of the normal
   or the reduction cell) mutates into the child: a new alive op ``k`` is drawn with
   ``p = lambda1 p_mt + (1 - lambda1) p_rm``, where
   ``p_mt ∝ exp(-(l_k - sqrt(2 ln(N + 1) / (n_k + 1))))`` favours a low running loss ``l_k``
   and rarely tried ops (an LCB of the loss), and ``p_rm ∝ exp(-MS_k / max MS)`` favours ops
   with few parameters ``MS_k`` (the card's model-size restriction, Eq. 3);
3. at the end of the epoch the child and every member are evaluated with the current weights
   on a fixed batch with fixed augmentations: ``a`` = contrastive loss; every op of an evaluated
   architecture gets ``l <- lambda2 l + (1 - lambda2) a`` (``l = a`` the first time, Eq. 4);
   the child replaces the worst member if its loss is lower, else it is dropped (Eq. 5, with
   the population's worst member in place of the single parent); the best member becomes the
   current architecture (:meth:`Evolution.genotype`);
4. every ``eliminate_every`` epochs, on every edge the tried alive op with the highest running
   loss that no member uses is eliminated (removed from the alive mask).

With ``population=1`` this is the single-individual evolution (the child against its parent).

Contrastive loss (``contrastive=``):

- ``"moco"`` (default; the card's form): MoCo's InfoNCE between the supernet's features of one
  view (queries) and a momentum key encoder's features of another view, against a FIFO queue
  of negative keys (:mod:`tfcompress.nas.moco`: key encoder = momentum copy of the supernet,
  updated after every weight step, the batch's keys enqueued then). The fitness uses the same
  key encoder and the queue as it is at the end of the epoch, for every architecture.
- ``"simclr"``: SimCLR's NT-Xent (Chen et al. 2020, arXiv 2002.05709) between two augmented
  views with in-batch negatives (no key encoder, no queue)::

      L = -1/(2B) sum_i log( exp(z_i . z_p(i) / tau) / sum_{k != i} exp(z_i . z_k / tau) )

Views: random horizontal flip and random shift by up to ``shift`` pixels; features: the
L2-normalized global-average-pooled output of the last cell.

**Reconstruction (❓/🟡, documented).** FaUNAE's exact mutation probability (its Eq. 1) and the
weighting of its Eq. 4 were not recovered, and the card does not say how the population is
selected; tournament selection and worst-member replacement are this implementation's choice
(regularized-evolution style, Real et al., AAAI 2019). No projection head and no shuffled BN in
MoCo; the search starts from random architectures instead of a searched one (pass choices to
:meth:`Evolution.set_choice` to seed the first member).
"""

import numpy as np

from tfcompress._keras import tf
from tfcompress.nas.moco import MoCo
from tfcompress.nas.strategy import Forward, SearchStrategy, StrategyState, exclude_mask, fixed_arrays
from tfcompress.nas.supernet import CELL_TYPES

CONTRASTIVE = ("moco", "simclr")


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
    """Unsupervised evolution of a population with a contrastive fitness (FaUNAE; module
    docstring).

    Args:
        space: the :class:`~tfcompress.nas.DartsSpace` of the supernet.
        data: unlabeled images (an array, ``(x, y)`` with ``y`` ignored, or a dataset); the
            first ``eval_size`` form the fixed fitness batch.
        population: the number of architectures kept (1: a single evolving individual).
        tournament: members drawn to pick a parent (the one with the lowest loss wins).
        contrastive: ``"moco"`` (key encoder + queue) or ``"simclr"`` (in-batch negatives).
        temperature: the InfoNCE / NT-Xent temperature.
        queue_size, momentum: MoCo's ``K`` and key-encoder momentum ``m``.
        lambda1, lambda2: mutation mixing weight and running-loss weight.
        eliminate_every: epochs between eliminations.
        train_contrastive: train the weights on the contrastive loss (unsupervised).
        exclude: ops never used (``none`` by default).
        shift: the augmentation's maximum translation.
        seed: mutation / initialization seed.

    Attributes:
        population: list of ``{cell_type: op index per edge}``.
        fitness: the members' last contrastive losses (lower is better; ``nan`` before the
            first evaluation).
        choice: the current architecture (the best member after each epoch).
        moco: the :class:`~tfcompress.nas.moco.MoCo` key encoder and queue (``None`` for
            SimCLR); save it with ``tf.train.Checkpoint(moco=search.moco)`` to resume.
        history: ``(epoch, worst member's loss, child's loss, accepted)`` per epoch.
    """

    name = "Evolution"
    state_fields = StrategyState(cells={"loss": float, "n": np.int64, "choice": np.int64},
                                 records=("history",), rng=True)

    def __init__(self, space, data, *, population=4, tournament=2, contrastive="moco",
                 temperature=0.2, queue_size=1024, momentum=0.99, lambda1=0.5, lambda2=0.7,
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
        if not isinstance(population, int) or population < 1:
            raise ValueError(f"population must be a positive int, got {population!r}.")
        if not isinstance(tournament, int) or not 1 <= tournament <= population:
            raise ValueError(f"tournament must be an int in [1, population={population}], got "
                             f"{tournament!r}.")
        if contrastive not in CONTRASTIVE:
            raise ValueError(f"contrastive must be one of {CONTRASTIVE}, got {contrastive!r}.")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}.")
        if not isinstance(queue_size, int) or queue_size < 1:
            raise ValueError(f"queue_size must be a positive int, got {queue_size!r}.")
        x = fixed_arrays(data, eval_size, labels=False)
        if len(x) < 2:
            raise ValueError("The fitness batch needs at least 2 images (contrastive negatives).")
        self.temperature, self.lambda1, self.lambda2 = float(temperature), float(lambda1), float(lambda2)
        self.eliminate_every, self.train_contrastive, self.shift = eliminate_every, train_contrastive, shift
        self.population_size, self.tournament, self.contrastive = population, tournament, contrastive
        self.queue_size, self.momentum, self.seed = queue_size, float(momentum), seed
        self.keep = exclude_mask(space, exclude)
        self.rng = np.random.default_rng(seed)
        # fixed views for a fair comparison of the architectures
        self.view1 = augment(x, shift, seed=tf.constant([seed, 1])).numpy()
        self.view2 = augment(x, shift, seed=tf.constant([seed, 2])).numpy()
        e, o = space.num_edges, space.num_ops
        self.loss = {t: np.zeros((e, o)) for t in CELL_TYPES}
        self.n = {t: np.zeros((e, o), np.int64) for t in CELL_TYPES}
        self.choice = {t: np.zeros(e, np.int64) for t in CELL_TYPES}
        self.population = []
        self.fitness = []
        self.child = None             # (choice, (cell, edge, parent op, new op)) trained this epoch
        self.moco = None
        self.history = []
        self._initial = None

    # ----- attachment ---------------------------------------------------------------------
    def _attach(self, model):
        for t in CELL_TYPES:
            model.set_alive(t, model.alive(t) & self.keep[None, :])
        if not self.population:
            self.population = [self._random_choice(model) for _ in range(self.population_size)]
            self.fitness = [float("nan")] * self.population_size
            if self._initial is not None:
                self.population[0] = self._copy(self._initial)
        self.choice = self._copy(self.population[0])
        self.sizes = {t: self._op_sizes(model, t) for t in CELL_TYPES}
        self._features = Forward(model, features=True)
        if self.contrastive == "moco":
            self.moco = MoCo(model, queue_size=self.queue_size, momentum=self.momentum,
                             temperature=self.temperature, seed=self.seed)
            self._key_features = Forward(self.moco.key, features=True)
        if self.train_contrastive:
            model.objective, model.after_step = self._objective()
            model.reset_train_functions()
        self._apply_choice()

    def _objective(self):
        shift, temperature, moco = self.shift, self.temperature, self.moco
        if moco is None:
            def simclr(m, x, y):
                z1 = m(augment(x, shift), training=True, return_features=True)
                z2 = m(augment(x, shift), training=True, return_features=True)
                return nt_xent(z1, z2, temperature)
            return simclr, None

        def objective(m, x, y):
            q = m(augment(x, shift), training=True, return_features=True)
            k = tf.stop_gradient(moco.key(augment(x, shift), training=True, return_features=True))
            return moco.loss(q, k), k

        def after_step(m, keys):
            moco.after_step(keys)

        return objective, after_step

    def _random_choice(self, model):
        out = {}
        for t in CELL_TYPES:
            alive = model.alive(t)
            out[t] = np.asarray([self.rng.choice(np.where(alive[e])[0])
                                 for e in range(self.space.num_edges)], np.int64)
        return out

    @staticmethod
    def _copy(choice):
        return {t: np.array(c, np.int64) for t, c in choice.items()}

    def _op_sizes(self, model, cell_type):
        """Parameters of each op on each edge (from the first cell of that type)."""
        cell = next((c for c in model.cells if c.cell_type == cell_type), None)
        sizes = np.zeros((self.space.num_edges, self.space.num_ops))
        if cell is not None:
            for e, mixed in enumerate(cell.edges):
                for o, op in enumerate(mixed.candidates):
                    sizes[e, o] = sum(int(np.prod(w.shape)) for w in op.trainable_weights)
        return sizes

    def _apply_choice(self, choice=None):
        """Gate the supernet (and MoCo's key encoder) to ``choice`` (default: :attr:`choice`)."""
        model, choice = self.supernet, self.choice if choice is None else choice
        for t in CELL_TYPES:
            gate = np.zeros((self.space.num_edges, self.space.num_ops))
            gate[np.arange(self.space.num_edges), choice[t]] = 1.0
            model.set_gate(t, gate)
        if self.moco is not None:
            self.moco.sync_structure()

    def set_choice(self, choice):
        """Set the current architecture and the first member of the population:
        ``{cell_type: op index (or name) per edge}``."""
        parsed = {}
        for t in CELL_TYPES:
            ops = [self.space.primitives.index(c) if isinstance(c, str) else int(c) for c in choice[t]]
            if len(ops) != self.space.num_edges:
                raise ValueError(f"choice[{t!r}] has {len(ops)} entries; the cell has "
                                 f"{self.space.num_edges} edges.")
            parsed[t] = np.asarray(ops, np.int64)
        self.choice = self._copy(parsed)
        if self.population:
            self.population[0] = self._copy(parsed)
            self.fitness[0] = float("nan")
        else:
            self._initial = self._copy(parsed)
        if self._attached is not None:
            self._apply_choice()

    # ----- evolution ----------------------------------------------------------------------
    def fitness_of(self, choice=None):
        """The contrastive loss of ``choice`` (default: the current architecture) on the fixed
        views with the current weights (MoCo: the current key encoder and queue)."""
        if choice is not None:
            self._apply_choice(choice)
        z1 = self._features(self.view1)
        if self.moco is None:
            z2 = self._features(self.view2)
            return float(nt_xent(tf.constant(z1), tf.constant(z2), self.temperature))
        k = self._key_features(self.view2)
        return float(self.moco.loss(tf.constant(z1), tf.constant(k)))

    def mutation_probs(self, cell_type, edge, current=None):
        """``lambda1 p_mt + (1 - lambda1) p_rm`` over the alive ops other than ``current``
        (default: the current architecture's op on that edge); ``None`` if there is none."""
        alive = self.supernet.alive(cell_type)[edge].copy()
        alive[self.choice[cell_type][edge] if current is None else current] = False
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

    def select_parent(self):
        """Tournament selection: the member with the lowest loss among ``tournament`` drawn
        without replacement (unevaluated members count as worst)."""
        drawn = self.rng.choice(len(self.population), size=self.tournament, replace=False)
        losses = [self.fitness[i] if np.isfinite(self.fitness[i]) else np.inf for i in drawn]
        return int(drawn[int(np.argmin(losses))])

    def mutate(self, parent):
        """A child of ``parent`` (a choice dict) with one edge mutated, and the mutation
        ``(cell, edge, old op, new op)``; ``(None, None)`` if no edge can change."""
        order = [(t, e) for t in CELL_TYPES for e in range(self.space.num_edges)]
        self.rng.shuffle(order)
        for t, e in order:
            p = self.mutation_probs(t, e, current=parent[t][e])
            if p is not None:
                child = self._copy(parent)
                child[t][e] = int(self.rng.choice(len(p), p=p))
                return child, (t, e, int(parent[t][e]), int(child[t][e]))
        return None, None

    def on_epoch_begin(self, epoch, logs=None):
        self.child = None
        if self.epochs_done == 0:
            self.choice = self._copy(self.population[0])
        else:
            child, mutation = self.mutate(self.population[self.select_parent()])
            if child is not None:
                self.child = (child, mutation)
                self.choice = self._copy(child)
        self._apply_choice()

    def _record(self, choice, value):
        for t in CELL_TYPES:
            rows, k = np.arange(self.space.num_edges), choice[t]
            first = self.n[t][rows, k] == 0
            self.loss[t][rows, k] = np.where(
                first, value, self.lambda2 * self.loss[t][rows, k] + (1 - self.lambda2) * value)
            self.n[t][rows, k] += 1

    def on_epoch_end(self, epoch, logs=None):
        trained = self._copy(self.choice)
        child_loss = self.fitness_of(trained)
        self._record(trained, child_loss)
        for i, member in enumerate(self.population):
            if self.child is None and i == 0 and self.epochs_done == 0:
                self.fitness[0] = child_loss        # the member trained in the first epoch
                continue
            self.fitness[i] = self.fitness_of(member)
            self._record(member, self.fitness[i])
        worst_loss, accepted = None, None
        if self.child is not None:
            worst = int(np.argmax(self.fitness))
            worst_loss = self.fitness[worst]
            accepted = bool(child_loss < worst_loss)
            if accepted:
                self.population[worst] = self._copy(self.child[0])
                self.fitness[worst] = child_loss
            self.child = None
        self.history.append((epoch, worst_loss, child_loss, accepted))
        best = int(np.argmin(self.fitness))
        self.choice = self._copy(self.population[best])
        if (self.epochs_done + 1) % self.eliminate_every == 0:
            self._eliminate()
        self._apply_choice()
        super().on_epoch_end(epoch, logs)

    def _eliminate(self):
        model = self.supernet
        for t in CELL_TYPES:
            alive = model.alive(t)
            used = np.zeros_like(alive)
            for member in self.population:
                used[np.arange(self.space.num_edges), member[t]] = True
            for e in range(self.space.num_edges):
                cand = alive[e] & (self.n[t][e] > 0) & ~used[e]
                if alive[e].sum() > 1 and cand.any():
                    worst = np.where(cand, self.loss[t][e], -np.inf)
                    alive[e, int(np.argmax(worst))] = False
            model.set_gate(t, None)
            model.set_alive(t, alive)

    def on_train_end(self, logs=None):
        if self.train_contrastive:
            self.supernet.objective = None
            self.supernet.after_step = None
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
        state["population"] = [{t: m[t].tolist() for t in CELL_TYPES} for m in self.population]
        state["fitness"] = [None if not np.isfinite(f) else float(f) for f in self.fitness]
        return state

    def _set_counters(self, state):
        super()._set_counters(state)
        members = state.get("population")
        if members is None:
            raise ValueError("The Evolution state lacks the field population; was it saved by an "
                             "older version?")
        self.population = [{t: np.asarray(m[t], np.int64) for t in CELL_TYPES} for m in members]
        self.fitness = [float("nan") if f is None else float(f) for f in state["fitness"]]

    def _restore(self, state):
        self._apply_choice()


__all__ = ["CONTRASTIVE", "Evolution", "augment", "nt_xent"]
