"""Binary neural architecture search (book chapter 3): DARTS cell spaces with float or binarized
operations, search strategies as Keras callbacks, and derived plain Keras models.

::

    space = tfcompress.nas.DartsSpace(num_cells=5, channels=16, ops="binary")   # or "float"
    supernet = space.build(input_shape=(32, 32, 3), num_classes=10)
    search = tfcompress.nas.BNAS(space, (x_val, y_val))   # DARTS, PCDARTS, IDARTS, ABanditNAS, Evolution
    supernet.fit(x_train, y_train, epochs=..., callbacks=[search])
    genotype = search.genotype()                       # Genotype; .to_json() / Genotype.from_json()
    model = space.derive(genotype, num_cells=8)        # plain Keras model
    tfcompress.convert(model, target="lce")            # binary spaces: LceBconv2d ops

Strategies (``get_strategy(name, space, ...)``):

- :class:`DARTS` — DARTS: an Adam(6e-4) step on alpha per training batch, on the strategy's
  own validation split; first order, or ``order=2`` (the unrolled gradient with the
  finite-difference Hessian-vector product, ``train_data=`` the weights' split). :class:`PCDARTS` — the same on a partial-channel space
  (``DartsSpace(partial_channels=4)``) with edge normalization and a 15-epoch warm-up.
- :class:`IDARTS` — PC-DARTS with alpha/beta backtracking (the card's reconstruction, ❓).
- :class:`ABanditNAS` — anti-bandit sampling (LCB) and pruning (UCB) every ``K * T`` epochs,
  optionally with FGSM adversarial training; its 9-op space with the defensive ops (Gabor
  filter, denoising block) is ``DartsSpace(primitives=ABANDIT_PRIMITIVES)``, and
  :meth:`ABanditNAS.robustness` / :func:`robust_accuracy` give the FGSM/PGD accuracy.
- :class:`BNAS` — PC-DARTS on a binarized space with performance-based op abandoning every
  ``K * T`` epochs (score formula reconstructed, 🟡). :class:`BDetNAS` — BNAS on a detection
  supernet (``space.build(..., head="detection")``: binarized DARTS backbone + TinyYOLO head,
  or ``head="detection2"``: a two-scale head, boxes decoded per scale with
  ``space.grid_strides()``; YOLO loss for weights and alpha, sub-networks scored by mAP@0.5);
  card B5's proposal (❓).
- :class:`Evolution` — unsupervised evolution of a population of architectures with a
  contrastive fitness (MoCo: momentum key encoder, FIFO queue of negatives, InfoNCE; or
  SimCLR's NT-Xent) and op elimination: FaUNAE as far as the card recovers it (see
  :mod:`tfcompress.nas.evolution`, :mod:`tfcompress.nas.moco`).

Scale-out. The supernet is a Keras model, so ``tf.distribute`` applies unchanged; build it and
create the strategy callback inside the distribution scope::

    strategy = tf.distribute.MirroredStrategy()            # all local GPUs / devices
    with strategy.scope():
        supernet = space.build((32, 32, 3), 10)
        search = tfcompress.nas.DARTS(space, (x_val, y_val))
    supernet.fit(train_ds, epochs=50, callbacks=[search])

Across machines use ``tf.distribute.MultiWorkerMirroredStrategy()`` the same way: start the
same script on every worker with ``TF_CONFIG`` set (``{"cluster": {"worker": ["host1:port",
"host2:port"]}, "task": {"type": "worker", "index": i}}``), build and compile inside
``strategy.scope()``, give ``fit`` a ``tf.data.Dataset`` (it is sharded per worker; set
``options.experimental_distribute.auto_shard_policy`` to ``DATA`` for in-memory data), and let
only worker 0 keep checkpoints, the genotype and TensorBoard logs, but call ``save`` /
``save_weights`` / ``get_weights`` on every worker (reading the supernet's per-worker
BatchNormalization statistics is an all-reduce; give the other workers a temporary path).
The architecture step runs ``strategy.run`` on the same validation batch on every replica
(same ``seed``, and the same ``tf.random`` global seed or none on every worker) with the loss
divided by the replica count, so every worker applies the same all-reduced update; the
strategies' numpy bookkeeping (ABanditNAS, BNAS, Evolution) draws from a seeded generator,
identical on every worker as long as the ``seed`` is the same, and is checked to agree once per
epoch. ``tf.keras.callbacks.BackupAndRestore`` resumes an interrupted search: the strategy's
state (``get_state``) is part of the supernet's checkpoints; list the strategy before it in
``callbacks``. ``tests/distributed`` runs a BNAS search on two workers, interrupted and
resumed, against a single-process run. Trial-level search (many derived models) can use
KerasTuner's distributed mode instead.
"""

from tfcompress.nas.adversarial import fgsm_examples, pgd_examples, robust_accuracy
from tfcompress.nas.bandit import ABanditNAS, bandit_schedule, lcb, lcb_probs, ucb
from tfcompress.nas.bnas import BNAS, BDetNAS
from tfcompress.nas.darts import DARTS, IDARTS, PCDARTS, rank_gate
from tfcompress.nas.defense import DEFENSIVE_OPS, GaborConv2D, NonLocalMeans, gabor_kernel
from tfcompress.nas.evolution import Evolution, augment, nt_xent
from tfcompress.nas.genotype import Genotype, select_cell
from tfcompress.nas.moco import KeyQueue, MoCo, info_nce
from tfcompress.nas.ops import ABANDIT_PRIMITIVES, PRIMITIVES, channel_shuffle
from tfcompress.nas.plot import plot_genotype
from tfcompress.nas.space import DartsSpace
from tfcompress.nas.strategy import SearchStrategy, StrategyState
from tfcompress.nas.supernet import Supernet, masked_softmax

STRATEGIES = {cls.name.lower(): cls for cls in (DARTS, PCDARTS, IDARTS, ABanditNAS, BNAS, BDetNAS,
                                                Evolution)}


def get_strategy(identifier, space, *args, **kwargs):
    """A search strategy by name (``"darts"``, ``"pcdarts"``, ``"idarts"``, ``"abanditnas"``,
    ``"bnas"``, ``"bdetnas"``, ``"evolution"``), a class, or an instance (returned as is)."""
    if isinstance(identifier, SearchStrategy):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, SearchStrategy):
        return identifier(space, *args, **kwargs)
    if isinstance(identifier, str) and identifier.strip().lower() in STRATEGIES:
        return STRATEGIES[identifier.strip().lower()](space, *args, **kwargs)
    raise ValueError(f"Unknown search strategy {identifier!r}; valid names: "
                     f"{', '.join(sorted(STRATEGIES))}.")


__all__ = [
    "ABANDIT_PRIMITIVES", "ABanditNAS", "BDetNAS", "BNAS", "DARTS", "DEFENSIVE_OPS",
    "DartsSpace", "Evolution", "GaborConv2D", "Genotype", "IDARTS", "KeyQueue", "MoCo",
    "NonLocalMeans", "PCDARTS", "PRIMITIVES", "STRATEGIES", "SearchStrategy", "StrategyState",
    "Supernet", "augment", "bandit_schedule", "channel_shuffle", "fgsm_examples",
    "gabor_kernel", "get_strategy", "info_nce", "lcb", "lcb_probs", "masked_softmax", "nt_xent",
    "pgd_examples", "plot_genotype", "rank_gate", "robust_accuracy", "select_cell", "ucb",
]
