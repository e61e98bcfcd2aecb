"""The training runs of the multi-worker tests, written once and run twice: by each worker
under ``MultiWorkerMirroredStrategy`` (``tests/distributed/worker.py``) and by the test process
itself without a strategy (the single-process reference with the same global batch).

Every run returns its end state as ``{key: numpy array}``: all model variables (weights,
BatchNormalization statistics, filter masks and the pruning step, LSQ step sizes, the
supernet's architecture parameters and op masks), the optimizer's step count and, for the
search, the strategy's JSON state (the architecture Adam moments, the bandit table, the random
generator).

Data. Real images (MNIST pooled to 14x14, CIFAR-10 pooled to 8x8). Worker ``w`` trains at step
``s`` on rows ``[(s W + w) b, (s W + w + 1) b)`` of the training set (``W`` workers, ``b``
examples per worker), fed with ``distribute_datasets_from_function``, so the global batch of
step ``s`` is the contiguous block ``[s W b, (s + 1) W b)``. The reference trains on exactly
these global batches (the rows of a global batch interleaved worker by worker, see
:func:`global_batches`). The order is the same in every epoch (``steps`` batches per epoch),
so a run resumed at an epoch boundary sees the same data as an uninterrupted one.

BatchNormalization. The binary, LSQ and pruning models use ``synchronized=True``: the batch
statistics are all-reduced, so training equals the single-process run on the global batch. The
NAS supernet keeps the library's plain BatchNormalization, which normalizes each worker's own
batch; its single-process equal is ghost batch normalization with a virtual batch of ``b``
(Keras ``virtual_batch_size``), which the reference uses (:func:`batchnorm_semantics`).
"""

import contextlib
import json
import sys
from pathlib import Path

import numpy as np

import tfcompress  # noqa: I001  (first: selects Keras 2 before larq imports TensorFlow's Keras)
import larq as lq  # noqa: E402
from tfcompress._keras import keras, tf
from tfcompress.pruning import FilterPruning, PolynomialDecay, filter_masks, shrink

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "nas"))
from nas_helpers import SMALL_OPS, cifar8, tiny_space  # noqa: E402

WORKERS = 2          # the cluster the tests run (and the reference emulates)
BATCH = 8            # examples per worker per step (global batch 16)


class Context:
    """Where a case runs: ``strategy`` (``MultiWorkerMirroredStrategy`` or the default),
    ``workers`` the data is split over (the reference: the cluster it stands for),
    ``distributed`` whether ``strategy`` really spans the workers."""

    def __init__(self, strategy=None, workers=WORKERS, batch=BATCH):
        self.strategy = strategy or tf.distribute.get_strategy()
        self.distributed = strategy is not None and strategy.num_replicas_in_sync > 1
        self.workers, self.batch = workers, batch

    def scope(self):
        return self.strategy.scope()

    def train_data(self, x, y, steps):
        """The input of ``fit`` for ``steps`` steps per epoch (see the module docstring)."""
        w, b = self.workers, self.batch
        need = steps * w * b
        if len(x) < need:
            raise ValueError(f"{len(x)} examples for {steps} steps of {w} x {b}.")
        x, y = x[:need], y[:need]
        if not self.distributed:
            gx, gy = global_batches(x, w, b), global_batches(y, w, b)
            return tf.data.Dataset.from_tensor_slices((gx, gy)).batch(w * b).repeat()

        def shard(input_context):
            i = input_context.input_pipeline_id
            xs = x.reshape(steps, w, b, *x.shape[1:])[:, i].reshape(steps * b, *x.shape[1:])
            ys = y.reshape(steps, w, b, *y.shape[1:])[:, i].reshape(steps * b, *y.shape[1:])
            return tf.data.Dataset.from_tensor_slices((xs, ys)).batch(b).repeat()

        return self.strategy.distribute_datasets_from_function(shard)


