"""ABanditNAS' defensive operations (Gabor filter, denoising block) against numpy references,
their use in a search space, and the adversarial evaluation (FGSM / PGD) against the closed form
of a linear classifier."""

import math

import numpy as np
import pytest
from nas_helpers import cifar8

from tfcompress._keras import keras, tf
from tfcompress.nas import (
    ABANDIT_PRIMITIVES, ABanditNAS, DartsSpace, GaborConv2D, Genotype, NonLocalMeans, fgsm_examples,
    gabor_kernel, pgd_examples, robust_accuracy,
)
from tfcompress.nas.ops import apply_steps, op_steps


def _np_gabor(size, sigma, theta, lambd, psi, gamma):
    r = size // 2
    out = np.zeros((size, size, len(sigma)))
    for c in range(len(sigma)):
        for i in range(size):
            for j in range(size):
                x, y = j - r, i - r            # x: column offset, y: row offset
                xr = x * math.cos(theta[c]) + y * math.sin(theta[c])
                yr = -x * math.sin(theta[c]) + y * math.cos(theta[c])
                out[i, j, c] = (math.exp(-(xr ** 2 + gamma[c] ** 2 * yr ** 2) / (2 * sigma[c] ** 2))
                                * math.cos(2 * math.pi * xr / lambd[c] + psi[c]))
    return out


def _np_depthwise(x, k, stride):
    """'same' depthwise correlation (TF's padding: extra pixel at the bottom/right)."""
    n, h, w, c = x.shape
    ks = k.shape[0]
    oh, ow = -(-h // stride), -(-w // stride)
    pad_h = max((oh - 1) * stride + ks - h, 0)
    pad_w = max((ow - 1) * stride + ks - w, 0)
    xp = np.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    out = np.zeros((n, oh, ow, c))
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, i * stride: i * stride + ks, j * stride: j * stride + ks, :]
            out[:, i, j, :] = (patch * k[None]).sum(axis=(1, 2))
    return out


def _np_nlm(x, mode):
    n, h, w, c = x.shape
    f = x.reshape(n, h * w, c)
    s = np.einsum("nic,njc->nij", f, f)
    if mode == "gaussian":
        s = s / math.sqrt(c)
        s = np.exp(s - s.max(-1, keepdims=True))
        s = s / s.sum(-1, keepdims=True)
    else:
        s = s / (h * w)
    return np.einsum("nij,njc->nic", s, f).reshape(x.shape)


def _sigmoid(v):
    return 1 / (1 + np.exp(-v))


def test_gabor_kernel_and_layer_match_numpy(rng):
    c = 3
    params = [rng.uniform(0.4, 1.5, c), rng.uniform(0, 6, c), rng.uniform(0.5, 3, c),
              rng.normal(size=c), rng.uniform(0.5, 1.5, c)]
    for size in (3, 5):
        got = gabor_kernel(size, *[tf.constant(p) for p in params]).numpy()
        np.testing.assert_allclose(got, _np_gabor(size, *params), rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="odd"):
        gabor_kernel(4, *[tf.constant(p) for p in params])

    x = rng.normal(size=(2, 7, 7, c)).astype(np.float32)
    for stride in (1, 2):
        layer = GaborConv2D(3, strides=stride)
        out = layer(x).numpy()
        t, s, lam, psi, g = (w.numpy().astype(np.float64) for w in
                             (layer.theta_raw, layer.sigma_raw, layer.lambda_raw, layer.psi,
                              layer.gamma_raw))
        # the archive's parameter ranges
        k = _np_gabor(3, 0.1 + 0.4 * _sigmoid(s), 2 * np.pi * _sigmoid(t),
                      0.001 + 0.999 * _sigmoid(lam), psi, 1 + 0.5 * g)
        ref = _np_depthwise(x.astype(np.float64), k, stride)
        assert out.shape == ref.shape == (2, 4 if stride == 2 else 7, 4 if stride == 2 else 7, c)
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)
    again = GaborConv2D.from_config(GaborConv2D(3, strides=2).get_config())
    assert again.strides == 2 and again.kernel_size == 3


