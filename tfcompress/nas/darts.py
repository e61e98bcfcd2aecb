"""Gradient-based search: DARTS (first and second order), PC-DARTS and IDARTS as Keras callbacks.

DARTS (Liu, Simonyan, Yang, ICLR 2019, arXiv 1806.09055) solves the bilevel problem

    min_alpha L_val(w*(alpha), alpha)   s.t.   w*(alpha) = argmin_w L_train(w, alpha)

by alternating updates: ``model.fit`` takes a step on the weights ``w`` with a training batch;
then, in ``on_train_batch_end``, the callback takes an Adam step on the architecture parameters
with a batch of its own validation split, ``alpha <- Adam(g + weight_decay * alpha)``, where
``g`` is

- first order (``order=1``, xi = 0): ``g = grad_alpha L_val(w, alpha)``;
- second order (``order=2``, the paper's unrolled gradient, Eqs. 6-8): with one virtual SGD
  step ``w' = w - xi grad_w L_train(w, alpha)`` on a training batch,

      g = grad_alpha L_val(w', alpha) - xi grad^2_{alpha,w} L_train(w, alpha) grad_w' L_val(w', alpha)

  and the Hessian-vector product by central finite differences (Eq. 8), with
  ``w+- = w +- eps v``, ``v = grad_w' L_val(w', alpha)``, ``eps = 0.01 / ||v||``:

      grad^2_{alpha,w} L_train(w, alpha) v ~ (grad_alpha L_train(w+, alpha) - grad_alpha L_train(w-, alpha)) / (2 eps)

  That is 3 more forward/backward passes per step (4 in all). ``xi`` defaults to the weight
  optimizer's current learning rate (the paper sets xi to it); the virtual step is a plain
  gradient step (the official code also folds momentum and weight decay into it). The network
  weights and the BatchNormalization statistics are restored after the step, so only alpha
  (and beta) change. The training batches come from ``train_data`` (the weights' split; the
  official code reuses the batch of the weight step, here a batch of the same split is drawn).

PC-DARTS (Xu et al., ICLR 2020, arXiv 1907.05737) is the same loop on a partial-channel space
with edge normalization, and skips the architecture step during the first 15 warm-up epochs.

Under ``tf.distribute`` the architecture step runs ``strategy.run`` with the same validation
batch on every replica and the loss divided by the replica count, so the summed gradient is the
single-device gradient of that batch (second order: every gradient of the unrolled step is
summed that way and the weights are moved in cross-replica context).
"""

import numpy as np

from tfcompress._keras import keras, tf
from tfcompress.nas.strategy import SearchStrategy, StrategyState, as_dataset
from tfcompress.nas.supernet import CELL_TYPES, masked_softmax, node_softmax


def per_example_loss(loss):
    """A per-example (``reduction="none"``) version of a Keras loss object or identifier."""
    if loss is None:
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")
    if isinstance(loss, keras.losses.Loss):
        return type(loss).from_config({**loss.get_config(), "reduction": "none"})
    if isinstance(loss, str):
        obj = keras.losses.get({"class_name": loss, "config": {"reduction": "none"}}) \
            if loss[:1].isupper() else keras.losses.get(loss)
        return obj
    if callable(loss):
        return loss
    raise ValueError(f"Cannot use {loss!r} as the architecture loss; pass a keras Loss.")


