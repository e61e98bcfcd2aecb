"""BNAS: binarized neural architecture search (Chen et al., AAAI 2020, arXiv 1911.10862; card B4),
and BDetNAS's scoring hook (card B5, a proposal).

BNAS searches a DARTS space whose convolutions are binarized (``DartsSpace(ops="binary")``,
with ``partial_channels=4`` for the paper's channel sampling). The supernet is trained as in
PC-DARTS (weights by ``fit``, alpha/beta by Adam on the validation split, see
:class:`~tfcompress.nas.DARTS`), and the op space shrinks by **performance-based abandoning**:

- after the warm-up, at the end of every epoch ``samples`` sub-networks are drawn (one op per
  edge, op ``k`` with probability ``softmax(alpha)_k`` over the alive ops), each is scored on a
  fixed validation subset (accuracy; or ``score_fn(model)``), and every op of a sub-network
  gets the score: ``m_k`` is the running mean of the scores of the sub-networks op ``k`` was in,
  ``n_k`` their count;
- after every ``K * T`` epochs (``K``: ops alive on an edge; :func:`bandit_schedule`) the op
  with the lowest ``m_k + sqrt(2 ln N / n_k)`` (UCB, the journal version's criterion;
  ``criterion="mean"`` uses ``m_k``) is removed on every edge, until one is left.

**Reconstruction (🟡/❓).** The paper's exact score was not recovered (card B4: "score each op
on each edge by the validation accuracy of sampled/derived sub-networks it took part in"); the
sampling distribution, running mean and UCB above are this implementation's reading of it.
"""

import numpy as np

from tfcompress.nas.bandit import bandit_schedule, ucb
from tfcompress.nas.darts import DARTS
from tfcompress.nas.strategy import Forward, exclude_mask, fixed_arrays
from tfcompress.nas.supernet import CELL_TYPES