def test_non_local_means_matches_numpy(rng):
    x = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    for mode in ("gaussian", "dot"):
        np.testing.assert_allclose(NonLocalMeans(mode)(x).numpy(), _np_nlm(x.astype(np.float64), mode),
                                   rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="mode must be one of"):
        NonLocalMeans("embedded")


def _bn_params(rng, c):
    return [rng.uniform(0.5, 1.5, c), rng.normal(size=c), rng.normal(size=c), rng.uniform(0.5, 2, c)]


def _np_bn(v, gamma, beta, mean, var):
    return gamma * (v - mean) / np.sqrt(var + 1e-5) + beta


def test_defensive_ops_are_their_blocks_in_numpy(rng):
    """Derived-model (affine BN, inference) outputs of both ops, stride 1 and 2."""
    c = 4
    x = rng.normal(size=(2, 6, 6, c)).astype(np.float32)
    xd = x.astype(np.float64)
    for stride in (1, 2):
        # denoising block: x + BN(conv1x1(NLM(x))), subsampled with stride 2
        steps = op_steps("denoising_block", c, stride, "float", affine=True, prefix=f"d{stride}")
        inp = keras.Input((6, 6, c))
        model = keras.Model(inp, apply_steps(steps, inp))
        pw = rng.normal(size=(1, 1, c, c))
        bn = _bn_params(rng, c)
        model.get_layer(f"d{stride}_denoising_block_pw").set_weights([pw])
        model.get_layer(f"d{stride}_denoising_block_bn").set_weights(bn)
        ref = xd + _np_bn(_np_nlm(xd, "gaussian") @ pw[0, 0], *bn)
        ref = ref[:, ::stride, ::stride]
        np.testing.assert_allclose(model(x, training=False).numpy(), ref, rtol=1e-4, atol=1e-4)

        # Gabor op: BN(conv1x1(gabor(x))) + (x, or BN(conv1x1 stride 2 (x)))
        steps = op_steps("gabor_3x3", c, stride, "float", affine=True, prefix=f"g{stride}")
        model = keras.Model(inp, apply_steps(steps, inp))
        gab = model.get_layer(f"g{stride}_gabor_3x3_gabor")
        pw, bn = rng.normal(size=(1, 1, c, c)), _bn_params(rng, c)
        model.get_layer(f"g{stride}_gabor_3x3_pw").set_weights([pw])
        model.get_layer(f"g{stride}_gabor_3x3_bn").set_weights(bn)
        k = gab.kernel().numpy()[..., 0].astype(np.float64)
        ref = _np_bn(_np_depthwise(xd, k, stride) @ pw[0, 0], *bn)
        if stride == 1:
            ref = ref + xd
        else:
            spw, sbn = rng.normal(size=(1, 1, c, c)), _bn_params(rng, c)
            model.get_layer(f"g{stride}_gabor_3x3_short_conv").set_weights([spw])
            model.get_layer(f"g{stride}_gabor_3x3_short_bn").set_weights(sbn)
            ref = ref + _np_bn(xd[:, ::2, ::2] @ spw[0, 0], *sbn)
        np.testing.assert_allclose(model(x, training=False).numpy(), ref, rtol=1e-4, atol=1e-4)
    # the denoising block starts as the identity in derived models (BN scale 0)
    steps = op_steps("denoising_block", c, 1, "float", affine=True, prefix="fresh")
    np.testing.assert_allclose(apply_steps(steps, tf.constant(x)).numpy(), x, atol=1e-6)
    with pytest.raises(ValueError, match="real-valued.*float space"):
        op_steps("gabor_3x3", c, 1, "binary")


