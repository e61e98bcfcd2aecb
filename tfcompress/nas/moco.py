"""Momentum contrast (MoCo) for the unsupervised evolution: a key encoder that is a momentum
copy of the supernet, a FIFO queue of negative keys, and the InfoNCE loss.

MoCo (He, Fan, Wu, Xie, Girshick, CVPR 2020, arXiv 1911.05722; Algorithm 1), as card B3 asks
for FaUNAE's contrastive fitness:

- query ``q = f_q(aug1(x))`` from the supernet being trained (the student), key
  ``k = f_k(aug2(x))`` from the key encoder (the teacher), both L2-normalized;
- InfoNCE against the positive key and the ``K`` queued negatives::

      L = -1/B sum_i log( exp(q_i . k_i / tau) / (exp(q_i . k_i / tau) + sum_{n in queue} exp(q_i . n / tau)) )

- after the optimizer step on ``f_q``: the momentum update ``theta_k <- m theta_k + (1 - m)
  theta_q`` of every trainable variable, then the batch's keys are enqueued and the oldest
  ``B`` dequeued (FIFO; a ring buffer with a write pointer; MoCo fills it with random unit
  vectors at the start).

Not in it (documented reductions): MoCo's shuffled BatchNormalization (the key encoder runs its
own BN in training mode on the whole batch) and a projection head (the keys are the supernet's
global-average-pooled features). Under ``tf.distribute`` the keys of all replicas are gathered
before they are enqueued, and the updates run once in cross-replica context (``merge_call``).
"""

import numpy as np

from tfcompress._keras import tf


def info_nce(q, k, queue, temperature=0.2):
    """MoCo's InfoNCE loss (module docstring) of queries ``q`` ``(B, d)``, positive keys ``k``
    ``(B, d)`` and negatives ``queue`` ``(K, d)``; ``q`` and ``k`` are L2-normalized here, the
    queue is used as given (it holds normalized keys)."""
    q = tf.math.l2_normalize(q, axis=1)
    k = tf.math.l2_normalize(tf.cast(k, q.dtype), axis=1)
    pos = tf.reduce_sum(q * k, axis=1, keepdims=True)
    neg = tf.matmul(q, tf.cast(queue, q.dtype), transpose_b=True)
    logits = tf.concat([pos, neg], axis=1) / temperature
    labels = tf.zeros(tf.shape(q)[:1], tf.int32)
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))


class KeyQueue(tf.Module):
    """MoCo's FIFO queue of ``size`` keys of dimension ``dim`` (a ring buffer).

    ``queue`` starts as random unit vectors (MoCo's initialization; ``seed`` fixes them);
    :meth:`enqueue` writes a batch of keys over the oldest entries; :meth:`contents` returns
    the entries oldest first. ``total`` counts the keys enqueued so far.

    >>> q = KeyQueue(4, 2, seed=0)
    >>> q.enqueue(tf.constant([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    >>> q.contents()[-3:].astype(float).round(3).tolist(), int(q.pointer.numpy()), int(q.total.numpy())
    ([[1.0, 0.0], [0.0, 1.0], [0.707, 0.707]], 3, 3)
    """

    def __init__(self, size, dim, seed=0, name="key_queue"):
        super().__init__(name=name)
        if not isinstance(size, (int, np.integer)) or size < 1:
            raise ValueError(f"The queue size must be a positive int, got {size!r}.")
        init = np.random.default_rng(seed).normal(size=(int(size), int(dim)))
        init /= np.linalg.norm(init, axis=1, keepdims=True)
        agg = tf.VariableAggregation.ONLY_FIRST_REPLICA
        self.size, self.dim = int(size), int(dim)
        self.queue = tf.Variable(init.astype(np.float32), trainable=False, name="queue",
                                 aggregation=agg)
        self.pointer = tf.Variable(0, dtype=tf.int64, trainable=False, name="pointer", aggregation=agg)
        self.total = tf.Variable(0, dtype=tf.int64, trainable=False, name="total", aggregation=agg)

    def enqueue(self, keys):
        """Replace the oldest ``len(keys)`` entries by the L2-normalized ``keys`` (the newest
        ``size`` of them if there are more)."""
        keys = tf.math.l2_normalize(tf.cast(keys, self.queue.dtype), axis=1)
        n = tf.shape(keys, out_type=tf.int64)[0]
        keep = tf.minimum(n, self.size)
        keys = keys[n - keep:]
        # as if all n keys were written in turn: the kept ones land at offsets n - keep .. n - 1
        index = (self.pointer + (n - keep) + tf.range(keep, dtype=tf.int64)) % self.size
        self.queue.assign(tf.tensor_scatter_nd_update(self.queue, index[:, None], keys))
        self.pointer.assign((self.pointer + n) % self.size)
        self.total.assign_add(n)

    def contents(self):
        """The queue as numpy, oldest entry first (the next to be replaced)."""
        return np.roll(self.queue.numpy(), -int(self.pointer.numpy()), axis=0)