class BNAS(DARTS):
    """BNAS as a callback (see the module docstring).

    Args:
        space: a binary :class:`~tfcompress.nas.DartsSpace`.
        validation_data: the architecture split (for the alpha steps, as DARTS) whose first
            ``eval_size`` examples also score the sampled sub-networks.
        rounds: ``T`` of the ``K * T`` removal period.
        warmup_epochs: epochs before any architecture step, scoring or removal (the binarized
            weights must be warmed up first, card B4's pitfall).
        samples: sub-networks scored per epoch.
        criterion: ``"ucb"`` or ``"mean"``.
        exclude: ops removed from the start (``none`` by default: an edge left with only
            ``none`` could not be derived).
        arch_steps: take the DARTS alpha steps (False: pruning only).
        score_fn: ``score_fn(model) -> float`` (higher is better) replacing the accuracy, with the
            supernet gated to the sampled sub-network (BDetNAS uses this).
        Other keyword arguments go to :class:`~tfcompress.nas.DARTS`.
    """

    name = "BNAS"

    def __init__(self, space, validation_data, *, rounds=1, warmup_epochs=1, samples=4,
                 criterion="ucb", exclude=("none",), eval_size=512, arch_steps=True, score_fn=None,
                 seed=0, **kwargs):
        if space.kind != "binary":
            raise ValueError("BNAS searches a binarized space: build it with "
                             "DartsSpace(..., ops='binary'); use DARTS/PCDARTS for float spaces.")
        super().__init__(space, validation_data, warmup_epochs=warmup_epochs, seed=seed, **kwargs)
        if criterion not in ("ucb", "mean"):
            raise ValueError(f"criterion must be 'ucb' or 'mean', got {criterion!r}.")
        if not isinstance(samples, int) or samples < 1:
            raise ValueError(f"samples must be a positive int, got {samples!r}.")
        if not isinstance(rounds, int) or rounds < 1:
            raise ValueError(f"rounds (T) must be a positive int, got {rounds!r}.")
        if score_fn is not None and not callable(score_fn):
            raise ValueError("score_fn must be callable as score_fn(model) -> float.")
        self.rounds, self.samples, self.criterion = rounds, samples, criterion
        self.keep = exclude_mask(space, exclude)
        self.use_arch_steps, self.score_fn = bool(arch_steps), score_fn
        self.x_val, self.y_val = fixed_arrays(validation_data, eval_size)
        self.rng = np.random.default_rng(seed)
        e, o = space.num_edges, space.num_ops
        self.m = {t: np.zeros((e, o)) for t in CELL_TYPES}
        self.n = {t: np.zeros((e, o), np.int64) for t in CELL_TYPES}
        self.since_prune = 0
        self.removed = []      # (epoch, {cell: [removed op per edge]})

    def _attach(self, model):
        super()._attach(model)
        for t in CELL_TYPES:
            model.set_alive(t, model.alive(t) & self.keep[None, :])
        self._forward = Forward(model)

    def schedule(self):
        """The epochs (0-based, counted from the first) at whose end ops are removed."""
        return bandit_schedule(int(self.keep.sum()), self.rounds, self.warmup_epochs)

    def arch_active(self):
        return self.use_arch_steps and super().arch_active()

    def alive_count(self):
        return int(self.supernet.alive("normal").sum(axis=1).max())

    def score(self):
        """The score of the (gated) supernet: ``score_fn(model)`` or validation accuracy."""
        if self.score_fn is not None:
            return float(self.score_fn(self.supernet))
        return self._forward.accuracy(self.x_val, self.y_val)

    def sample(self):
        """One sub-network: ``{cell_type: op index per edge}`` drawn from softmax(alpha)."""
        model, out = self.supernet, {}
        for t in CELL_TYPES:
            w = model.mixing_weights(t, gated=False)[0].numpy().astype(float)
            choice = []
            for row in w:
                p = row / row.sum()
                choice.append(int(self.rng.choice(len(p), p=p)))
            out[t] = np.asarray(choice)
        return out

    def on_epoch_end(self, epoch, logs=None):
        model = self.supernet
        if self.epochs_done >= self.warmup_epochs and self.alive_count() > 1:
            rows = np.arange(self.space.num_edges)
            for _ in range(self.samples):
                choice = self.sample()
                for t in CELL_TYPES:
                    gate = np.zeros((self.space.num_edges, self.space.num_ops))
                    gate[rows, choice[t]] = 1.0
                    model.set_gate(t, gate)
                a = self.score()
                for t in CELL_TYPES:
                    k = choice[t]
                    self.n[t][rows, k] += 1
                    self.m[t][rows, k] += (a - self.m[t][rows, k]) / self.n[t][rows, k]
            for t in CELL_TYPES:
                model.set_gate(t, None)
            self.since_prune += 1
            if self.since_prune >= self.alive_count() * self.rounds:
                self._prune(epoch)
                self.since_prune = 0
        super().on_epoch_end(epoch, logs)

    def _prune(self, epoch):
        model, removed = self.supernet, {}
        for t in CELL_TYPES:
            alive = model.alive(t)
            removed[t] = []
            for e in range(self.space.num_edges):
                n = self.n[t][e]
                total = max(int(n.sum()), 1)
                if self.criterion == "ucb":
                    s = np.where(n > 0, ucb(self.m[t][e], np.maximum(n, 1), max(total, 2)), np.inf)
                else:
                    s = np.where(n > 0, self.m[t][e], np.inf)
                s = np.where(alive[e], s, np.inf)
                if not np.isfinite(s).any():        # nothing scored yet: lowest alpha goes
                    s = np.where(alive[e], model.alpha(t).numpy()[e], np.inf)
                k = int(np.argmin(s))
                alive[e, k] = False
                removed[t].append(self.space.primitives[k])
            model.set_alive(t, alive)
        self.removed.append((epoch, removed))

    def get_state(self):
        state = super().get_state()
        state.update({"m": {t: self.m[t].tolist() for t in CELL_TYPES},
                      "n": {t: self.n[t].tolist() for t in CELL_TYPES},
                      "since_prune": self.since_prune, "rng": self.rng.bit_generator.state,
                      "removed": [[e, r] for e, r in self.removed]})
        return state

    def _set_counters(self, state):
        super()._set_counters(state)
        for t in CELL_TYPES:
            self.m[t] = np.asarray(state["m"][t], float)
            self.n[t] = np.asarray(state["n"][t], np.int64)
        self.since_prune = int(state["since_prune"])
        self.rng.bit_generator.state = state["rng"]
        self.removed = [(int(e), r) for e, r in state.get("removed", [])]


class BDetNAS(BNAS):
    """BDetNAS's scoring hook (card B5 is a design proposal, ❓; no primary source was found).

    BNAS whose sampled sub-networks are scored by ``score_fn(model)`` — for a detector, e.g.
    ``-detection_loss`` or the validation mAP of the backbone with the sampled cells — instead
    of classification accuracy. Only this hook is implemented: there is no detection head,
    backbone-only supernet, or COCO metric in tfcompress.nas; ``score_fn`` must build and
    evaluate them around the gated supernet.
    """

    name = "BDetNAS"

    def __init__(self, space, validation_data, *, score_fn, **kwargs):
        if score_fn is None:
            raise ValueError("BDetNAS needs score_fn(model) -> float (e.g. minus the detection "
                             "loss of the sampled backbone on a validation set).")
        super().__init__(space, validation_data, score_fn=score_fn, **kwargs)
