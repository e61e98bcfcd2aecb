"""The evolution's momentum contrast (InfoNCE against numpy, the key queue's FIFO contents, the
key encoder's momentum update against its closed form) and its population."""

import json

import numpy as np
import pytest
from nas_helpers import SMALL_OPS, cifar8, tiny_space

from tfcompress._keras import keras, tf
from tfcompress.nas import Evolution, KeyQueue, info_nce, nt_xent


def test_info_nce_matches_a_numpy_reference(rng):
    q, k = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    queue = rng.normal(size=(7, 4))
    queue /= np.linalg.norm(queue, axis=1, keepdims=True)
    tau = 0.3
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    kn = k / np.linalg.norm(k, axis=1, keepdims=True)
    logits = np.concatenate([(qn * kn).sum(1, keepdims=True), qn @ queue.T], 1) / tau
    ref = np.mean(np.log(np.exp(logits).sum(1)) - logits[:, 0])
    got = info_nce(tf.constant(q, tf.float32), tf.constant(k, tf.float32),
                   tf.constant(queue, tf.float32), tau).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5)


def test_key_queue_is_a_fifo_of_normalized_keys(rng):
    size, dim = 8, 3
    queue = KeyQueue(size, dim, seed=5)
    init = queue.contents()
    np.testing.assert_allclose(np.linalg.norm(init, axis=1), 1.0, rtol=1e-6)   # random unit vectors
    seen = list(init)
    for n in (3, 5, 4, 10, 1):            # 10 > size: only the newest 8 of that batch stay
        keys = rng.normal(size=(n, dim)).astype(np.float32)
        queue.enqueue(tf.constant(keys))
        seen += list(keys / np.linalg.norm(keys, axis=1, keepdims=True))
        contents = queue.contents()
        assert contents.shape == (size, dim)                       # the size never changes
        np.testing.assert_allclose(contents, np.array(seen[-size:]), rtol=1e-6, atol=1e-7)
    assert int(queue.total.numpy()) == 23 and int(queue.pointer.numpy()) == 23 % size
    with pytest.raises(ValueError, match="queue size"):
        KeyQueue(0, 3)


class _Weights(keras.callbacks.Callback):
    """The supernet's trainable weights after every training step."""

    def __init__(self):
        super().__init__()
        self.steps = []

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append([v.numpy().copy() for v in self.model.trainable_variables])


def test_moco_evolution_momentum_encoder_queue_and_population():
    (x, _), _ = cifar8()
    space = tiny_space(nodes=1)
    net = space.build((8, 8, 3), 4)
    m = 0.9
    search = Evolution(space, x, population=3, tournament=2, queue_size=48, momentum=m,
                       eliminate_every=2, eval_size=32, seed=2)
    record = _Weights()
    start = [v.numpy().copy() for v in net.trainable_variables]
    net.fit(x, None, batch_size=32, epochs=3, verbose=0, callbacks=[search, record])
    moco = search.moco
    # the key encoder started as a copy and follows theta_k <- m theta_k + (1 - m) theta_q after
    # every step: theta_k(s) = m^s theta_q(0) + (1 - m) sum_i m^(s - i) theta_q(i)
    s = len(record.steps)
    assert s == 3 * 2
    for j, k in enumerate(moco.key.trainable_variables):
        ref = m ** s * start[j] + sum((1 - m) * m ** (s - i) * record.steps[i - 1][j]
                                      for i in range(1, s + 1))
        np.testing.assert_allclose(k.numpy(), ref, rtol=1e-4, atol=1e-6)
    assert any(not np.allclose(a, b) for a, b in zip(start, record.steps[-1]))   # it trained
    # one key per training image was enqueued
    assert int(moco.queue.total.numpy()) == 3 * len(x)
    assert int(moco.queue.pointer.numpy()) == (3 * len(x)) % 48
    np.testing.assert_allclose(np.linalg.norm(moco.queue.contents(), axis=1), 1.0, rtol=1e-5)

    # the population: 3 members, the child against the worst, the best is the current one
    assert len(search.population) == 3 and len(search.fitness) == 3
    assert search.history[0][1] is None and search.history[0][3] is None
    for _, worst, child, accepted in search.history[1:]:
        assert accepted == (child < worst)
    best = int(np.argmin(search.fitness))
    for t in ("normal", "reduce"):
        np.testing.assert_array_equal(search.choice[t], search.population[best][t])
    # the fitness is the InfoNCE of the current weights, key encoder and queue
    assert search.fitness_of(search.population[best]) == pytest.approx(search.fitness[best], rel=1e-5)
    # eliminated ops are tried ops; every member's ops are alive
    for t in ("normal", "reduce"):
        alive = net.alive(t)
        gone = ~alive & (np.arange(space.num_ops) != SMALL_OPS.index("none"))[None, :]
        assert (search.n[t][gone] > 0).all()
        for member in search.population:
            assert alive[np.arange(space.num_edges), member[t]].all()
    assert net.objective is None and net.after_step is None
    # elimination: on every edge the tried op with the highest running loss that no member uses
    skip, pool, conv = (SMALL_OPS.index(o) for o in ("skip_connect", "max_pool_3x3", "sep_conv_3x3"))
    for t in ("normal", "reduce"):
        net.set_alive(t, np.ones((space.num_edges, space.num_ops)))
        search.loss[t][:] = 0.0
        search.loss[t][:, [skip, pool, conv]] = [5.0, 2.0, 3.0]   # skip is worst but used
        search.n[t][:] = 1
    search.population = [{t: np.full(space.num_edges, skip) for t in ("normal", "reduce")}] * 3
    search._eliminate()
    assert not net.alive("normal")[:, conv].any() and net.alive("normal")[:, [skip, pool]].all()
    search._eliminate()
    search._eliminate()
    assert (net.alive("reduce")[:, [skip, pool, conv]] == [True, False, False]).all()
    # resumable bookkeeping
    state = json.loads(json.dumps(search.get_state()))
    again = Evolution(space, x, population=3, eval_size=32)
    again.set_state(state)
    assert json.loads(json.dumps(again.get_state())) == state


def test_simclr_option_and_a_seeded_first_member():
    (x, _), _ = cifar8()
    space = tiny_space(nodes=1)
    net = space.build((8, 8, 3), 4)
    search = Evolution(space, x[:32], contrastive="simclr", population=2, eval_size=16, seed=0)
    first = {"normal": ["skip_connect"] * space.num_edges, "reduce": ["max_pool_3x3"] * space.num_edges}
    search.set_choice(first)
    logs, trained = [], []
    net.fit(x[:32], None, batch_size=32, epochs=2, verbose=0, callbacks=[
        search, keras.callbacks.LambdaCallback(
            on_epoch_end=lambda e, lg: logs.append(dict(lg)),
            on_train_batch_end=lambda b, lg: trained.append(net._gate["reduce"].numpy().argmax(1)))])
    assert search.moco is None and np.isfinite(logs[0]["objective"])
    # the first epoch trains the seeded member
    np.testing.assert_array_equal(trained[0], [SMALL_OPS.index("max_pool_3x3")] * space.num_edges)
    # the SimCLR fitness is NT-Xent of the supernet's features of the two fixed views
    z1 = net(search.view1, training=False, return_features=True)
    z2 = net(search.view2, training=False, return_features=True)
    assert search.fitness_of() == pytest.approx(float(nt_xent(z1, z2, 0.2)), rel=1e-4)
    with pytest.raises(ValueError, match="contrastive must be one of"):
        Evolution(space, x, contrastive="byol")
    with pytest.raises(ValueError, match="tournament"):
        Evolution(space, x, population=2, tournament=3)