class DARTS(SearchStrategy):
    """DARTS: an Adam step on alpha (and beta) after every training batch, first or second order.

    Args:
        space: the :class:`~tfcompress.nas.DartsSpace` of the supernet.
        validation_data: the architecture's data split: ``(x, y)`` arrays (batched with
            ``batch_size``, reshuffled and repeated) or a ``tf.data.Dataset`` of ``(x, y)``
            batches (repeated). Keep it disjoint from the training data (DARTS splits the
            CIFAR-10 training set 50/50).
        learning_rate, beta_1, beta_2: the architecture Adam (6e-4, 0.5, 0.999; PC-DARTS).
        weight_decay: L2 on alpha added to its gradient (1e-3 in DARTS).
        warmup_epochs: epochs without architecture steps (PC-DARTS: 15).
        loss: the architecture loss (default: the model's compiled loss, per example).
        batch_size: batch size for array validation (and training) data.
        order: 1 (first-order DARTS) or 2 (the unrolled gradient, see the module docstring).
        train_data: second order only: the weights' data split, ``(x, y)`` arrays or a
            dataset of ``(x, y)`` batches (usually the data given to ``fit``).
        xi: second order: the virtual step size (default: the weight optimizer's learning rate).
        hvp_epsilon: second order: the finite-difference scale (``eps = hvp_epsilon / ||v||``;
            0.01 in DARTS).
        verbose, log_dir: see :class:`~tfcompress.nas.strategy.SearchStrategy`.

    Example::

        search = DARTS(space, (x_val, y_val), verbose=1)
        supernet.fit(x_train, y_train, epochs=50, callbacks=[search])
        genotype = search.genotype()

        search2 = DARTS(space, (x_val, y_val), order=2, train_data=(x_train, y_train))
    """

    name = "DARTS"
    state_fields = StrategyState(ints=("arch_steps", "data_batches"))

    def __init__(self, space, validation_data, *, learning_rate=6e-4, beta_1=0.5, beta_2=0.999,
                 weight_decay=1e-3, warmup_epochs=0, loss=None, batch_size=64, seed=0,
                 order=1, train_data=None, xi=None, hvp_epsilon=0.01, verbose=0, log_dir=None):
        super().__init__(space, verbose=verbose, log_dir=log_dir)
        if not isinstance(warmup_epochs, int) or warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be a non-negative int, got {warmup_epochs!r}.")
        if learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {learning_rate!r}.")
        if order not in (1, 2):
            raise ValueError(f"order must be 1 (first-order DARTS) or 2 (unrolled), got {order!r}.")
        if order == 2 and train_data is None:
            raise ValueError("Second-order DARTS needs train_data=(x, y) (the weights' split) for "
                             "the virtual weight step.")
        if order == 1 and (train_data is not None or xi is not None):
            raise ValueError("train_data and xi are used by second-order DARTS only; pass order=2.")
        if xi is not None and not xi > 0:
            raise ValueError(f"xi must be positive, got {xi!r}.")
        if not hvp_epsilon > 0:
            raise ValueError(f"hvp_epsilon must be positive, got {hvp_epsilon!r}.")
        self.order, self.xi, self.hvp_epsilon = order, xi, float(hvp_epsilon)
        self.validation = as_dataset(validation_data, batch_size, seed=seed)
        self.training = (as_dataset(train_data, batch_size, seed=seed + 1) if order == 2
                         else None)
        self._train_iterator = None
        self.learning_rate, self.beta_1, self.beta_2 = learning_rate, beta_1, beta_2
        self.weight_decay, self.warmup_epochs = float(weight_decay), warmup_epochs
        self._loss_arg = loss
        self.arch_steps = 0
        self.data_batches = 0      # batches fit's architecture steps drew from the own split(s)
        self.optimizer = None
        self._iterator = None
        self._step_fns = {}

    def _check_head(self, model):
        """Any head: the architecture step uses the compiled (or given) loss."""

    def _attach(self, model):
        strategy = model.distribute_strategy
        with strategy.scope():
            self.optimizer = keras.optimizers.Adam(self.learning_rate, beta_1=self.beta_1,
                                                   beta_2=self.beta_2)
            self.optimizer.build(model.arch_variables)
        self._loss = per_example_loss(self._loss_arg if self._loss_arg is not None else model.loss)
        self._step_fns = {}

    # ----- the architecture step ----------------------------------------------------------
    def arch_active(self):
        """Whether the architecture step runs this epoch (after the warm-up)."""
        return self.epochs_done >= self.warmup_epochs

    def on_train_begin(self, logs=None):
        # The iterators are made at the first architecture step, after a checkpoint restore
        # (BackupAndRestore) has set data_batches, and skip the batches drawn before: a
        # resumed run, or a second fit, continues the (seeded) data stream where it stopped.
        self._iterator = None
        self._train_iterator = None

    def on_train_batch_end(self, batch, logs=None):
        if self.arch_active():
            if self._iterator is None:
                self._iterator = iter(self.validation.skip(self.data_batches))
                if self.training is not None:
                    self._train_iterator = iter(self.training.skip(self.data_batches))
            x, y = next(self._iterator)
            self.data_batches += 1
            if self.order == 2:
                xt, yt = next(self._train_iterator)
                self.arch_step(x, y, xt, yt)
            else:
                self.arch_step(x, y)

    def arch_step(self, x, y, x_train=None, y_train=None):
        """One architecture update on the validation batch ``(x, y)`` (second order: and the
        training batch ``(x_train, y_train)``); returns the validation loss."""
        model = self.supernet
        key = model.structure_key(training=True)
        if self.order == 2:
            if x_train is None or y_train is None:
                if self._train_iterator is None:
                    self._train_iterator = iter(self.training)
                x_train, y_train = next(self._train_iterator)
            if self._step_fns.get(("order2",) + key) is None:
                self._step_fns[("order2",) + key] = tf.function(self._cross_replica_step2,
                                                                autograph=False)
            loss = self._step_fns[("order2",) + key](
                tf.convert_to_tensor(x), tf.convert_to_tensor(y), tf.convert_to_tensor(x_train),
                tf.convert_to_tensor(y_train), tf.constant(self.xi_value(), tf.float32))
        else:
            if self._step_fns.get(key) is None:
                self._step_fns[key] = tf.function(self._cross_replica_step, autograph=False)
            loss = self._step_fns[key](tf.convert_to_tensor(x), tf.convert_to_tensor(y))
        self.arch_steps += 1
        return float(loss)

    def xi_value(self):
        """Second order: the virtual step size (``xi``, or the weight optimizer's current
        learning rate)."""
        if self.xi is not None:
            return float(self.xi)
        opt = getattr(self.supernet, "optimizer", None)
        if opt is None:
            raise ValueError("Second-order DARTS: the supernet has no optimizer to take xi from; "
                             "compile it or pass xi=...")
        lr = opt.learning_rate
        if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
            lr = lr(opt.iterations)
        return float(keras.backend.get_value(lr))

    # ----- second order -------------------------------------------------------------------
    def hypergradient(self, x, y, x_train, y_train, xi=None):
        """The unrolled architecture gradient (module docstring, Eqs. 7-8), one array per
        architecture variable (without weight decay). The network weights are left unchanged."""
        model = self.supernet
        key = ("hyper",) + model.structure_key(training=True)
        if self._step_fns.get(key) is None:
            def fn(a, b, c, d, e):
                hyper, _, _ = self._unrolled(a, b, c, d, e)
                return hyper
            self._step_fns[key] = tf.function(fn, autograph=False)
        xi = self.xi_value() if xi is None else float(xi)
        out = self._step_fns[key](tf.convert_to_tensor(x), tf.convert_to_tensor(y),
                                  tf.convert_to_tensor(x_train), tf.convert_to_tensor(y_train),
                                  tf.constant(xi, tf.float32))
        return [g.numpy() for g in out]

    def _sum_grads(self, x, y, variables):
        """Cross-replica: (loss, gradients of the mean loss on (x, y) w.r.t. ``variables``),
        summed over replicas that each see the same batch with the loss divided by their count."""
        strategy = self.supernet.distribute_strategy

        def replica(xb, yb):
            model = self.supernet
            replicas = tf.distribute.get_replica_context().num_replicas_in_sync
            with tf.GradientTape() as tape:
                tape.watch(variables)
                loss = tf.reduce_mean(self._loss(yb, model(xb, training=True))) / replicas
            grads = tape.gradient(loss, variables)
            return loss, [tf.zeros_like(v) if g is None else g for g, v in zip(grads, variables)]

        loss, grads = strategy.run(replica, args=(x, y))
        loss = strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)
        return loss, [strategy.reduce(tf.distribute.ReduceOp.SUM, g, axis=None) for g in grads]

    def _unrolled(self, x, y, xt, yt, xi):
        """Cross-replica: (hypergradient, validation loss at w', first-order part)."""
        model = self.supernet
        arch = list(model.arch_variables)
        weights = list(model.trainable_variables)
        arch_ids = {id(v) for v in arch} | {id(v) for v in model.arch_state_variables}
        stats = [v for v in model.non_trainable_variables if id(v) not in arch_ids]
        w0 = [tf.identity(v) for v in weights]
        s0 = [tf.identity(v) for v in stats]
        dtype = weights[0].dtype
        xi = tf.cast(xi, dtype)
        # virtual step w' = w - xi grad_w L_train(w, alpha)
        _, g_train = self._sum_grads(xt, yt, weights)
        for v, w, g in zip(weights, w0, g_train):
            v.assign(w - xi * g)
        # grad_alpha and grad_w' of L_val(w', alpha)
        loss, g_val = self._sum_grads(x, y, arch + weights)
        d_alpha, v_dir = g_val[: len(arch)], g_val[len(arch):]
        norm = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(g)) for g in v_dir]))
        eps = self.hvp_epsilon / tf.maximum(norm, tf.constant(1e-12, dtype))
        # grad_alpha L_train(w +- eps v, alpha)
        grads_pm = []
        for sign in (1.0, -1.0):
            for v, w, d in zip(weights, w0, v_dir):
                v.assign(w + sign * eps * d)
            grads_pm.append(self._sum_grads(xt, yt, arch)[1])
        for v, w in zip(weights, w0):
            v.assign(w)
        for v, value in zip(stats, s0):
            v.assign(value)
        hyper = [da - xi * (gp - gm) / (2.0 * eps)
                 for da, gp, gm in zip(d_alpha, grads_pm[0], grads_pm[1])]
        return hyper, loss, d_alpha

    def _cross_replica_step2(self, x, y, xt, yt, xi):
        model = self.supernet
        strategy = model.distribute_strategy
        arch = model.arch_variables
        before = [tf.identity(v) for v in arch]
        hyper, loss, _ = self._unrolled(x, y, xt, yt, xi)

        def apply(grads):
            replicas = tf.distribute.get_replica_context().num_replicas_in_sync
            decayed = [(g + self.weight_decay * v) / replicas for g, v in zip(grads, arch)]
            self.optimizer.apply_gradients(zip(decayed, arch))   # summed over the replicas

        strategy.run(apply, args=(hyper,))
        self._after_step(before, hyper)
        return loss

    def _cross_replica_step(self, x, y):
        model = self.supernet
        strategy = model.distribute_strategy
        arch = model.arch_variables
        before = [tf.identity(v) for v in arch]
        loss, grads = strategy.run(self._replica_step, args=(x, y))
        loss = strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)
        grads = [strategy.reduce(tf.distribute.ReduceOp.SUM, g, axis=None) for g in grads]
        self._after_step(before, grads)
        return loss

    def _replica_step(self, x, y):
        model = self.supernet
        arch = model.arch_variables
        replicas = tf.distribute.get_replica_context().num_replicas_in_sync
        with tf.GradientTape() as tape:
            tape.watch(arch)       # architecture variables are not trainable for Keras
            pred = model(x, training=True)
            loss = tf.reduce_mean(self._loss(y, pred)) / replicas
        grads = tape.gradient(loss, arch)
        grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, arch)]
        decayed = [g + self.weight_decay * v / replicas for g, v in zip(grads, arch)]
        self.optimizer.apply_gradients(zip(decayed, arch))
        return loss, grads

    def _after_step(self, before, grads):
        """Hook run in cross-replica context after the Adam step (IDARTS backtracks here)."""

    # ----- state --------------------------------------------------------------------------
    def get_state(self):
        state = super().get_state()
        if self.optimizer is not None and self.optimizer.variables:
            state["optimizer"] = [np.asarray(v.numpy()).tolist() for v in self.optimizer.variables]
        return state

    def _restore(self, state):
        values = state.get("optimizer")
        if values is not None:
            variables = self.optimizer.variables
            if len(values) != len(variables):
                raise ValueError(f"The saved architecture optimizer has {len(values)} variables; "
                                 f"this one has {len(variables)}.")
            for v, value in zip(variables, values):
                v.assign(np.asarray(value, v.dtype.as_numpy_dtype).reshape(v.shape))