def global_batches(a, workers, batch):
    """Rows of each global batch reordered worker-interleaved (row ``r`` of the block from
    worker ``r % workers``): Keras' ghost batch normalization groups rows that way (it reshapes
    a batch to ``(virtual_batch_size, -1, ...)``), so ghost batch ``w`` is worker ``w``'s batch.
    The order does not change a sum over the batch (only its rounding)."""
    steps = len(a) // (workers * batch)
    blocks = a.reshape(steps, workers, batch, *a.shape[1:])
    return np.swapaxes(blocks, 1, 2).reshape(len(a), *a.shape[1:])


# ------------------------------------------------------------------------------- data
_DATA = {}


def mnist14(n):
    """The first ``n`` real MNIST training images, 2x2-average-pooled to 14x14, in [-1, 1]."""
    if ("mnist", n) not in _DATA:
        (x, y), _ = tfcompress.data.load("mnist")
        x = x[:n].astype(np.float32).reshape(n, 14, 2, 14, 2).mean(axis=(2, 4)) / 127.5 - 1.0
        _DATA["mnist", n] = (x[..., None].astype(np.float32), y[:n].astype(np.int64))
    return _DATA["mnist", n]


# ------------------------------------------------------------------------------- init, state
def init_weights(model, seed):
    """Deterministic numpy initial values, the same in every process: Glorot-uniform kernels
    (``kernel``, ``depthwise_kernel``, ...) and N(0, 1e-3) architecture parameters (the
    variables whose initializers are random); everything else keeps its constant
    initializer."""
    rng = np.random.default_rng(seed)
    for v in model.variables:
        name = v.name
        if "arch_alpha" in name or "arch_beta" in name:
            v.assign(rng.normal(0.0, 1e-3, v.shape).astype(np.float32))
        elif v.trainable and "kernel" in name.split("/")[-1]:
            fan_in = int(np.prod(v.shape[:-1]))
            fan_out = int(v.shape[-1]) * int(np.prod(v.shape[:-2]) if len(v.shape) > 2 else 1)
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            v.assign(rng.uniform(-limit, limit, v.shape).astype(np.float32))


def model_state(prefix, model):
    """``{prefix/NNN: value}`` of every variable of ``model`` and of its optimizer, by position
    (names carry per-process counters; positions do not), and ``{prefix/names: [...]}``."""
    variables = list(model.variables)
    opt = getattr(model, "optimizer", None)
    if opt is not None:
        variables += [opt.iterations]
    # One function reads them all: under MultiWorkerMirroredStrategy reading a per-worker
    # (SyncOnRead) BatchNormalization statistic is an all-reduce, and one traced function
    # runs them back to back instead of one eager round trip each.
    values = tf.function(lambda: [tf.identity(v) for v in variables])()
    out = {f"{prefix}/{i:03d}": np.asarray(t.numpy()) for i, t in enumerate(values)}
    out[f"{prefix}/names"] = np.array([v.name for v in variables])
    return out


class Snapshots(keras.callbacks.Callback):
    """Records :func:`model_state` when training begins (``prefix/init/...``) and after the
    first step (``prefix/step1/...``): the multi-worker and single-process runs must agree to
    rounding after one step, and their end states are compared relative to the change from
    the initial state."""

    def __init__(self, prefix):
        super().__init__()
        self.prefix, self.states = prefix, {}

    def on_train_begin(self, logs=None):
        self.states.update(model_state(f"{self.prefix}/init", self.model))

    def on_train_batch_end(self, batch, logs=None):
        if f"{self.prefix}/step1/names" not in self.states:
            self.states.update(model_state(f"{self.prefix}/step1", self.model))


