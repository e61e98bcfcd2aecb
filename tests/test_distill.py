import os
import subprocess
import sys

import numpy as np
import pytest

from tfcompress._keras import keras, tf
from tfcompress.distill import Distiller, kd_loss


def test_kd_loss_closed_form():
    rng = np.random.default_rng(0)
    zs, zt = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    y = rng.integers(0, 4, 5)
    T, a = 3.0, 0.7

    def softmax(z):
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    ce = -np.log(softmax(zs)[np.arange(5), y])
    pt, ps = softmax(zt / T), softmax(zs / T)
    kl = (pt * np.log(pt / ps)).sum(-1)
    ref = (1 - a) * ce + a * T * T * kl
    got = kd_loss(tf.constant(y), tf.constant(zs, tf.float32), tf.constant(zt, tf.float32), T, a).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5)


def _pair():
    keras.utils.set_random_seed(0)
    teacher = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(8, 3, name="tc"),
                                keras.layers.Flatten(), keras.layers.Dense(3, activation="softmax")])
    student = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, name="sc"),
                                keras.layers.Flatten(), keras.layers.Dense(3, activation="softmax")])
    return student, teacher


def test_distiller_trains_student_only_and_saves_without_teacher(tmp_path):
    student, teacher = _pair()
    x = np.random.default_rng(1).normal(size=(32, 8, 8, 1)).astype(np.float32)
    y = (x.mean((1, 2, 3)) > 0).astype(int)
    t_before = [w.numpy().copy() for w in teacher.weights]
    s_before = [w.numpy().copy() for w in student.weights]
    d = Distiller(student=student, teacher=teacher, temperature=4.0, alpha=0.9,
                  feature_pairs=[("sc", "tc")], beta=10.0)
    d.compile(keras.optimizers.Adam(1e-2), metrics=["accuracy"])
    hist = d.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert {"loss", "distillation_loss", "accuracy"} <= set(hist.history)
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(t_before, teacher.weights))
    assert any(not np.array_equal(a, w.numpy()) for a, w in zip(s_before, student.weights))
    d.student.save(tmp_path / "s.keras")
    again = keras.models.load_model(tmp_path / "s.keras")
    assert again.count_params() == student.count_params()
    np.testing.assert_allclose(again.predict(x, verbose=0), student.predict(x, verbose=0), atol=1e-6)
    assert set(d.evaluate(x, y, verbose=0, return_dict=True)) >= {"loss", "accuracy"}


def test_distiller_loss_equals_closed_form_on_one_batch():
    student, teacher = _pair()
    x = np.random.default_rng(2).normal(size=(8, 8, 8, 1)).astype(np.float32)
    y = np.arange(8) % 3
    d = Distiller(student=student, teacher=teacher, temperature=2.0, alpha=0.5)
    d.compile("sgd")
    got = d.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)["loss"]
    zs = np.log(student.predict(x, verbose=0))
    zt = np.log(teacher.predict(x, verbose=0))
    ref = kd_loss(tf.constant(y), tf.constant(zs), tf.constant(zt), 2.0, 0.5).numpy().mean()
    assert got == pytest.approx(float(ref), rel=1e-4)


def test_bad_options():
    student, teacher = _pair()
    with pytest.raises(ValueError, match="temperature"):
        Distiller(student=student, teacher=teacher, temperature=0)
    with pytest.raises(ValueError, match="alpha"):
        Distiller(student=student, teacher=teacher, alpha=1.5)
    other = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(5)])
    with pytest.raises(ValueError, match="differ"):
        Distiller(student=other, teacher=teacher)
    with pytest.raises(ValueError, match="feature_pairs"):
        Distiller(student=student, teacher=teacher, feature_pairs=[("nope", "tc")])
    d = Distiller(student=student, teacher=teacher)
    with pytest.raises(ValueError, match="own loss"):
        d.compile("adam", loss="mse")


def test_distiller_under_mirrored_strategy_two_cpus(tmp_path):
    """Two replicas with the global batch split between them train the student to the same
    weights, and log the same losses, as one device on the whole batch (SGD, no shuffling:
    the same gradient up to float summation order)."""
    code = """
import tensorflow as tf
tf.config.set_logical_device_configuration(tf.config.list_physical_devices('CPU')[0],
    [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
import numpy as np, tfcompress
from tfcompress import keras
from tfcompress.distill import Distiller
x = np.random.default_rng(0).normal(size=(32, 6)).astype('float32'); y = (x[:, 0] > 0).astype(int)

def run(strategy):
    with strategy.scope():
        keras.utils.set_random_seed(0)
        teacher = keras.Sequential([keras.Input((6,)), keras.layers.Dense(2)])
        student = keras.Sequential([keras.Input((6,)), keras.layers.Dense(2)])
        d = Distiller(student=student, teacher=teacher, from_logits=True, alpha=0.5)
        d.compile(keras.optimizers.SGD(0.1), metrics=['accuracy'])
    h = d.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
    return student.get_weights(), h.history

two = tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])
assert two.num_replicas_in_sync == 2
w2, h2 = run(two)
w1, h1 = run(tf.distribute.OneDeviceStrategy('/cpu:0'))
for a, b in zip(w1, w2):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
np.testing.assert_allclose(h1['loss'], h2['loss'], rtol=1e-5)
np.testing.assert_allclose(h1['distillation_loss'], h2['distillation_loss'], rtol=1e-5)
assert np.abs(w1[0] - run(tf.distribute.OneDeviceStrategy('/cpu:0'))[0][0]).max() == 0  # deterministic
print('OK', h2['loss'])
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "OK" in r.stdout