class PCDARTS(DARTS):
    """PC-DARTS: DARTS on a partial-channel space (``DartsSpace(partial_channels=4)``) with
    edge normalization, and a 15-epoch warm-up without architecture steps."""

    name = "PCDARTS"

    def __init__(self, space, validation_data, *, warmup_epochs=15, **kwargs):
        if space.partial_channels < 2:
            raise ValueError("PCDARTS needs a partial-channel space, e.g. "
                             "DartsSpace(..., partial_channels=4); use DARTS for a plain space.")
        if not space.edge_normalization:
            raise ValueError("PCDARTS needs edge normalization (DartsSpace(edge_normalization=True)).")
        super().__init__(space, validation_data, warmup_epochs=warmup_epochs, **kwargs)


def rank_gate(score, tau):
    """1 for the edges whose rank by ``score`` is in the top ``1 - tau`` share, else 0.

    >>> rank_gate(np.array([0.3, 0.1, 0.9, 0.5]), 0.5).numpy().tolist()
    [0.0, 0.0, 1.0, 1.0]
    """
    score = tf.convert_to_tensor(score)
    n = tf.shape(score)[0]
    ranks = tf.argsort(tf.argsort(score))          # 0 = smallest
    quantile = tf.cast(ranks, tf.float32) / tf.cast(tf.maximum(n - 1, 1), tf.float32)
    return tf.cast(quantile >= tau, score.dtype)


