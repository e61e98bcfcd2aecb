"""The strategy-state helper (issue 16): every strategy's JSON state comes from the fields its
classes declare, round-trips, and names what is wrong in a bad state."""

import json

import numpy as np
import pytest
from nas_helpers import cifar8, tiny_space

from tfcompress.nas import BNAS, DARTS, ABanditNAS, Evolution, StrategyState


def test_states_are_the_declared_fields_of_each_class():
    (x, _), (xv, yv) = cifar8()
    space = tiny_space()
    expected = {
        DARTS: {"epochs_done", "arch_steps"},
        BNAS: {"epochs_done", "arch_steps", "m", "n", "since_prune", "removed", "rng"},
        ABanditNAS: {"epochs_done", "m", "n", "choice", "since_prune", "history", "rng"},
        Evolution: {"epochs_done", "loss", "n", "choice", "history", "rng", "population",
                    "fitness"},
    }
    for cls, fields in expected.items():
        search = cls(space, x) if cls is Evolution else cls(space, (xv, yv))
        state = json.loads(json.dumps(search.get_state()))
        assert fields | {"strategy", "space"} <= set(state), cls.name
        again = cls(space, x) if cls is Evolution else cls(space, (xv, yv))
        again.set_state(state)
        assert json.loads(json.dumps(again.get_state())) == state


def test_a_bad_state_is_refused_with_its_cause():
    (_, _), (xv, yv) = cifar8()
    space = tiny_space()
    search = ABanditNAS(space, (xv, yv))
    search.m["reduce"][0, 1] = 0.25
    search.history = [(0, 0.5, 3)]
    state = json.loads(json.dumps(search.get_state()))
    fresh = ABanditNAS(space, (xv, yv))
    fresh.set_state(state)
    assert fresh.m["reduce"][0, 1] == 0.25 and fresh.history == [(0, 0.5, 3)]
    assert fresh.n["normal"].dtype == np.int64
    broken = {k: v for k, v in state.items() if k != "m"}
    with pytest.raises(ValueError, match="lacks the field\\(s\\) m"):
        ABanditNAS(space, (xv, yv)).set_state(broken)
    wrong = dict(state, n={"normal": [[0]], "reduce": [[0]]})
    with pytest.raises(ValueError, match=r"n\['normal'\] has shape \(1, 1\)"):
        ABanditNAS(space, (xv, yv)).set_state(wrong)
    spec = StrategyState(ints=("count",))

    class Holder:
        count = 7

    assert spec.dump(Holder()) == {"count": 7}
