"""ABanditNAS: anti-bandit architecture search (Chen et al., ECCV 2020; card B1).

Each edge's candidate ops are bandit arms. One op per edge is sampled every epoch (a gated
supernet computes only the sampled ops), the sampled network is trained for that epoch by
``model.fit`` (optionally on FGSM adversarial examples), and its accuracy ``a`` on a fixed
validation subset updates every sampled op (book Eqs. 4.9-4.13):

- initialization: sample ops not yet seen until every op of every edge was tried once, giving
  ``m_k = a``;
- LCB ``s_L(o_k) = m_k - sqrt(2 ln N / n_k)`` (``N``: samples on the edge so far, ``n_k``: of
  op ``k``), sampling ``p(o_k) = exp(-s_L) / sum exp(-s_L)`` over the alive ops;
- update ``m_k <- (1 - lambda) m_k + lambda a`` (lambda = 0.7, 🟡 from memory);
- after every ``K * T`` epochs of this phase (``K``: ops still alive on an edge), remove on
  every edge ``argmin_k s_U(o_k)``, ``s_U = m_k + sqrt(2 ln N / n_k)``, until one is left.

The removal epochs are :func:`bandit_schedule`.

Search space: ABanditNAS' 9 ops per edge, with its defensive ops (a Gabor filter and a
denoising block, :mod:`tfcompress.nas.defense`), are
``DartsSpace(ops="float", primitives=ABANDIT_PRIMITIVES)``; any other space works too.
Adversarial evaluation of the derived model: :meth:`ABanditNAS.robustness` (clean, FGSM and
PGD-k accuracy, :func:`~tfcompress.nas.adversarial.robust_accuracy`). Not done: BN
recalibration before measuring ``a``.
"""

import numpy as np

from tfcompress.nas.adversarial import fgsm_examples, robust_accuracy
from tfcompress.nas.strategy import Forward, SearchStrategy, StrategyState, exclude_mask, fixed_arrays
from tfcompress.nas.supernet import CELL_TYPES


def lcb(m, n, total):
    """Lower confidence bound ``m - sqrt(2 ln N / n)``."""
    return np.asarray(m, float) - np.sqrt(2.0 * np.log(total) / np.asarray(n, float))


def ucb(m, n, total):
    """Upper confidence bound ``m + sqrt(2 ln N / n)``."""
    return np.asarray(m, float) + np.sqrt(2.0 * np.log(total) / np.asarray(n, float))


def lcb_probs(m, n, total, alive):
    """``p_k = exp(-s_L(o_k)) / sum_alive exp(-s_L)``; 0 for removed ops.

    >>> lcb_probs([0.5, 0.5], [1, 4], 5, [True, True]).round(3).tolist()
    [0.71, 0.29]
    """
    alive = np.asarray(alive, bool)
    s = np.where(alive, -lcb(m, np.maximum(n, 1), total), -np.inf)
    e = np.exp(s - s[alive].max())
    return e / e.sum()


def bandit_schedule(num_ops, rounds=1, start=0):
    """0-based epochs at whose end one op per edge is removed.

    After ``start`` epochs (initialization or warm-up), with ``K`` ops alive an op is removed
    after ``K * rounds`` more epochs, until one op is left.

    >>> bandit_schedule(3, rounds=1, start=3)
    [5, 7]
    """
    out, epoch = [], start - 1
    for k in range(num_ops, 1, -1):
        epoch += k * rounds
        out.append(epoch)
    return out


