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

- :class:`DARTS` — first-order DARTS: an Adam(6e-4) step on alpha per training batch, on the
  strategy's own validation split. :class:`PCDARTS` — the same on a partial-channel space
  (``DartsSpace(partial_channels=4)``) with edge normalization and a 15-epoch warm-up.
- :class:`IDARTS` — PC-DARTS with alpha/beta backtracking (the card's reconstruction, ❓).
- :class:`ABanditNAS` — anti-bandit sampling (LCB) and pruning (UCB) every ``K * T`` epochs,
  optionally with FGSM adversarial training.
- :class:`BNAS` — PC-DARTS on a binarized space with performance-based op abandoning every
  ``K * T`` epochs (score formula reconstructed, 🟡). :class:`BDetNAS` — BNAS on a detection
  supernet (``space.build(..., head="detection")``: binarized DARTS backbone + TinyYOLO head,
  YOLO loss for weights and alpha, sub-networks scored by mAP@0.5); card B5's proposal (❓).
- :class:`Evolution` — unsupervised evolution with a contrastive (NT-Xent) fitness and op
  elimination: a reduced FaUNAE (see :mod:`tfcompress.nas.evolution`).

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
only worker 0 write checkpoints, the genotype and TensorBoard logs. The architecture step runs
``strategy.run`` on the same validation batch on every replica with the loss divided by the
replica count, so every worker applies the same all-reduced update; the strategies' numpy
bookkeeping (ABanditNAS, BNAS, Evolution) draws from a seeded generator, identical on every
worker as long as the ``seed`` is the same. Trial-level search (many derived models) can use
KerasTuner's distributed mode instead.
"""

from tfcompress.nas.adversarial import fgsm_examples
from tfcompress.nas.bandit import ABanditNAS, bandit_schedule, lcb, lcb_probs, ucb
from tfcompress.nas.bnas import BNAS, BDetNAS
from tfcompress.nas.darts import DARTS, IDARTS, PCDARTS, rank_gate
from tfcompress.nas.evolution import Evolution, augment, nt_xent
from tfcompress.nas.genotype import Genotype, select_cell
from tfcompress.nas.ops import PRIMITIVES, channel_shuffle
from tfcompress.nas.plot import plot_genotype
from tfcompress.nas.space import DartsSpace
from tfcompress.nas.strategy import SearchStrategy
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
    "ABanditNAS", "BDetNAS", "BNAS", "DARTS", "DartsSpace", "Evolution", "Genotype", "IDARTS",
    "PCDARTS", "PRIMITIVES", "STRATEGIES", "SearchStrategy", "Supernet", "augment",
    "bandit_schedule", "channel_shuffle", "fgsm_examples", "get_strategy", "lcb", "lcb_probs",
    "masked_softmax", "nt_xent", "plot_genotype", "rank_gate", "select_cell", "ucb",
]
