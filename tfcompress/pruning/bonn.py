"""BONN (card 5.8; Gu et al., ICCV 2019, arXiv 1908.06314; IJCV "Towards compact 1-bit CNNs
via Bayesian learning"; book §3.7): Bayesian training and Bayesian filter pruning of 1-bit CNNs.

- :class:`~tfcompress.layers.BONNConv2D` with :class:`~tfcompress.quantizers.BONNSign`
  (``k_hat = w sign(k)``) adds the Bayesian kernel loss (a two-mode Gaussian prior at
  ``+mu+`` / ``-mu-``);
- :class:`BONNTrainer` adds the Bayesian feature loss
  (:class:`~tfcompress.losses.BayesianFeatureLoss`) on the classifier's input;
- :class:`BayesianFilterPruning` clusters each layer's filters (:func:`kmeans`), pulls them to
  their group means and keeps one filter per group; :func:`~tfcompress.pruning.shrink` removes
  the others.
"""

import numpy as np

from tfcompress._keras import keras, tf
from tfcompress.errors import PruningError
from tfcompress.inspection import iter_layers
from tfcompress.losses import BayesianFeatureLoss
from tfcompress.pruning.filters import Criterion, FilterPruning
from tfcompress.pruning.methods import _check_nonneg, learning_rate
from tfcompress.quantizers.scaled_sign import BONNSign
from tfcompress.training import Trainer, unwrap

__all__ = ["BONNTrainer", "BayesianFilterPruning", "BayesianPruningCriterion", "bonn_layers",
           "kmeans"]


def bonn_layers(model):
    """Layers of ``model`` whose kernel quantizer is a :class:`BONNSign`."""
    return [layer for layer in iter_layers(model)
            if isinstance(getattr(layer, "kernel_quantizer", None), BONNSign)]


class BONNTrainer(Trainer):
    """Train ``model`` with BONN's ``L = L_S + L_K + L_F`` (card 5.8).

    ``L_S`` is the compiled loss, ``L_K`` the kernel losses the :class:`BONNSign` layers add
    to ``model.losses``, ``L_F`` a :class:`BayesianFeatureLoss` on the classifier's input
    (the card: only the features feeding the FC layer). ``trainer.fit`` updates ``model`` in
    place (and the trainer's own centres and variances); save and convert ``model``.

    Args:
        model: a functional or Sequential model.
        num_classes: classes of the labels. theta: theta of ``L_F``.
        feature_layer: name of the layer whose output is the feature (default: the input of
            the last ``Dense`` layer).
    """

    tracked = ("loss", "kernel_loss", "feature_loss")

    def __init__(self, model, *, num_classes, theta=1e-3, feature_layer=None, **kwargs):
        super().__init__(model, **kwargs)
        if feature_layer is not None:
            try:
                feats = model.get_layer(feature_layer).output
            except ValueError:
                raise ValueError(f"BONNTrainer: model {model.name!r} has no layer "
                                 f"{feature_layer!r}.") from None
        else:
            dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
            if not dense:
                raise ValueError(f"BONNTrainer: model {model.name!r} has no Dense layer; name "
                                 "the feature layer with feature_layer=.")
            feats = dense[-1].input
        self._with_feats = keras.Model(model.inputs, [model.output, feats])
        self.feature_loss = BayesianFeatureLoss(num_classes, theta, name="bayesian_feature_loss")
        self.feature_layer = feature_layer

    @property
    def model(self):
        """The network being trained (``self.network``)."""
        return self.network

    def hyperparameters(self):
        return {"num_classes": self.feature_loss.num_classes, "theta": self.feature_loss.theta,
                "feature_layer": self.feature_layer}

    def train_update(self, x, y, sample_weight):
        with tf.GradientTape() as tape:
            y_pred, feats = self._with_feats(x, training=True)
            kernel = tf.add_n(self.model.losses) if self.model.losses else tf.constant(0.0)
            task = self.compiled_loss(y, y_pred, sample_weight, regularization_losses=None)
            feature = self.feature_loss([feats, y])
            loss = task + kernel + feature
        variables = self.model.trainable_variables + self.feature_loss.trainable_variables
        self.apply_gradients(self.optimizer, tape.gradient(loss, variables), variables)
        return y_pred, {"loss": loss, "kernel_loss": kernel, "feature_loss": feature}


