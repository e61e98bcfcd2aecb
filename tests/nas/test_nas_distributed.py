"""Scale-out: the supernet and the DARTS architecture step under tf.distribute.MirroredStrategy
with two logical CPU devices (a fresh process, since logical devices must be set up before
TensorFlow initializes)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent

SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {here!r})
    import numpy as np
    import tfcompress
    from tfcompress._keras import keras, tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    from nas_helpers import cifar8, tiny_space
    from tfcompress.nas import DARTS

    keras.utils.set_random_seed(0)
    (x, y), (xv, yv) = cifar8()
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    space = tiny_space(partial_channels=2)
    with strategy.scope():
        net = space.build((8, 8, 3), 4)
        search = DARTS(space, (xv, yv), batch_size=16)
    alpha0 = [v.numpy().copy() for v in net.arch_variables]
    w0 = [v.numpy().copy() for v in net.trainable_variables]
    hist = net.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[search])
    steps_in_fit = search.arch_steps

    # the same architecture step on one device, from the same state, for comparison
    alpha_before = [v.numpy().copy() for v in net.arch_variables]
    state = search.get_state()
    xb, yb = xv[:16], yv[:16]
    search.arch_step(xb, yb)
    dist_delta = [v.numpy() - a for v, a in zip(net.arch_variables, alpha_before)]
    single = space.build((8, 8, 3), 4)
    single.set_weights(net.get_weights())
    for v, a in zip(single.arch_variables, alpha_before):
        v.assign(a)
    ref = DARTS(space, (xv, yv), batch_size=16)
    ref.set_state(state)                    # the same Adam moments and step count
    ref.set_model(single)
    ref.arch_step(xb, yb)
    single_delta = [v.numpy() - a for v, a in zip(single.arch_variables, alpha_before)]
    print(json.dumps({{
        "replicas": strategy.num_replicas_in_sync,
        "mirrored": type(net.arch_variables[0]).__name__,
        "alpha_changed": [float(np.abs(v.numpy() - a).max()) for v, a in zip(net.arch_variables, alpha0)],
        "weights_changed": sum(not np.array_equal(v.numpy(), w) for v, w in zip(net.trainable_variables, w0)),
        "weights": len(w0), "arch_steps": steps_in_fit,
        "loss": hist.history["loss"][0],
        "step_diff": max(float(np.abs(a - b).max()) for a, b in zip(dist_delta, single_delta)),
        "step_size": max(float(np.abs(a).max()) for a in single_delta),
    }}))
""")


def test_supernet_and_darts_train_under_mirrored_strategy(tmp_path):
    script = tmp_path / "mirrored.py"
    script.write_text(SCRIPT.format(here=str(HERE)))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600,
                       env=env)
    assert r.returncode == 0, r.stderr[-4000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2 and out["mirrored"] == "MirroredVariable"
    assert out["arch_steps"] == 2 and min(out["alpha_changed"]) > 0
    assert out["weights_changed"] > out["weights"] // 2 and out["loss"] > 0
    # two replicas on the same batch with the loss divided by 2 = the single-device step
    assert out["step_diff"] <= 1e-6 + 1e-3 * out["step_size"]