class IDARTS(PCDARTS):
    """IDARTS (Xue et al., ICCV 2021): PC-DARTS with backtracking between alpha and beta.

    **Reconstruction (card B2, ❓).** The paper's exact update was not recovered; this follows
    the card's version, borrowed from the same group's DCP-NAS. For each cell type and each
    group ``G`` in {alpha, beta} with coupled group ``H`` (beta for alpha, alpha for beta):

    1. the vanilla Adam step ``G^{t+1} = Adam(G^t, dL/dG^t)`` (as PC-DARTS);
    2. backtracking ``G~^{t+1} = G^{t+1} + eta * m_H o psi_G o G^t``, per edge, where
       ``m_H`` is 1 on the edges whose rank by the coupled group's weights is in the top
       ``1 - tau`` (for alpha: the edge weight ``softmax(beta)``; for beta: the norm of the
       edge's op weights ``||softmax(alpha_e)||``), else 0 — the rank-gated backtracking;
    3. ``psi_G <- |psi_G - eta_psi * dL/dpsi_G|`` with
       ``dL/dpsi_G,e = eta * m_H,e * sum_o g_G(e, o) G^{t-1}(e, o)``, the gradient of the loss
       through step 2 of the previous update, using the gradient ``g_G`` taken at the
       backtracked point in this step (a one-step-delayed gradient, so no extra forward pass).

    Args (besides PC-DARTS'): eta (1.0), eta_psi (0.01), tau (0.5), psi_init (0.01).
    """

    name = "IDARTS"

    def __init__(self, space, validation_data, *, eta=1.0, eta_psi=0.01, tau=0.5, psi_init=0.01,
                 **kwargs):
        super().__init__(space, validation_data, **kwargs)
        if not 0.0 <= tau < 1.0:
            raise ValueError(f"tau must be in [0, 1), got {tau!r}.")
        if psi_init <= 0:
            raise ValueError(f"psi_init must be positive, got {psi_init!r}.")
        self.eta, self.eta_psi, self.tau, self.psi_init = float(eta), float(eta_psi), float(tau), float(psi_init)
        self._vars = {}

    def _attach(self, model):
        super()._attach(model)
        e = self.space.num_edges
        self._vars = {}
        with model.distribute_strategy.scope():
            for t in CELL_TYPES:
                for g, shape in (("alpha", (e, self.space.num_ops)), ("beta", (e,))):
                    self._vars[f"psi/{g}/{t}"] = tf.Variable(tf.fill((e,), self.psi_init),
                                                             trainable=False)
                    self._vars[f"prev/{g}/{t}"] = tf.Variable(tf.zeros(shape), trainable=False)
                    self._vars[f"gate/{g}/{t}"] = tf.Variable(tf.zeros((e,)), trainable=False)
            self._vars["has_previous"] = tf.Variable(0.0, trainable=False)

    def _after_step(self, before, grads):
        model = self.supernet
        arch = model.arch_variables
        index = {id(v): i for i, v in enumerate(arch)}
        has_prev = self._vars["has_previous"]
        for t in CELL_TYPES:
            alpha, beta = model.alpha(t), model.beta(t)
            a0, b0 = before[index[id(alpha)]], before[index[id(beta)]]
            ga, gb = grads[index[id(alpha)]], grads[index[id(beta)]]
            w = masked_softmax(a0, model._alive[t])
            gates = {"alpha": rank_gate(node_softmax(b0, self.space.nodes), self.tau),
                     "beta": rank_gate(tf.norm(w, axis=1), self.tau)}
            for g, var, start, grad in (("alpha", alpha, a0, ga), ("beta", beta, b0, gb)):
                psi = self._vars[f"psi/{g}/{t}"]
                prev = self._vars[f"prev/{g}/{t}"]
                last_gate = self._vars[f"gate/{g}/{t}"]
                # dL/dpsi through the previous backtracking step (zero before the first one)
                inner = grad * prev if g == "beta" else tf.reduce_sum(grad * prev, axis=1)
                dpsi = self.eta * last_gate * inner * has_prev
                psi.assign(tf.abs(psi - self.eta_psi * dpsi))
                term = gates[g] * psi
                var.assign_add(self.eta * (term[:, None] * start if g == "alpha" else term * start))
                prev.assign(start)
                last_gate.assign(gates[g])
        has_prev.assign(1.0)

    def get_state(self):
        state = super().get_state()
        if getattr(self, "_vars", None):
            state["idarts"] = {k: np.asarray(v.numpy()).tolist() for k, v in self._vars.items()}
        return state

    def _restore(self, state):
        super()._restore(state)
        for k, value in (state.get("idarts") or {}).items():
            if k not in self._vars:
                raise ValueError(f"Unknown IDARTS state entry {k!r}.")
            self._vars[k].assign(np.asarray(value, np.float32).reshape(self._vars[k].shape))
