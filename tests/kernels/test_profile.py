"""tfcompress.runtime.profile: per-op-type and per-node times in each runtime."""

import pytest

from kernel_models import kernels_or_skip


def _model():
    from tfcompress._kernels.testing import fusion_model

    return fusion_model("residual", 1)[0]


def test_profile_tfcompress_lists_every_node_and_the_fused_kernels():
    kernels_or_skip()
    from tfcompress.runtime import inspect_flatbuffer
    from tfcompress.runtime.profile import profile

    fb = _model()
    ops = inspect_flatbuffer(fb).ops
    p = profile(fb, runtime="tfcompress", runs=3, warmup=1, clock="cpu")
    assert p.runtime == "tfcompress" and p.threads == 1 and p.clock == "cpu"
    assert [n.op for n in p.nodes] == ops                     # graph order, every node
    assert all(n.ms > 0 and n.error is None for n in p.nodes)
    assert set(p.by_op) == set(ops)
    assert sum(r["count"] for r in p.by_op.values()) == len(ops)
    assert abs(sum(r["share"] for r in p.by_op.values()) - 1.0) < 1e-9
    assert p.total_ms > 0 and p.sum_nodes_ms > 0
    names = [k["name"] for k in p.in_graph]                   # as the kernels really ran
    assert any(n.startswith("LceBconv2d+ADD+LceQuantize") for n in names), names
    assert all(k["calls"] == 3 for k in p.in_graph)
    text = p.table(top=3)
    assert "LceBconv2d" in text and "inside the full model" in text


def test_profile_lce_runtime_and_refusals():
    kernels_or_skip()
    from tfcompress.errors import InterpreterError
    from tfcompress.runtime.profile import profile

    fb = _model()
    p = profile(fb, runtime="lce", runs=2, warmup=0, nodes=False)
    assert p.runtime == "lce" and p.nodes == [] and p.in_graph == [] and p.total_ms > 0
    with pytest.raises(InterpreterError, match="custom op"):
        profile(fb, runtime="litert", runs=2)
    with pytest.raises(ValueError, match="runs must be"):
        profile(fb, runtime="lce", runs=0)
    with pytest.raises(ValueError, match="clock"):
        profile(fb, runtime="lce", clock="gpu")