def test_abanditnas_space_with_defensive_ops_builds_searches_and_derives(tmp_path):
    assert len(ABANDIT_PRIMITIVES) == 9 and "none" not in ABANDIT_PRIMITIVES
    (x, y), (xv, yv) = cifar8()
    ops = ["skip_connect", "gabor_3x3", "dtp_blok_3x3"]         # the archive's name for the block
    space = DartsSpace(num_cells=1, channels=4, ops="float", nodes=1, primitives=ops)
    assert space.primitives == ("skip_connect", "gabor_3x3", "denoising_block")
    net = space.build((8, 8, 3), 4)
    search = ABanditNAS(space, (xv, yv), exclude=(), seed=0)
    net.fit(x[:32], y[:32], batch_size=32, epochs=1, verbose=0, callbacks=[search])
    assert (search.n["reduce"].sum(1) == 1).all()              # one op sampled per edge
    geno = Genotype(normal=[("gabor_3x3", 0), ("denoising_block", 1)], normal_concat=[2],
                    reduce=[("denoising_block", 0), ("gabor_3x3", 1)], reduce_concat=[2],
                    primitives=space.primitives)
    model = space.derive(geno, num_cells=2)
    model.fit(x[:32], y[:32], batch_size=16, epochs=1, verbose=0)
    path = str(tmp_path / "defended.keras")
    model.save(path)
    again = keras.models.load_model(path)
    np.testing.assert_allclose(again.predict(xv, verbose=0), model.predict(xv, verbose=0),
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="real-valued"):
        DartsSpace(num_cells=1, channels=4, ops="binary", nodes=1, primitives=ops).build((8, 8, 3), 4)


def _linear_model(rng, d=6):
    model = keras.Sequential([keras.Input((d,)), keras.layers.Dense(2)])
    w, b = rng.normal(size=(d, 2)).astype(np.float32), rng.normal(size=2).astype(np.float32)
    model.layers[0].set_weights([w, b])
    return model, w, b


def test_pgd_and_fgsm_reach_the_closed_form_attack_on_a_linear_model(rng):
    """For 2-class linear logits the worst L-inf perturbation is eps * sign(w_other - w_label),
    and PGD/FGSM find it; robust accuracy is then the sign of the worst-case margin."""
    model, w, b = _linear_model(rng)
    x = rng.normal(size=(64, 6)).astype(np.float32)
    y = rng.integers(0, 2, size=64)
    eps = 0.3
    direction = np.sign(w[:, 1 - y] - w[:, y]).T                       # (64, 6)
    worst = x + eps * direction
    for adv in (pgd_examples(model, x, y, epsilon=eps, steps=7, seed=1),       # random start
                pgd_examples(model, x, y, epsilon=eps, steps=3, step_size=eps / 2,
                             random_start=False),
                fgsm_examples(model, x, y, epsilon=eps, random_start=False)):
        np.testing.assert_allclose(adv.numpy(), worst, rtol=1e-6, atol=1e-6)
    # the input range is respected and the ball too
    clipped = pgd_examples(model, x, y, epsilon=eps, steps=4, input_range=(-0.5, 0.5), seed=2).numpy()
    assert clipped.min() >= -0.5 - 1e-7 and clipped.max() <= 0.5 + 1e-7
    inside = np.abs(x) <= 0.5
    assert np.abs(clipped - x)[inside].max() <= eps + 1e-6

    diff = w[:, y] - w[:, 1 - y]                                        # (6, 64)
    margin = np.einsum("id,di->i", x, diff) + b[y] - b[1 - y]
    l1 = np.abs(diff).sum(0)
    expected = {"clean": np.mean(margin > 0), "fgsm": np.mean(margin - eps * l1 > 0),
                "pgd": np.mean(margin - eps * l1 > 0)}
    got = robust_accuracy(model, x, y, epsilon=eps, batch_size=24)
    assert got == pytest.approx(expected)
    assert got["pgd"] < got["clean"]                     # the attack does something here
    (_, _), (xv, yv) = cifar8()
    space = DartsSpace(num_cells=1, channels=4, ops="float", nodes=1, primitives=["skip_connect"])
    search = ABanditNAS(space, (xv, yv), exclude=(), epsilon=eps)
    assert search.robustness(model, x, y, batch_size=24) == pytest.approx(expected)
    with pytest.raises(ValueError, match="attacks must be"):
        robust_accuracy(model, x, y, epsilon=eps, attacks=("cw",))
    with pytest.raises(ValueError, match="steps must be"):
        pgd_examples(model, x, y, epsilon=eps, steps=0)
