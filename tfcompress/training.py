"""One small base for the package's custom-loss trainers.

Several methods of the book train a network with a loss Keras' ``compile(loss=...)`` cannot
express: PCNN's projection loss (:class:`tfcompress.layers.PCNNTrainer`), RBCN's adversarial
objective (:class:`tfcompress.pruning.RBCNTrainer`), BONN's Bayesian losses
(:class:`tfcompress.pruning.BONNTrainer`) and knowledge distillation
(:class:`tfcompress.distill.Distiller`). Each is a ``keras.Model`` that wraps the network
being trained and overrides ``train_step``. :class:`Trainer` holds what they share:

- ``call`` runs the wrapped network, so ``evaluate``/``predict`` report it;
- one ``keras.metrics.Mean`` per named loss term (``tracked``), listed before the compiled
  metrics, reset by Keras each epoch;
- ``train_step`` unpacks the batch, asks the subclass's :meth:`Trainer.train_update` for the
  prediction and the loss terms (after it applied its gradients), and reports them;
- ``test_step`` evaluates the network with the compiled loss and metrics (subclasses whose
  validation loss is their own objective override it);
- ``get_config`` returns the trainer's hyperparameters for logging; a trainer is a training
  wrapper, so it is not rebuilt from a config: save and convert the wrapped network.

A subclass keeps only its loss::

    class MyTrainer(Trainer):
        tracked = ("loss", "extra_loss")

        def train_update(self, x, y, sample_weight):
            with tf.GradientTape() as tape:
                y_pred = self.network(x, training=True)
                task = self.compiled_loss(y, y_pred, sample_weight,
                                          regularization_losses=self.network.losses)
                extra = ...
                loss = task + extra
            self.apply_gradients(self.optimizer, tape.gradient(loss, variables), variables)
            return y_pred, {"loss": loss, "extra_loss": extra}
"""

from tfcompress._keras import keras
from tfcompress.inspection import check_tf_keras_model

__all__ = ["Trainer", "unwrap"]


class Trainer(keras.Model):
    """Base of the custom-loss trainers (see the module docstring).

    Args:
        network: the ``keras.Model`` being trained (updated in place by ``fit``).
        **kwargs: ``keras.Model`` arguments (``name``).

    Class attribute ``tracked``: names of the loss terms :meth:`train_update` returns; each
    is reported as a metric of ``fit``.
    """

    tracked = ("loss",)

    def __init__(self, network, **kwargs):
        check_tf_keras_model(network, type(self).__name__)
        super().__init__(**kwargs)
        self.network = network
        self.trackers = {name: keras.metrics.Mean(name=name) for name in self.tracked}

    def call(self, inputs, training=None):
        return self.network(inputs, training=training)

    @property
    def metrics(self):
        return list(self.trackers.values()) + super().metrics

    # -------------------------------------------------------------- what subclasses write
    def train_update(self, x, y, sample_weight):
        """One optimization step on a batch; return ``(y_pred, {term: scalar})`` holding
        every name of ``tracked``."""
        raise NotImplementedError(f"{type(self).__name__} must define train_update(x, y, "
                                  "sample_weight) -> (y_pred, loss terms).")

    def hyperparameters(self):
        """The trainer's scalar settings, for :meth:`get_config` (override to add them)."""
        return {}

    # ------------------------------------------------------------------------ skeleton
    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        y_pred, terms = self.train_update(x, y, sample_weight)
        return self.report(terms, y, y_pred, sample_weight)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        y_pred = self.network(x, training=False)
        self.compiled_loss(y, y_pred, sample_weight, regularization_losses=self.network.losses)
        self.compiled_metrics.update_state(y, y_pred, sample_weight)
        # Only the compiled loss and metrics: the loss-term trackers (tracked by Keras as
        # attributes, so also in super().metrics) are not computed here.
        own = [id(t) for t in self.trackers.values()]
        return {m.name: m.result() for m in super().metrics if id(m) not in own}

    def report(self, terms, y, y_pred, sample_weight=None):
        """Update the loss-term trackers and the compiled metrics; return the logs."""
        missing = [name for name in self.tracked if name not in terms]
        if missing:
            raise KeyError(f"{type(self).__name__}.train_update did not return {missing}.")
        for name, tracker in self.trackers.items():
            tracker.update_state(terms[name])
        self.compiled_metrics.update_state(y, y_pred, sample_weight)
        return {m.name: m.result() for m in self.metrics}

    @staticmethod
    def apply_gradients(optimizer, grads, variables):
        """``optimizer.apply_gradients`` over the pairs whose gradient is not None."""
        pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
        if pairs:
            optimizer.apply_gradients(pairs)

    def get_config(self):
        return {"name": self.name, "network": self.network.name, **self.hyperparameters()}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        raise TypeError(f"{cls.__name__} is a training wrapper and is not rebuilt from a config; "
                        "save and load the network it trains, and wrap it again to resume.")


def unwrap(model):
    """The network a :class:`Trainer` trains (``trainer.network``), or ``model`` itself."""
    return model.network if isinstance(model, Trainer) else model
