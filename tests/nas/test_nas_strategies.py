"""Search strategies: DARTS/PC-DARTS alternation and warm-up, IDARTS backtracking, ABanditNAS
and BNAS schedules and bookkeeping (with a score_fn), the contrastive evolution, and
resumable state; each checked against the card's formulas."""

import json

import numpy as np
import pytest
from nas_helpers import SMALL_OPS, cifar8, tiny_space

from tfcompress._keras import keras, tf
from tfcompress.nas.genotype import edge_index
from tfcompress.nas import (
    BNAS, DARTS, PCDARTS, ABanditNAS, BDetNAS, Evolution, IDARTS, augment, bandit_schedule,
    fgsm_examples, get_strategy, lcb_probs, nt_xent,
)

ARMS = [SMALL_OPS.index(o) for o in ("skip_connect", "max_pool_3x3", "sep_conv_3x3")]


class Recorder(keras.callbacks.Callback):
    """Records a function of the supernet at each epoch end (after the search callback), or
    with ``during=True`` after the first training batch of each epoch."""

    def __init__(self, fn, during=False):
        super().__init__()
        self.fn, self.during, self.values = fn, during, []

    def on_train_batch_end(self, batch, logs=None):
        if self.during and batch == 0:
            self.values.append(self.fn(self.model))

    def on_epoch_end(self, epoch, logs=None):
        if not self.during:
            self.values.append(self.fn(self.model))


def test_pcdarts_warms_up_then_takes_one_arch_step_per_batch_and_resumes(tmp_path):
    (x, y), (xv, yv) = cifar8()
    space = tiny_space(partial_channels=2)
    net = space.build((8, 8, 3), 4)
    search = PCDARTS(space, (xv, yv), warmup_epochs=1, batch_size=16)
    rec = Recorder(lambda m: (m.alpha("reduce").numpy().copy(), search.arch_steps))
    alpha0 = net.alpha("reduce").numpy().copy()
    net.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[search, rec])   # 2 batches/epoch
    (a1, steps1), (a2, steps2) = rec.values
    np.testing.assert_array_equal(a1, alpha0)           # warm-up epoch: no architecture step
    assert steps1 == 0 and steps2 == 2                  # then one per training batch
    assert not np.allclose(a2, a1)

    # resume: weights (alpha included) from a checkpoint, the strategy from its JSON state
    net.save_weights(str(tmp_path / "ckpt"))
    state = json.dumps(search.get_state())
    net2 = space.build((8, 8, 3), 4)
    net2.load_weights(str(tmp_path / "ckpt"))
    resumed = PCDARTS(space, (xv, yv), warmup_epochs=1, batch_size=16)
    resumed.set_state(state)
    resumed.set_model(net2)
    assert resumed.arch_steps == 2 and resumed.epochs_done == 2
    search.arch_step(xv[:16], yv[:16])
    resumed.arch_step(xv[:16], yv[:16])
    # the same Adam moments and step count, so the same update
    np.testing.assert_allclose(net2.alpha("reduce").numpy(), net.alpha("reduce").numpy(),
                               rtol=1e-5, atol=1e-8)


def _node_softmax(beta, nodes):
    out, start = [], 0
    for j in range(nodes):
        e = np.exp(beta[start: start + j + 2])
        out.append(e / e.sum())
        start += j + 2
    return np.concatenate(out)


def _gate(score, tau):
    ranks = np.argsort(np.argsort(score))
    return (ranks / (len(score) - 1) >= tau).astype(np.float32)


