"""BNAS: binarized neural architecture search (Chen et al., AAAI 2020, arXiv 1911.10862; card B4),
and BDetNAS, BNAS on a detection supernet with a one- or two-scale head (card B5, a proposal).

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
from tfcompress.nas.strategy import Forward, StrategyState, exclude_mask, fixed_arrays
from tfcompress.nas.supernet import CELL_TYPES, DETECTION_HEADS


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
    state_fields = StrategyState(cells={"m": float, "n": np.int64}, ints=("since_prune",),
                                 records=("removed",), rng=True)

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

    def _check_head(self, model):
        if model.head != "classifier" and self.score_fn is None:
            raise ValueError(f"BNAS scores sub-networks by accuracy; this supernet has a "
                             f"{model.head!r} head. Use tfcompress.nas.BDetNAS, or pass "
                             "score_fn(model) -> float.")

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


class BDetNAS(BNAS):
    """BDetNAS: BNAS on a detection supernet (card B5, a design proposal, ❓).

    The card found no primary source; it proposes BNAS's search applied to a detector's
    backbone with a detection objective. This implements that proposal on tfcompress's own
    detector parts: the supernet is a binarized DARTS backbone with the TinyYOLO head
    (``space.build(input_shape, num_classes, head="detection")``, compiled with
    :class:`tfcompress.detection.YoloLoss`), ``fit`` trains its weights on
    :func:`tfcompress.detection.encode_targets` targets, the alpha steps minimize the same
    YOLO loss on the architecture split, and the sampled sub-networks are scored by their
    mAP@0.5 (COCO 101-point, :func:`tfcompress.detection.mean_average_precision`) on the first
    ``eval_size`` validation images (or by ``score_fn(model)``). Op abandoning follows
    :class:`BNAS`. ``space.derive(genotype, ...)`` then gives a plain detector (the head comes
    with it) that converts with LCE and is scored by :func:`tfcompress.detection.evaluate`.

    Heads: the single-scale TinyYOLO head (``head="detection"``) or a two-scale head
    (``head="detection2"``, :class:`~tfcompress.nas.supernet.TwoScaleHead`: a YOLOv3-style
    second, twice finer grid fed by the map entering the last reduction cell and the upsampled
    coarse map; targets per scale by box size, :func:`tfcompress.detection.encode_scales`;
    boxes decoded per scale, :func:`tfcompress.detection.decode` with
    ``strides=space.grid_strides()``). The head is real-valued and not searched (the card's
    proposal leaves a search of the head open).

    Args:
        space: a binary :class:`~tfcompress.nas.DartsSpace` whose last build had
            ``head="detection"`` or ``head="detection2"``.
        validation_data: the architecture split as ``(images, boxes, labels)`` (per image
            ``(k, 4)`` ``[x1, y1, x2, y2]`` pixel boxes and ``(k,)`` labels, e.g. from
            :func:`tfcompress.detection.multi_mnist`).
        score_fn: optional ``score_fn(model) -> float`` replacing the mAP.
        Other keyword arguments go to :class:`BNAS` (``eval_size`` defaults to 256 here).

    Example::

        space = nas.DartsSpace(num_cells=3, channels=8, ops="binary", partial_channels=2)
        supernet = space.build((64, 64, 1), 10, head="detection")
        x, boxes, labels = detection.multi_mnist(4000, split="train")
        grid = (64 // space.grid_stride(),) * 2            # (16, 16): two reduction cells
        y = detection.encode_targets(boxes[:2000], labels[:2000], input_shape=(64, 64),
                                     grid_shape=grid, num_classes=10)
        search = nas.BDetNAS(space, (x[2000:], boxes[2000:], labels[2000:]))
        supernet.fit(x[:2000], y, batch_size=32, epochs=20, callbacks=[search])
        detector = space.derive(search.genotype(), num_cells=4)
    """

    name = "BDetNAS"

    def __init__(self, space, validation_data, *, score_fn=None, eval_size=256, **kwargs):
        from tfcompress.detection.loss import encode_scales, encode_targets

        if space.head not in DETECTION_HEADS or space.input_shape is None:
            raise ValueError("BDetNAS searches a detection supernet: build it first with "
                             "space.build(input_shape, num_classes, head='detection') (or "
                             "head='detection2' for two scales).")
        if not (isinstance(validation_data, (tuple, list)) and len(validation_data) == 3):
            raise ValueError("BDetNAS validation_data must be (images, boxes, labels): images "
                             "(N, H, W, C), per-image (k, 4) [x1, y1, x2, y2] boxes and (k,) "
                             f"labels; got {type(validation_data).__name__}.")
        images, boxes, labels = validation_data
        images = np.asarray(images, np.float32)
        if images.ndim != 4 or images.shape[1:] != tuple(space.input_shape):
            raise ValueError(f"BDetNAS images must have shape (N,) + {tuple(space.input_shape)} "
                             f"(the supernet input), got {images.shape}.")
        if not len(images) == len(boxes) == len(labels) or len(images) == 0:
            raise ValueError(f"BDetNAS: {len(images)} images, {len(boxes)} box lists and "
                             f"{len(labels)} label lists; need the same, non-zero count.")
        h, w = images.shape[1:3]
        head = space.head
        self.strides = space.grid_strides()
        if space.head == "detection2":
            targets = encode_scales(boxes, labels, input_shape=(h, w), strides=self.strides,
                                    num_classes=space.num_classes)
        else:
            stride = self.strides[0]
            targets = encode_targets(boxes, labels, input_shape=(h, w),
                                     grid_shape=(h // stride, w // stride),
                                     num_classes=space.num_classes)
        super().__init__(space, (images, targets), score_fn=score_fn, eval_size=eval_size,
                         **kwargs)
        self.head = head
        self.eval_boxes = list(boxes[:eval_size])
        self.eval_labels = list(labels[:eval_size])

    def _check_head(self, model):
        if model.head not in DETECTION_HEADS:
            raise ValueError("BDetNAS needs a supernet built with head='detection' (or "
                             f"'detection2'), got a {model.head!r} head.")
        if model.head != self.head:
            raise ValueError(f"This BDetNAS encoded its targets for a {self.head!r} head; the "
                             f"supernet has a {model.head!r} head.")

    def score(self):
        """mAP@0.5 of the (gated) supernet on the scoring images (or ``score_fn(model)``)."""
        if self.score_fn is not None:
            return float(self.score_fn(self.supernet))
        from tfcompress.detection.boxes import decode
        from tfcompress.detection.metrics import mean_average_precision

        out = self._forward(self.x_val)
        strides = self.strides if self.head == "detection2" else None
        dets = decode(out, input_shape=self.x_val.shape[1:3], score_threshold=0.01, strides=strides)
        return mean_average_precision(dets, self.eval_boxes, self.eval_labels,
                                      backend="tfcompress").map50