class MoCo(tf.Module):
    """The key encoder and key queue of MoCo for a :class:`~tfcompress.nas.Supernet`.

    Args:
        supernet: the query encoder (student); the key encoder is a copy of it with its
            current weights, created in the same distribution scope.
        queue_size: ``K``, the number of queued negatives.
        momentum: ``m`` of the momentum update (MoCo: 0.999 for long ImageNet runs).
        temperature: the InfoNCE temperature ``tau``.
        seed: seed of the queue's random initialization.

    The key encoder is a full second supernet (twice the weights in memory). Save it and the
    queue with ``tf.train.Checkpoint(moco=moco)`` to resume.
    """

    def __init__(self, supernet, *, queue_size=1024, momentum=0.99, temperature=0.2, seed=0):
        super().__init__(name="moco")
        from tfcompress.nas.supernet import Supernet

        if not isinstance(supernet, Supernet):
            raise ValueError(f"MoCo needs a tfcompress.nas Supernet, got {type(supernet).__name__}.")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}.")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature!r}.")
        self.momentum, self.temperature = float(momentum), float(temperature)
        shape = (1,) + tuple(supernet.image_shape)
        with supernet.distribute_strategy.scope():
            self.key = Supernet.from_config(supernet.get_config())
            self.key(tf.zeros(shape), training=False)
            self.key.set_weights(supernet.get_weights())
            dim = int(self.key(tf.zeros(shape), training=False, return_features=True).shape[-1])
            self.queue = KeyQueue(queue_size, dim, seed=seed)
        pairs = list(zip(supernet.trainable_variables, self.key.trainable_variables))
        if len(supernet.trainable_variables) != len(self.key.trainable_variables) or any(
                tuple(q.shape) != tuple(k.shape) for q, k in pairs):
            raise ValueError("The key encoder's variables do not line up with the supernet's.")
        # kept out of tf.Module tracking, so a checkpoint of MoCo holds only its own variables
        self._refs = _Untracked(query=supernet, pairs=pairs)

    @property
    def query(self):
        """The query encoder (the supernet being searched)."""
        return self._refs.query

    def sync_structure(self):
        """Give the key encoder the supernet's masks and architecture parameters."""
        for src, dst in zip(self.query.arch_variables + self.query.arch_state_variables,
                            self.key.arch_variables + self.key.arch_state_variables):
            dst.assign(src)
        self.key.refresh()

    def loss(self, q, k):
        """InfoNCE of queries ``q`` and keys ``k`` against the current queue."""
        return info_nce(q, k, self.queue.queue, self.temperature)

    def momentum_update(self):
        """``theta_k <- m theta_k + (1 - m) theta_q`` for every trainable variable."""
        m = self.momentum
        for q, k in self._refs.pairs:
            k.assign(m * k + (1.0 - m) * tf.cast(q, k.dtype))

    def after_step(self, keys):
        """Run after the query's optimizer step: momentum update, then enqueue ``keys``."""
        ctx = tf.distribute.get_replica_context()
        if ctx is None:                       # cross-replica context: update directly
            self.momentum_update()
            self.queue.enqueue(keys)
            return
        if ctx.num_replicas_in_sync > 1:
            keys = ctx.all_gather(keys, axis=0)

        def merge(strategy, gathered):
            self.momentum_update()
            self.queue.enqueue(strategy.experimental_local_results(gathered)[0])

        ctx.merge_call(merge, args=(keys,))


class _Untracked:
    """A plain holder; tf.Module does not track what is inside it."""

    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)


__all__ = ["KeyQueue", "MoCo", "info_nce"]