def test_idarts_backtracking_follows_the_cards_reconstruction(rng):
    (_, _), (xv, yv) = cifar8()
    space = tiny_space(partial_channels=2)
    net = space.build((8, 8, 3), 4)
    eta, eta_psi, tau, psi0 = 0.5, 0.1, 0.5, 0.2
    s = IDARTS(space, (xv, yv), warmup_epochs=0, eta=eta, eta_psi=eta_psi, tau=tau, psi_init=psi0)
    s.set_model(net)
    arch = net.arch_variables
    names = [v.name.split(":")[0] for v in arch]
    assert names == ["arch_alpha_normal", "arch_alpha_reduce", "arch_beta_normal", "arch_beta_reduce"]

    def draw():
        return [rng.normal(size=v.shape).astype(np.float32) for v in arch]

    # step 1: "before" values, gradients, and the values after the vanilla Adam step
    before1, grads1, after1 = draw(), draw(), draw()
    for v, a in zip(arch, after1):
        v.assign(a)
    s._after_step([tf.constant(b) for b in before1], [tf.constant(g) for g in grads1])
    a0, b0 = before1[1], before1[3]                           # reduce cell
    w0 = np.exp(a0) / np.exp(a0).sum(1, keepdims=True)
    gate_a = _gate(_node_softmax(b0, 2), tau)                 # alpha gated by the edge weights
    gate_b = _gate(np.linalg.norm(w0, axis=1), tau)           # beta gated by the op weights
    np.testing.assert_allclose(net.alpha("reduce").numpy(),
                               after1[1] + eta * gate_a[:, None] * psi0 * a0, rtol=1e-5)
    np.testing.assert_allclose(net.beta("reduce").numpy(), after1[3] + eta * gate_b * psi0 * b0,
                               rtol=1e-5)

    # step 2: psi moves by its (one-step-delayed) gradient through step 1's backtracking
    before2, grads2, after2 = draw(), draw(), draw()
    for v, a in zip(arch, after2):
        v.assign(a)
    s._after_step([tf.constant(b) for b in before2], [tf.constant(g) for g in grads2])
    psi_a = np.abs(psi0 - eta_psi * eta * gate_a * (grads2[1] * a0).sum(1))
    psi_b = np.abs(psi0 - eta_psi * eta * gate_b * grads2[3] * b0)
    np.testing.assert_allclose(s._vars["psi/alpha/reduce"].numpy(), psi_a, rtol=1e-5)
    np.testing.assert_allclose(s._vars["psi/beta/reduce"].numpy(), psi_b, rtol=1e-5)
    a1, b1 = before2[1], before2[3]
    w1 = np.exp(a1) / np.exp(a1).sum(1, keepdims=True)
    np.testing.assert_allclose(
        net.alpha("reduce").numpy(),
        after2[1] + eta * _gate(_node_softmax(b1, 2), tau)[:, None] * psi_a[:, None] * a1, rtol=1e-5)
    np.testing.assert_allclose(
        net.beta("reduce").numpy(),
        after2[3] + eta * _gate(np.linalg.norm(w1, axis=1), tau) * psi_b * b1, rtol=1e-5)
    assert json.loads(json.dumps(s.get_state()))["idarts"]["has_previous"] == 1.0


def test_lcb_sampling_and_ucb_removal_follow_the_card():
    m, n = np.array([0.5, 0.6, 0.4]), np.array([3, 10, 1])
    N = n.sum()
    p = lcb_probs(m, n, N, [True, True, True])
    ref = np.exp(-(m - np.sqrt(2 * np.log(N) / n)))
    np.testing.assert_allclose(p, ref / ref.sum())
    assert lcb_probs(m, n, N, [True, False, True])[1] == 0.0
    # 7 initialization epochs, then K * T epochs per removal for K = 7, 6, ..., 2 (T = 2)
    assert bandit_schedule(7, rounds=2, start=7) == [20, 32, 42, 50, 56, 60]

    # the card's toy check: UCB removes the op with m = .6, tried often (n = 10)
    (_, _), (xv, yv) = cifar8()
    space = tiny_space()
    net = space.build((8, 8, 3), 4)
    s = ABanditNAS(space, (xv, yv))
    s.set_model(net)
    assert not net.alive("reduce")[:, SMALL_OPS.index("none")].any()   # no 'none' arm
    for t in ("normal", "reduce"):
        s.m[t][:, ARMS], s.n[t][:, ARMS] = m, n
    s._prune()
    assert (net.alive("reduce")[:, ARMS] == [True, False, True]).all()