def kmeans(points, k, *, init=None, iterations=100, seed=0):
    """Lloyd's k-means of the rows of ``points``: k-means++ seeding (``seed``) unless ``init``
    centres are given; an emptied cluster is re-seeded at the farthest point.

    Returns:
        ``(labels (n,), centres (k, d))``.
    """
    x = np.asarray(points, np.float64)
    n = len(x)
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k!r}.")
    rng = np.random.default_rng(seed)
    if init is not None and len(init) == k:
        centres = np.array(init, np.float64)
    else:
        centres = [x[rng.integers(n)]]
        for _ in range(1, k):
            d2 = np.min(((x[:, None] - np.array(centres)[None]) ** 2).sum(-1), axis=1)
            probs = d2 / d2.sum() if d2.sum() > 0 else np.full(n, 1.0 / n)
            centres.append(x[rng.choice(n, p=probs)])
        centres = np.array(centres)
    labels = None
    for _ in range(iterations):
        d2 = ((x[:, None] - centres[None]) ** 2).sum(-1)
        new = d2.argmin(1)
        for g in range(k):
            if not (new == g).any():
                far = d2[np.arange(n), new].argmax()
                new[far] = g
                d2[far] = 0
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
        centres = np.array([x[labels == g].mean(0) for g in range(k)])
    return labels, centres