class ABanditNAS(SearchStrategy):
    """Anti-bandit search as a callback (see the module docstring).

    Args:
        space: the :class:`~tfcompress.nas.DartsSpace` of the supernet.
        validation_data: ``(x, y)`` arrays or a dataset; its first ``eval_size`` examples are
            the fixed subset the accuracy ``a`` is measured on.
        rounds: ``T`` in the ``K * T`` removal period.
        lam: the update weight lambda of ``m``.
        exclude: ops not used as arms (ABanditNAS has no ``none`` op).
        adversarial: train on FGSM examples (``epsilon``, ``input_range``; see
            :func:`~tfcompress.nas.adversarial.fgsm_examples`).
        seed: sampling seed.
    """

    name = "ABanditNAS"
    state_fields = StrategyState(cells={"m": float, "n": np.int64, "choice": np.int64},
                                 ints=("since_prune",), records=("history",), rng=True)

    def __init__(self, space, validation_data, *, rounds=1, lam=0.7, exclude=("none",),
                 eval_size=1024, adversarial=False, epsilon=8 / 255, input_range=None, seed=0,
                 verbose=0, log_dir=None):
        super().__init__(space, verbose=verbose, log_dir=log_dir)
        if not isinstance(rounds, int) or rounds < 1:
            raise ValueError(f"rounds (T) must be a positive int, got {rounds!r}.")
        if not 0.0 < lam <= 1.0:
            raise ValueError(f"lam must be in (0, 1], got {lam!r}.")
        self.x_val, self.y_val = fixed_arrays(validation_data, eval_size)
        self.rounds, self.lam = rounds, float(lam)
        self.keep = exclude_mask(space, exclude)
        self.adversarial, self.epsilon, self.input_range = bool(adversarial), epsilon, input_range
        self.rng = np.random.default_rng(seed)
        e, o = space.num_edges, space.num_ops
        self.m = {t: np.zeros((e, o)) for t in CELL_TYPES}
        self.n = {t: np.zeros((e, o), np.int64) for t in CELL_TYPES}
        self.choice = {t: np.zeros(e, np.int64) for t in CELL_TYPES}
        self.since_prune = 0
        self.phase = "init"
        self.history = []     # (epoch, accuracy, number of alive ops per edge)

    def _attach(self, model):
        for t in CELL_TYPES:
            alive = model.alive(t) & self.keep[None, :]
            model.set_alive(t, alive)
        if self.adversarial:
            eps, rng_ = self.epsilon, self.input_range

            def adversary(m, x, y):
                return fgsm_examples(m, x, y, epsilon=eps, input_range=rng_)

            model.adversary = adversary
            model.reset_train_functions()
        self._forward = Forward(model)

    def alive_count(self):
        """Ops still alive per edge (the same on every edge)."""
        return int(self.supernet.alive("normal").sum(axis=1).max())

    def on_epoch_begin(self, epoch, logs=None):
        model = self.supernet
        unseen = any(((self.n[t] == 0) & model.alive(t)).any() for t in CELL_TYPES)
        self.phase = "init" if unseen else "bandit"
        for t in CELL_TYPES:
            alive = model.alive(t)
            for e in range(self.space.num_edges):
                if self.phase == "init":
                    cand = np.where(alive[e] & (self.n[t][e] == 0))[0]
                    cand = cand if cand.size else np.where(alive[e])[0]
                    self.choice[t][e] = self.rng.choice(cand)
                else:
                    p = lcb_probs(self.m[t][e], self.n[t][e], self.n[t][e].sum(), alive[e])
                    self.choice[t][e] = self.rng.choice(len(p), p=p)
            gate = np.zeros(alive.shape)
            gate[np.arange(len(gate)), self.choice[t]] = 1.0
            model.set_gate(t, gate)

    def on_epoch_end(self, epoch, logs=None):
        model = self.supernet
        a = self._forward.accuracy(self.x_val, self.y_val)
        for t in CELL_TYPES:
            rows = np.arange(self.space.num_edges)
            k = self.choice[t]
            first = self.n[t][rows, k] == 0
            self.m[t][rows, k] = np.where(first, a, (1 - self.lam) * self.m[t][rows, k] + self.lam * a)
            self.n[t][rows, k] += 1
        if self.phase == "bandit" and self.alive_count() > 1:
            self.since_prune += 1
            if self.since_prune >= self.alive_count() * self.rounds:
                self._prune()
                self.since_prune = 0
        self.history.append((epoch, a, self.alive_count()))
        super().on_epoch_end(epoch, logs)

    def _prune(self):
        model = self.supernet
        for t in CELL_TYPES:
            alive = model.alive(t)
            for e in range(self.space.num_edges):
                total = self.n[t][e].sum()
                s = np.where(alive[e], ucb(self.m[t][e], np.maximum(self.n[t][e], 1), total), np.inf)
                alive[e, int(np.argmin(s))] = False
            model.set_gate(t, None)
            model.set_alive(t, alive)

    def on_train_end(self, logs=None):
        model = self.supernet
        for t in CELL_TYPES:
            model.set_gate(t, None)
        if self.adversarial:
            model.adversary = None
            model.reset_train_functions()

    def scores(self):
        model = self.supernet
        return {t: np.where(model.alive(t) & (self.n[t] > 0), self.m[t], -np.inf) for t in CELL_TYPES}

    def robustness(self, model, x, y, *, epsilon=None, pgd_steps=7, pgd_step_size=None,
                   attacks=("clean", "fgsm", "pgd"), **kwargs):
        """ABanditNAS' adversarial evaluation: accuracy of ``model`` (usually the derived,
        retrained network) on ``(x, y)`` clean and under FGSM and PGD-``pgd_steps`` attacks of
        radius ``epsilon`` (default: the search's), clipped to the search's ``input_range``.
        See :func:`~tfcompress.nas.adversarial.robust_accuracy`; returns ``{attack: accuracy}``."""
        return robust_accuracy(model, x, y, epsilon=self.epsilon if epsilon is None else epsilon,
                               attacks=attacks, pgd_steps=pgd_steps, pgd_step_size=pgd_step_size,
                               input_range=self.input_range, **kwargs)