def test_abanditnas_samples_one_op_per_edge_and_prunes_on_the_k_t_schedule():
    (x, y), (xv, yv) = cifar8()
    space = tiny_space(nodes=1)
    net = space.build((8, 8, 3), 4)
    search = ABanditNAS(space, (xv, yv), rounds=1, lam=0.7, seed=3)
    rec = Recorder(lambda m: (m._gate["reduce"].numpy().copy(), search.choice["reduce"].copy()),
                   during=True)
    net.fit(x[:32], y[:32], batch_size=32, epochs=8, verbose=0, callbacks=[search, rec])
    alive_per_epoch = [h[2] for h in search.history]
    # K = 3 arms, T = 1: 3 initialization epochs, then removals after 3 and 2 more epochs
    assert bandit_schedule(3, 1, start=3) == [5, 7]
    assert alive_per_epoch == [3, 3, 3, 3, 3, 2, 2, 1]
    for gate, choice in rec.values:                       # one sampled op per edge each epoch
        assert (gate.sum(1) == 1).all() and (gate.argmax(1) == choice).all()
    # initialization tries every arm once per edge
    first = np.stack([c for _, c in rec.values[:3]])
    assert all(sorted(col) == sorted(ARMS) for col in first.T)
    # m and n recomputed from the recorded choices and accuracies (m <- (1-l) m + l a)
    m, n = np.zeros((space.num_edges, space.num_ops)), np.zeros((space.num_edges, space.num_ops))
    rows = np.arange(space.num_edges)
    for (_, choice), (_, a, _) in zip(rec.values, search.history):
        m[rows, choice] = np.where(n[rows, choice] == 0, a, 0.3 * m[rows, choice] + 0.7 * a)
        n[rows, choice] += 1
    np.testing.assert_allclose(search.m["reduce"], m)
    np.testing.assert_array_equal(search.n["reduce"], n)
    assert (net._gate["reduce"].numpy() == 1).all()       # gates released after the search
    # one op left per edge: the genotype uses exactly those
    edge_of = {(i, j): k for k, i, j in edge_index(space.nodes)}
    for idx, (op, src) in enumerate(search.genotype().reduce):
        assert net.alive("reduce")[edge_of[(src, idx // 2)], SMALL_OPS.index(op)]
    state = json.loads(json.dumps(search.get_state()))
    again = ABanditNAS(space, (xv, yv))
    again.set_state(state)
    assert json.loads(json.dumps(again.get_state())) == state


def test_bnas_scores_sampled_subnetworks_and_abandons_ops_on_schedule():
    (x, y), (xv, yv) = cifar8()
    space = tiny_space(nodes=1)
    net = space.build((8, 8, 3), 4)
    calls = []

    def score_fn(model):            # any score of the gated sub-network (BDetNAS uses mAP)
        gate = model._gate["reduce"].numpy().copy()
        value = float(np.random.default_rng(len(calls)).random())
        calls.append((gate, value, model.alive("reduce").copy()))
        return value

    search = BNAS(space, (xv, yv), score_fn=score_fn, warmup_epochs=1, samples=2, rounds=1,
                  batch_size=16, seed=1)
    # 1 warm-up epoch, then K * T epochs per removal: K = 3 then 2
    assert search.schedule() == [3, 5]
    rec = Recorder(lambda m: int(m.alive("reduce").sum(1).max()))
    net.fit(x[:32], y[:32], batch_size=32, epochs=6, verbose=0, callbacks=[search, rec])
    assert rec.values == [3, 3, 3, 2, 2, 1]
    assert [e for e, _ in search.removed] == [3, 5]
    assert search.arch_steps == 5                         # one DARTS step per batch after warm-up
    assert len(calls) == 2 * 5 and all((g.sum(1) == 1).all() for g, _, _ in calls)
    # m = running mean of the scores of the sub-networks an op was in; UCB picks the removal
    m, n = np.zeros((space.num_edges, space.num_ops)), np.zeros((space.num_edges, space.num_ops))
    rows = np.arange(space.num_edges)
    for epoch, chunk in enumerate(range(0, len(calls), 2)):
        for gate, value, _ in calls[chunk: chunk + 2]:
            k = gate.argmax(1)
            n[rows, k] += 1
            m[rows, k] += (value - m[rows, k]) / n[rows, k]
        if epoch + 1 == 3:                                # first removal, end of epoch 3
            alive = calls[chunk][2]
            ucb = np.where(n > 0, m + np.sqrt(2 * np.log(n.sum(1, keepdims=True)) / np.maximum(n, 1)),
                           np.inf)
            expected = np.argmin(np.where(alive, ucb, np.inf), axis=1)
            removed = [SMALL_OPS.index(o) for o in search.removed[0][1]["reduce"]]
            assert removed == expected.tolist()
    np.testing.assert_allclose(search.m["reduce"], m)
    np.testing.assert_array_equal(search.n["reduce"], n)


def test_strategies_refuse_spaces_they_cannot_search():
    (_, _), (xv, yv) = cifar8()
    with pytest.raises(ValueError, match="binarized space.*ops='binary'"):
        BNAS(tiny_space(kind="float"), (xv, yv))
    with pytest.raises(ValueError, match="partial_channels=4"):
        PCDARTS(tiny_space(), (xv, yv))
    with pytest.raises(ValueError, match="head='detection'"):
        BDetNAS(tiny_space(), (xv, yv, yv))
    with pytest.raises(ValueError, match="Unknown search strategy 'enas'.*darts"):
        get_strategy("enas", tiny_space())
    assert isinstance(get_strategy("DARTS", tiny_space(), (xv, yv)), DARTS)
    with pytest.raises(ValueError, match="leaves no operation"):
        ABanditNAS(tiny_space(), (xv, yv), exclude=SMALL_OPS)
    with pytest.raises(ValueError, match="an \\(x, y\\) pair"):
        DARTS(tiny_space(), xv)
    search = DARTS(tiny_space(), (xv, yv))
    with pytest.raises(RuntimeError, match="not attached"):
        search.genotype()
    with pytest.raises(ValueError, match="saved by 'BNAS', not 'DARTS'"):
        search.set_state({"strategy": "BNAS"})


def test_nt_xent_matches_a_numpy_reference(rng):
    z1, z2 = rng.normal(size=(5, 7)), rng.normal(size=(5, 7))
    tau = 0.3
    z = np.concatenate([z1, z2])
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    sim = z @ z.T / tau
    losses = []
    for i in range(10):
        pos = (i + 5) % 10
        others = [k for k in range(10) if k != i]
        losses.append(-sim[i, pos] + np.log(np.exp(sim[i, others]).sum()))
    got = nt_xent(tf.constant(z1, tf.float32), tf.constant(z2, tf.float32), tau).numpy()
    np.testing.assert_allclose(got, np.mean(losses), rtol=1e-5)


def test_augment_flips_and_shifts_each_image(rng):
    x = rng.normal(size=(6, 8, 8, 3)).astype(np.float32)
    seed = tf.constant([4, 2])
    a = augment(x, shift=2, seed=seed).numpy()
    np.testing.assert_array_equal(a, augment(x, shift=2, seed=seed).numpy())   # deterministic
    u = tf.random.stateless_uniform((6, 3), seed=seed).numpy()
    for i in range(6):
        img = x[i, :, ::-1] if u[i, 0] < 0.5 else x[i]
        oy, ox = int(u[i, 1] * 5), int(u[i, 2] * 5)
        ref = np.pad(img, ((2, 2), (2, 2), (0, 0)))[oy: oy + 8, ox: ox + 8]
        np.testing.assert_array_equal(a[i], ref)


def test_evolution_mutates_keeps_the_better_child_and_eliminates_ops():
    (x, _), _ = cifar8()
    space = tiny_space(nodes=1)
    net = space.build((8, 8, 3), 4)
    search = Evolution(space, x, eliminate_every=1, eval_size=32, seed=0)
    logs = []
    net.fit(x, None, batch_size=32, epochs=3, verbose=0, callbacks=[
        search, keras.callbacks.LambdaCallback(on_epoch_end=lambda e, lg: logs.append(dict(lg)))])
    assert "objective" in logs[0] and np.isfinite(logs[0]["objective"])    # contrastive training
    assert net.objective is None                                             # removed afterwards
    for epoch, parent, child, accepted in search.history[1:]:
        assert accepted == (child < parent)
    # eliminated: tried ops (n > 0) that were not the current choice; every edge keeps one
    alive = net.alive("reduce")
    gone = ~alive & (np.arange(space.num_ops) != SMALL_OPS.index("none"))[None, :]
    assert gone.any() and (search.n["reduce"][gone] > 0).all()
    assert (alive.sum(1) >= 1).all()
    assert alive[np.arange(space.num_edges), search.choice["reduce"]].all()
    # mutation probabilities: lambda1 p_mt + (1 - lambda1) p_rm over the other alive ops
    alive = net.alive("reduce")
    e = int(np.argmax(alive.sum(1)))
    assert alive[e].sum() >= 2, alive          # an edge still has a choice to mutate to
    p = search.mutation_probs("reduce", e)
    cur = search.choice["reduce"][e]
    # closed form: softmax of the UCB-style score and of the (negative) op size over the other
    # alive ops, mixed with lambda1
    other = alive[e].copy()
    other[cur] = False
    n, loss = search.n["reduce"][e], search.loss["reduce"][e]
    l_hat = np.where(n > 0, loss, loss[n > 0].mean() if (n > 0).any() else 0.0)
    s = -(l_hat - np.sqrt(2 * np.log(n.sum() + 1) / (n + 1)))
    size = search.sizes["reduce"][e]
    r = -size / max(size.max(), 1.0)

    def softmax(v):
        w = np.where(other, np.exp(v - v[other].max()), 0.0)
        return w / w.sum()

    ref = search.lambda1 * softmax(s) + (1 - search.lambda1) * softmax(r)
    np.testing.assert_allclose(p, ref / ref.sum(), rtol=1e-9)
    assert p[cur] == 0 and abs(p.sum() - 1) < 1e-9
    assert search.genotype().kind == "binary"


def test_fgsm_is_the_closed_form_step(rng):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    x = rng.normal(size=(5, 4)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1])
    with tf.GradientTape() as tape:
        xt = tf.constant(x)
        tape.watch(xt)
        loss = tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(y, model(xt),
                                                                          from_logits=True))
    ref = x + 0.1 * np.sign(tape.gradient(loss, xt).numpy())
    got = fgsm_examples(model, x, y, epsilon=0.1, random_start=False).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-6)
    rand = fgsm_examples(model, x, y, epsilon=0.1, input_range=(-0.5, 0.5)).numpy()
    assert rand.min() >= -0.5 and rand.max() <= 0.5
    inside = np.abs(x) < 0.4                     # away from the clipping range: the eps-ball
    assert np.abs(rand - x)[inside].max() <= 0.1 + 1e-6