class BayesianPruningCriterion(Criterion):
    """BONN's Bayesian filter pruning (card 5.8 [V], the book's §3.7.3 / Alg. 6).

    Per masked layer the live filters (rows of the kernel reshaped ``(C_out, -1)``) are
    clustered by :func:`kmeans` into ``G = round((1 - target_sparsity) C_out)`` groups (re-run,
    warm-started, every ``recluster_every`` batches and at each pruning step). After every
    batch each filter is moved toward its group mean ``K_g``:

    1. the gradient step of ``L_P = lambda_p/2 sum_i [||K_i - K_g||^2 + nu/sigma_g^2
       ||K_i - K_g||^2 + nu log det Psi_g]`` (``Psi_g = sigma_g^2 I``, ``sigma_g^2`` the group's
       maximum-likelihood variance): ``K_i -= eta lambda_p (1 + nu/sigma_g^2)(K_i - K_g)``,
       the factor capped at 1 (exact: the mean's own gradient cancels within a group);
    2. the card's shrink ``K_i <- (1 - gamma) K_i + gamma K_g``.

    Both keep each group's mean. At pruning steps a group's first filter (lowest index, the
    card's "keep the first filter of each group") scores highest and the others score by
    their distance to ``K_g``, so the most redundant go first; the card zeroes the removed
    filters' BatchNormalization entries, which FilterPruning does before
    :func:`~tfcompress.pruning.shrink` removes them. Not implemented: the card's
    ``(1/I_g) dL/dK_g`` share of the data gradient (the forward pass uses each filter, not the
    group mean) and a learned ``Psi``.
    """

    name = "bonn"

    def __init__(self, target_sparsity, gamma=0.1, penalty=0.0, nu=1.0, step_size=None,
                 recluster_every=None, seed=0):
        self.target_sparsity = float(target_sparsity)
        self.gamma = _check_nonneg("gamma", gamma)
        if self.gamma > 1:
            raise PruningError(f"gamma must be in [0, 1], got {gamma!r}.")
        self.penalty = _check_nonneg("penalty", penalty)
        self.nu = _check_nonneg("nu", nu)
        self.step_size = None if step_size is None else _check_nonneg("step_size", step_size)
        if recluster_every is not None and (not isinstance(recluster_every, int)
                                            or recluster_every < 1):
            raise PruningError(f"recluster_every must be a positive int or None, got "
                               f"{recluster_every!r}.")
        self.recluster_every = recluster_every
        self.seed = int(seed)
        self.labels, self.centres = {}, {}

    def _rows(self, pruner, owner):
        k = tf.convert_to_tensor(pruner.layer(owner).kernel).numpy()
        return k, k.reshape(-1, k.shape[-1]).T

    def cluster(self, pruner, owner):
        """Re-run k-means on ``owner``'s live filters; returns labels (-1 for masked)."""
        _, rows = self._rows(pruner, owner)
        live = pruner.masks[owner].mask.numpy() != 0
        groups = max(1, int(round((1.0 - self.target_sparsity) * len(rows))))
        groups = min(groups, int(live.sum()))
        labels = np.full(len(rows), -1)
        if groups:
            labels[live], self.centres[owner] = kmeans(
                rows[live], groups, init=self.centres.get(owner), seed=self.seed)
        self.labels[owner] = labels
        return labels

    def pull(self, pruner, owner, eta):
        """One step of (1) and (2) above on ``owner``'s kernel."""
        kernel, rows = self._rows(pruner, owner)
        labels = self.labels[owner]
        out = rows.copy()
        for g in np.unique(labels[labels >= 0]):
            idx = np.flatnonzero(labels == g)
            mean = rows[idx].mean(0)
            resid = rows[idx] - mean
            var = float((resid ** 2).mean()) + 1e-12
            factor = min(1.0, eta * self.penalty * (1.0 + self.nu / var))
            out[idx] = mean + (1.0 - self.gamma) * (1.0 - factor) * resid
        pruner.layer(owner).kernel.assign(out.T.reshape(kernel.shape).astype(np.float32))

    def scores(self, pruner, owner):
        labels = self.cluster(pruner, owner)
        _, rows = self._rows(pruner, owner)
        out = np.zeros(len(rows))
        for g in np.unique(labels[labels >= 0]):
            idx = np.flatnonzero(labels == g)
            dist = np.linalg.norm(rows[idx] - rows[idx].mean(0), axis=1)
            out[idx] = dist / (dist.max() + 1e-12)
            out[idx[0]] = 2.0
        return out

    def on_batch_end(self, pruner, step):
        eta = self.step_size if self.step_size is not None else (
            learning_rate(pruner.model) if self.penalty else 0.0)
        for owner in pruner.masks:
            if owner not in self.labels or (self.recluster_every
                                            and step % self.recluster_every == 0):
                self.cluster(pruner, owner)
            self.pull(pruner, owner, eta)

    def get_config(self):
        return {"target_sparsity": self.target_sparsity, "gamma": self.gamma,
                "penalty": self.penalty, "nu": self.nu, "step_size": self.step_size,
                "recluster_every": self.recluster_every, "seed": self.seed}


class BayesianFilterPruning(FilterPruning):
    """:class:`~tfcompress.pruning.FilterPruning` with :class:`BayesianPruningCriterion`
    (BONN's Bayesian pruning). Works as a callback of :class:`BONNTrainer` (it prunes
    ``trainer.model``) or of a plain model; ``target_sparsity`` also sets the number of groups
    per layer. Options: ``gamma``, ``penalty`` (lambda_p), ``nu``, ``step_size``,
    ``recluster_every``, ``seed``.
    """

    def __init__(self, target_sparsity, schedule=None, *, gamma=0.1, penalty=0.0, nu=1.0,
                 step_size=None, recluster_every=None, seed=0, log_dir=None, exclude=()):
        super().__init__(target_sparsity, "l1", schedule, log_dir=log_dir, exclude=exclude)
        self.method = BayesianPruningCriterion.name
        self.criterion = BayesianPruningCriterion(
            self.target_sparsity, gamma=gamma, penalty=penalty, nu=nu, step_size=step_size,
            recluster_every=recluster_every, seed=seed)

    def _setup(self, model):
        super()._setup(unwrap(model))
