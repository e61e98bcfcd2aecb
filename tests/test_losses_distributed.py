"""Loss terms with their own state stay in sync across replicas (tf.distribute)."""

import os
import subprocess
import sys


def test_center_loss_update_is_the_global_batch_rule_on_every_replica():
    """Two replicas each holding half the batch move the centres exactly as one device does
    on the whole batch (Wen et al.'s rule on the global batch), and both copies agree."""
    code = """
import tensorflow as tf
tf.config.set_logical_device_configuration(tf.config.list_physical_devices('CPU')[0],
    [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
import numpy as np, tfcompress
from tfcompress.losses import CenterLoss
rng = np.random.default_rng(0)
f = rng.normal(size=(8, 3)).astype('float32'); y = np.array([0, 1, 2, 0, 1, 1, 2, 0])

def step(strategy):
    with strategy.scope():
        layer = CenterLoss(3, alpha=0.5)
        layer.build([(None, 3), (None,)])
        layer.centers.assign(rng.normal(size=(3, 3)).astype('float32') * 0 + 0.25)
    ds = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices((f, y)).batch(8))
    batch = next(iter(ds))
    strategy.run(tf.function(lambda a, b: layer.update_centers(a, b)), args=batch)
    return [v.numpy() for v in strategy.experimental_local_results(layer.centers)]

two = step(tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1']))
one = step(tf.distribute.OneDeviceStrategy('/cpu:0'))[0]
c = np.full((3, 3), 0.25)
onehot = np.eye(3)[y]
counts, sums = onehot.sum(0), onehot.T @ f
ref = c - 0.5 * (counts[:, None] * c - sums) / (1 + counts[:, None])
np.testing.assert_allclose(one, ref, rtol=1e-5, atol=1e-7)
for copy in two:
    np.testing.assert_allclose(copy, ref, rtol=1e-5, atol=1e-7)
print('OK')
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "OK" in r.stdout