# ------------------------------------------------------------------------------- cases
def binary_model():
    """The binary CNN of :func:`case_binary` (build inside the strategy's scope)."""
    inp = keras.Input((14, 14, 1))
    h = lq.layers.QuantConv2D(16, 3, kernel_quantizer="ste_sign",
                              kernel_constraint="weight_clip", use_bias=False,
                              name="bconv1")(inp)
    h = keras.layers.BatchNormalization(synchronized=True, momentum=0.9, name="bn1")(h)
    h = tfcompress.layers.RPReLU(name="rprelu1")(h)
    h = tfcompress.layers.QuantConv2D(16, 3, strides=2, padding="same", pad_values=1.0,
                                      input_quantizer=tfcompress.quantizers.RSign(),
                                      kernel_quantizer="ste_sign",
                                      kernel_constraint="weight_clip", use_bias=False,
                                      name="bconv2")(h)
    h = keras.layers.BatchNormalization(synchronized=True, momentum=0.9, name="bn2")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    out = keras.layers.Dense(10, name="head")(h)
    model = keras.Model(inp, out, name="binary")
    model.compile(keras.optimizers.Adam(1e-2),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def case_binary(ctx, callbacks=(), epochs=2, steps=4, seed=1):
    """A binary CNN from larq and tfcompress layers: larq ``QuantConv2D`` (sign kernel),
    ``RPReLU``, tfcompress ``QuantConv2D`` with ReActNet's ``RSign`` input quantizer (learnable
    thresholds) and padding with +1, synchronized BatchNormalization, Adam."""
    keras.utils.set_random_seed(seed)
    x, y = mnist14(steps * ctx.workers * ctx.batch)
    with ctx.scope():
        model = binary_model()
    init_weights(model, seed)
    snap = Snapshots("binary")
    hist = model.fit(ctx.train_data(x, y, steps), epochs=epochs, steps_per_epoch=steps,
                     verbose=0, callbacks=[snap, *callbacks])
    return {**model_state("binary", model), **snap.states,
            "binary/loss": np.array(hist.history["loss"])}


def _lsq(bits=4, signed=True):
    return tfcompress.quantizers.get({"class_name": "lsq",
                                      "config": {"bits": bits, "signed": signed}})


def lsq_model():
    """The 4-bit LSQ CNN of :func:`case_lsq` (build inside the strategy's scope)."""
    inp = keras.Input((14, 14, 1))
    h = tfcompress.layers.QuantConv2D(16, 3, kernel_quantizer=_lsq(), use_bias=False,
                                      name="qconv1")(inp)
    h = keras.layers.BatchNormalization(synchronized=True, momentum=0.9, name="bn1")(h)
    h = keras.layers.ReLU(name="relu1")(h)
    h = tfcompress.layers.QuantConv2D(16, 3, strides=2, input_quantizer=_lsq(signed=False),
                                      kernel_quantizer=_lsq(), use_bias=False, name="qconv2")(h)
    h = keras.layers.BatchNormalization(synchronized=True, momentum=0.9, name="bn2")(h)
    h = keras.layers.ReLU(name="relu2")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    out = tfcompress.layers.QuantDense(10, input_quantizer=_lsq(signed=False),
                                       kernel_quantizer=_lsq(), name="qhead")(h)
    model = keras.Model(inp, out, name="lsq")
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def case_lsq(ctx, callbacks=(), epochs=2, steps=4, seed=2):
    """A 4-bit LSQ CNN: LSQ on every kernel and (unsigned, after ReLU) on the activations, whose
    step sizes are initialized from the first batch (the global batch, combined over the
    workers) and then trained."""
    keras.utils.set_random_seed(seed)
    x, y = mnist14(steps * ctx.workers * ctx.batch)
    with ctx.scope():
        model = lsq_model()
    init_weights(model, seed)
    snap = Snapshots("lsq")
    hist = model.fit(ctx.train_data(x, y, steps), epochs=epochs, steps_per_epoch=steps,
                     verbose=0, callbacks=[snap, *callbacks])
    return {**model_state("lsq", model), **snap.states,
            "lsq/loss": np.array(hist.history["loss"])}


def cnn_model(compile=True, synchronized=True, width=16):
    """The float CNN that :func:`case_prune` prunes (build inside the strategy's scope);
    ``synchronized=False``: plain (per-worker) BatchNormalization; ``width``: filters of the
    first convolution (the second has twice as many when it is not 16)."""
    inp = keras.Input((14, 14, 1))
    h = keras.layers.Conv2D(width, 3, name="conv1")(inp)
    h = keras.layers.BatchNormalization(synchronized=synchronized, momentum=0.9, name="bn1")(h)
    h = keras.layers.ReLU(name="relu1")(h)
    h = keras.layers.Conv2D(16 if width == 16 else 2 * width, 3, strides=2, name="conv2")(h)
    h = keras.layers.BatchNormalization(synchronized=synchronized, momentum=0.9, name="bn2")(h)
    h = keras.layers.ReLU(name="relu2")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    out = keras.layers.Dense(10, name="head")(h)
    model = keras.Model(inp, out, name="cnn")
    if compile:
        model.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


PRUNE_EPOCHS, PRUNE_STEPS = 3, 4


def case_prune(ctx, callbacks=(), epochs=PRUNE_EPOCHS, steps=PRUNE_STEPS, seed=3):
    """``FilterPruning`` (L1) on a float CNN: ``prepare`` (masks), the callback under ``fit``
    (a polynomial schedule to 50% of the filters, mask updates every 2 steps from step 2 to
    8), then ``shrink``. Returns the masked model's state, the masks and pruning step, the
    shrunk model's weights and its predictions on fixed images."""
    keras.utils.set_random_seed(seed)
    x, y = mnist14(steps * ctx.workers * ctx.batch)
    with ctx.scope():
        base = cnn_model(compile=False)
        init_weights(base, seed)
        pruner = FilterPruning(0.5, "l1", schedule=PolynomialDecay(0.0, 0.5, 2, 8, frequency=2))
        model = pruner.prepare(base)
        model.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    snap = Snapshots("prune")
    model.fit(ctx.train_data(x, y, steps), epochs=epochs, steps_per_epoch=steps, verbose=0,
              callbacks=[snap, pruner, *callbacks])
    return {**prune_result(model), **snap.states}


def prune_result(model):
    out = model_state("prune", model)
    masks = filter_masks(model)
    for name, m in sorted(masks.items()):
        out[f"prune/mask/{name}"] = m.mask.numpy()
        out[f"prune/step/{name}"] = np.asarray(m.pruning_step.numpy())
    small = shrink(model)
    x_fixed = mnist14(64)[0][:16]
    out["prune/small_weights"] = np.concatenate([w.ravel() for w in small.get_weights()])
    out["prune/small_shapes"] = np.array([str([tuple(w.shape) for w in small.get_weights()])])
    out["prune/small_pred"] = small.predict(x_fixed, verbose=0)
    out["prune/masked_pred"] = model.predict(x_fixed, verbose=0)
    return out


@contextlib.contextmanager
def batchnorm_semantics(ghost_batch=None):
    """Build-time settings of the BatchNormalization layers a model creates inside: non-fused
    (the fused kernel's moving variance is Bessel-corrected, the non-fused one is not, so both
    runs use the same formula) and, for the reference, ghost batches of ``ghost_batch``
    examples (one per worker: what each worker's plain BatchNormalization normalizes over)."""
    original = keras.layers.BatchNormalization

    def make(*args, **kwargs):
        kwargs["fused"] = False
        if ghost_batch is not None:
            kwargs["virtual_batch_size"] = ghost_batch
        return original(*args, **kwargs)

    keras.layers.BatchNormalization = make
    try:
        yield
    finally:
        keras.layers.BatchNormalization = original


NAS_EPOCHS, NAS_STEPS = 4, 2


def case_nas(ctx, callbacks=(), epochs=NAS_EPOCHS, steps=NAS_STEPS, seed=4, snapshots=None):
    """BNAS on a binarized DARTS space (``skip_connect`` and a binary ``sep_conv_3x3`` on each
    edge, partial channels with edge normalization): per training batch a DARTS Adam step on
    alpha/beta with the same validation batch on every worker; after a 1-epoch warm-up, 2
    sampled sub-networks scored per epoch (:func:`log_likelihood_score`) and, after 2 epochs
    of scores (the end of epoch 3 of 4), the worse op of every edge removed; the last epoch
    trains the pruned supernet. ``snapshots``: the :class:`Snapshots` to record into (kept
    by the caller when ``fit`` raises)."""
    keras.utils.set_random_seed(seed)      # also the tf.data shuffle of DARTS' split
    (x, y), (xv, yv) = cifar8(n_train=steps * ctx.workers * ctx.batch, n_val=32)
    space = tiny_space("binary", SMALL_OPS, partial_channels=2)
    with batchnorm_semantics(None if ctx.distributed else ctx.batch), ctx.scope():
        net = space.build((8, 8, 3), 4)
        search = tfcompress.nas.BNAS(space, (xv, yv), rounds=1, warmup_epochs=1, samples=2,
                                     exclude=("none", "max_pool_3x3"), eval_size=32,
                                     batch_size=ctx.batch, seed=seed,
                                     score_fn=log_likelihood_score(xv, yv))
    init_weights(net, seed)
    snap = snapshots or Snapshots("nas")
    net.fit(ctx.train_data(x, y, steps), epochs=epochs, steps_per_epoch=steps, verbose=0,
            callbacks=[snap, search, *callbacks])
    return {**nas_result(net, search), **snap.states}


def log_likelihood_score(x, y):
    """BNAS's sub-network score as the mean log-likelihood of the labels (a continuous score).

    The default score, accuracy on the 32 scoring images, is a step function of the logits,
    and the logits of a barely trained binary supernet are nearly tied: a float32 rounding
    difference (two workers vs one process) can flip one prediction, then an op removal, and
    the two searches part ways. With a continuous score a rounding difference stays one."""
    x, y = tf.constant(x), tf.constant(y)
    functions = {}        # traced per op-mask pattern, as BNAS' own scorer (nas.strategy.Forward)

    def score(model):
        key = model.structure_key(training=False)
        if key not in functions:
            functions[key] = tf.function(lambda: tf.reduce_mean(
                keras.losses.sparse_categorical_crossentropy(
                    y, model(x, training=False), from_logits=True)))
        return -float(functions[key]())

    return score


def nas_result(net, search):
    out = model_state("nas", net)
    state = search.get_state()
    out["nas/state_json"] = np.array([json.dumps(state, sort_keys=True)])
    for t in ("normal", "reduce"):
        out[f"nas/m/{t}"] = np.asarray(state["m"][t], np.float64)
        out[f"nas/n/{t}"] = np.asarray(state["n"][t], np.int64)
        out[f"nas/alive/{t}"] = net.alive(t).astype(np.int8)
    out["nas/arch_optimizer"] = np.concatenate(
        [np.ravel(np.asarray(v, np.float64)) for v in state.get("optimizer", [])] or [np.zeros(0)])
    out["nas/counters"] = np.array([state["epochs_done"], state["arch_steps"],
                                    state["since_prune"]])
    out["nas/genotype"] = np.array([search.genotype().to_json()])
    return out


# ------------------------------------------------------------------------------- benchmark
def bench_model(name, ctx, steps, seed=0):
    """``(model, fit arguments, callbacks)`` of one model of ``tools/bench_distributed.py``
    for ``steps`` steps of ``ctx.batch`` examples per worker: ``"cnn"``, ``"binary"``,
    ``"lsq"`` (the models above), ``"cnn-localbn"`` (the CNN with per-worker
    BatchNormalization), ``"cnn-wide"`` (64 and 128 filters: 40x the compute) or ``"bnas"``
    (the BNAS test's supernet with an architecture step after every weight step: DARTS with
    no warm-up)."""
    builders = {"cnn": cnn_model, "binary": binary_model, "lsq": lsq_model,
                "cnn-localbn": lambda: cnn_model(synchronized=False),
                "cnn-wide": lambda: cnn_model(width=64)}
    if name in builders:
        x, y = mnist14(steps * ctx.workers * ctx.batch)
        with ctx.scope():
            model = builders[name]()
        init_weights(model, seed)
        return model, (ctx.train_data(x, y, steps),), []
    if name != "bnas":
        raise ValueError(f"Unknown benchmark model {name!r}; valid: cnn, cnn-localbn, "
                         "cnn-wide, binary, lsq, bnas.")
    (x, y), (xv, yv) = cifar8(n_train=steps * ctx.workers * ctx.batch, n_val=64)
    space = tiny_space("binary", SMALL_OPS, partial_channels=2)
    with ctx.scope():
        net = space.build((8, 8, 3), 4)
        search = tfcompress.nas.DARTS(space, (xv, yv), batch_size=ctx.batch, seed=seed)
    init_weights(net, seed)
    return net, (ctx.train_data(x, y, steps),), [search]
