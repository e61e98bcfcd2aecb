"""Pruning schedules against the Zhu & Gupta formula, TF-MOT's schedules and config round trips."""

import json

import numpy as np
import pytest

import tfcompress  # noqa: F401
from tfcompress.pruning import schedules
from tfcompress.pruning.schedules import ConstantSparsity, PolynomialDecay

EXAMPLES = {
    ConstantSparsity: ConstantSparsity(0.6, begin_step=5, end_step=40, frequency=7),
    PolynomialDecay: PolynomialDecay(0.1, 0.9, begin_step=20, end_step=120, power=3,
                                     frequency=10),
}


def zhu_gupta(t, s_i, s_f, t0, n, dt):
    """Eq. (1) of arXiv:1710.01878, written out independently, for t in [t0, t0 + n dt]."""
    return s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt)) ** 3


def test_polynomial_decay_matches_the_paper_formula():
    s_i, s_f, t0, n, dt = 0.05, 0.875, 30, 12, 10
    sched = PolynomialDecay(s_i, s_f, begin_step=t0, end_step=t0 + n * dt, frequency=dt)
    for t in range(0, t0 + n * dt + 50):
        prune, s = sched(t)
        if t < t0:
            assert s == pytest.approx(s_i) and not prune
        elif t <= t0 + n * dt:
            assert s == pytest.approx(zhu_gupta(t, s_i, s_f, t0, n, dt), abs=1e-12)
            assert prune == ((t - t0) % dt == 0)
        else:
            assert s == pytest.approx(s_f) and not prune
    # Sparsity never decreases and ends exactly at s_f.
    values = [sched(t)[1] for t in range(400)]
    assert np.all(np.diff(values) >= -1e-15) and values[-1] == pytest.approx(s_f)


def test_polynomial_decay_always_prunes_at_end_step():
    sched = PolynomialDecay(0.0, 0.5, begin_step=0, end_step=25, frequency=10)
    assert [t for t in range(40) if sched(t)[0]] == [0, 10, 20, 25]
    assert sched(25)[1] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="multiple of frequency"):
        sched.to_tfmot()


@pytest.mark.parametrize("cls", list(EXAMPLES))
def test_schedules_agree_with_tfmot(cls):
    ours = EXAMPLES[cls]
    if cls is ConstantSparsity:
        ours = ConstantSparsity(0.6, begin_step=5, end_step=40, frequency=7)
    theirs = ours.to_tfmot()
    for t in range(0, 160):
        p_ref, s_ref = theirs(np.int64(t))
        p, s = ours(t)
        assert p == bool(p_ref), t
        assert s == pytest.approx(float(s_ref), abs=1e-6), t


@pytest.mark.parametrize("cls", list(EXAMPLES))
def test_config_round_trip_is_strict(cls):
    sched = EXAMPLES[cls]
    cfg = sched.get_config()
    again = cls.from_config(json.loads(json.dumps(cfg)))
    assert json.dumps(again.get_config(), sort_keys=True) == json.dumps(cfg, sort_keys=True)
    assert again == sched
    via_get = schedules.get(schedules.serialize(sched))
    assert via_get == sched
    assert schedules.get({"class_name": f"tfcompress>{cls.__name__}", **cfg}) == sched
    for t in range(150):
        assert again(t) == sched(t)


def test_default_frequency_is_short():
    assert ConstantSparsity(0.5).frequency == 10
    assert PolynomialDecay(0.0, 0.5, 0, 100).frequency == 10


def test_get_accepts_none_names_dicts_and_callables():
    assert schedules.get(None, sparsity=0.3) == ConstantSparsity(0.3)
    assert schedules.get("constant", sparsity=0.3) == ConstantSparsity(0.3)
    dec = schedules.get({"class_name": "PolynomialDecay",
                         "config": {"initial_sparsity": 0.0, "begin_step": 0, "end_step": 50}},
                        sparsity=0.7)
    assert dec.final_sparsity == 0.7 and dec.end_step == 50

    def fn(step):
        return step % 2 == 0, 0.25

    assert schedules.get(fn) is fn
    with pytest.raises(ValueError, match="valid names"):
        schedules.get("cubic")
    with pytest.raises(ValueError, match="needs target_sparsity"):
        schedules.get("constant")
    with pytest.raises(ValueError, match="Cannot interpret"):
        schedules.get(3)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, "0.5", True])
def test_invalid_sparsity_is_refused(bad):
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        ConstantSparsity(bad)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        PolynomialDecay(0.0, bad, 0, 10)


def test_invalid_steps_are_refused():
    with pytest.raises(ValueError, match="end_step"):
        PolynomialDecay(0.0, 0.5, 10, 5)
    with pytest.raises(ValueError, match="end_step must be given"):
        PolynomialDecay(0.0, 0.5, 0, -1)
    with pytest.raises(ValueError, match="frequency"):
        ConstantSparsity(0.5, frequency=0)