def test_adversarial_training_trains_on_the_adversarys_inputs():
    (x, y), (xv, yv) = cifar8()
    space = tiny_space(nodes=1)
    net = space.build((8, 8, 3), 4)
    ref = space.build((8, 8, 3), 4)
    ref.set_weights(net.get_weights())
    seen = []

    def adversary(model, xb, yb):           # a stand-in attack with a known result
        seen.append(xb.shape)
        return tf.zeros_like(xb) + 0.5

    net.adversary = adversary
    net.reset_train_functions()
    net.fit(x[:32], y[:32], batch_size=32, epochs=1, verbose=0, shuffle=False)
    ref.fit(np.full_like(x[:32], 0.5), y[:32], batch_size=32, epochs=1, verbose=0, shuffle=False)
    assert seen                              # called while tracing the train step
    for a, b in zip(net.get_weights(), ref.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

    search = ABanditNAS(space, (xv, yv), adversarial=True, epsilon=0.05, input_range=(-1, 1))
    other = space.build((8, 8, 3), 4)
    search.set_model(other)
    x_adv = other.adversary(other, tf.constant(xv[:8]), tf.constant(yv[:8])).numpy()
    assert 0 < np.abs(x_adv - xv[:8]).max() <= 0.05 + 1e-6   # FGSM within the eps-ball
    search.on_train_end()
    assert other.adversary is None
