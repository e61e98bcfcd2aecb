"""tools/bench_claims.py: its statistics against scipy, the verdicts, the result cache (resume,
invalidation when a method's version or the budget changes), the table from partial results,
and a --quick smoke run that is resumed without retraining."""

import importlib.util
import json
import argparse
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bc():
    spec = importlib.util.spec_from_file_location("bench_claims", ROOT / "tools" / "bench_claims.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compare_matches_welch_from_scipy(bc):
    rng = np.random.default_rng(0)
    m, b = rng.normal(0.9, 0.01, 3), rng.normal(0.88, 0.02, 4)
    r = bc.compare(m, b)
    t = stats.ttest_ind(m, b, equal_var=False).statistic
    assert r["diff"] == pytest.approx(m.mean() - b.mean())
    assert r["se"] == pytest.approx(r["diff"] / t)
    assert r["method_std"] == pytest.approx(np.std(m, ddof=1))
    assert r["significant"] == (abs(t) > 2)


@pytest.mark.parametrize("method,baseline,relation,verdict", [
    ([0.9, 0.91, 0.92], [0.8, 0.81, 0.82], ">", "holds"),
    ([0.81, 0.83, 0.80], [0.8, 0.81, 0.82], ">", "not shown"),
    ([0.7, 0.71, 0.72], [0.8, 0.81, 0.82], ">", "does not hold"),
    ([0.79, 0.805, 0.80], [0.8, 0.81, 0.82], ">", "not shown"),    # below, within noise
    ([0.79, 0.81, 0.80], [0.8, 0.81, 0.82], ">=", "holds"),
    ([0.7, 0.71, 0.72], [0.8, 0.81, 0.82], ">=", "does not hold"),
    ([0.795, 0.80, 0.805], [0.80, 0.801, 0.802], "within", "holds"),
    ([0.785, 0.80, 0.815], [0.80, 0.801, 0.802], "within", "not shown"),
    ([0.70, 0.71, 0.72], [0.80, 0.801, 0.802], "within", "does not hold"),
    ([0.9], [0.8], ">", "too few seeds"),
])
def test_verdicts(bc, method, baseline, relation, verdict):
    assert bc.compare(method, baseline, relation, margin=0.01)["verdict"] == verdict


def test_curve_gain(bc):
    recs = [{"curve": [0.5, 0.8, 0.9, 0.95, 0.96, 0.97]}, {"curve": [0.5, 0.8, 0.9, 0.93, 0.96, 0.99]}]
    gain, k = bc.curve_gain(recs, "curve")
    assert k == 2 and gain == pytest.approx(np.mean([0.97 - 0.95, 0.99 - 0.93]))
    loss, _ = bc.curve_gain([{"loss_curve": [4.0, 2.0, 1.0, 0.9]}], "loss_curve")
    assert loss == pytest.approx((1.0 - 0.9) / 1.0)         # k = 4 // 3 = 1 epoch


def _ctx(bc, tmp_path):
    return bc.Context(argparse.Namespace(quick=True, out_dir=str(tmp_path)))


def test_cache_resumes_and_invalidates(bc, tmp_path, monkeypatch):
    calls = []

    def fake(ctx, kind, seed, mult):
        calls.append((kind, seed, mult))
        return {"metric": 0.5 + 0.1 * seed + (0.2 if kind == "xnor" else 0.0), "curve": [0.1, 0.2]}

    monkeypatch.setitem(bc.RUNNERS, "mnist", fake)
    ctx = _ctx(bc, tmp_path)
    assert ctx.ensure("mnist/xnor", 1)["metric"] == pytest.approx(0.8)
    assert ctx.ensure("mnist/xnor", 1)["metric"] == pytest.approx(0.8)
    assert calls == [("xnor", 1, 1)]                       # second call: from the cache
    assert ctx.path("mnist/xnor", 1).exists()
    monkeypatch.setitem(bc.VERSIONS, "mnist/xnor", 99)     # the method changed: redo it
    ctx.ensure("mnist/xnor", 1)
    monkeypatch.setitem(ctx.budget, "mnist", {**ctx.budget["mnist"], "epochs": 7})
    ctx.ensure("mnist/xnor", 1)                            # the budget changed: redo it
    assert len(calls) == 3
    ctx.ensure("mnist/xnor", 0, 2)                         # the 2x budget check is its own entry
    assert calls[-1] == ("xnor", 0, 2)


def test_run_budgets_change_only_their_runs_and_claims_share_one(bc, tmp_path, monkeypatch):
    ctx = _ctx(bc, tmp_path)
    before = {r: ctx.key(r, 0)[1] for r in ("mnist/float", "mnist/xnor")}
    monkeypatch.setitem(ctx.run_budgets, "mnist/xnor", {"epochs": 9})
    assert ctx.budget_of("mnist/xnor") == {**ctx.budget["mnist"], "epochs": 9}
    assert ctx.budget_of("mnist/float") == ctx.budget["mnist"]
    assert ctx.key("mnist/float", 0)[1] == before["mnist/float"]     # its cache stays valid
    assert ctx.key("mnist/xnor", 0)[1] != before["mnist/xnor"]
    # The full budgets: both arms of every claim train with the same budget.
    full = bc.Context(argparse.Namespace(quick=False, out_dir=str(tmp_path)))
    for claim in bc.CLAIMS:
        assert full.budget_of(claim.method) == full.budget_of(claim.baseline), claim.name


def test_nas_search_is_cached_apart_from_the_training_budget(bc, tmp_path, monkeypatch):
    """A NAS run's search is its own cache entry: a new training budget for the derived network
    reuses the searched genotype; a new search budget searches again."""
    import bench_nas as BN
    from tfcompress.nas import Genotype

    calls = []
    geno = Genotype(normal=[("max_pool_3x3", 0), ("skip_connect", 1)] * 2,
                    normal_concat=[2, 3], reduce=[("dil_conv_5x5", 1), ("avg_pool_3x3", 0)] * 2,
                    reduce_concat=[2, 3], kind="binary")

    def fake_search(kind, train, val, args):
        calls.append((kind, args.seed, args.search_epochs, len(train[0]), len(val[0])))
        return "space", geno, 12.5, 0.3, {}

    monkeypatch.setattr(BN, "search", fake_search)
    ctx = _ctx(bc, tmp_path)
    train = (np.zeros((10, 16, 16, 3), "float32"), np.zeros(10, "int64"))
    args = bc._nas_args(ctx, 1)
    _, g, secs, acc = bc._nas_search(ctx, "bnas", 1, train, args)
    assert calls == [("bnas", 1, args.search_epochs, 5, 5)] and (secs, acc) == (12.5, 0.3)
    monkeypatch.setitem(ctx.budget, "nas", {**ctx.budget["nas"], "train_epochs": 9})
    _, again, secs, acc = bc._nas_search(ctx, "bnas", 1, train, args)
    assert len(calls) == 1 and again.to_dict() == geno.to_dict() and (secs, acc) == (12.5, 0.3)
    bc._nas_search(ctx, "darts", 1, train, args)           # another method: its own search
    monkeypatch.setitem(ctx.budget, "nas", {**ctx.budget["nas"], "search_epochs": 7})
    bc._nas_search(ctx, "bnas", 1, train, args)            # the search budget changed: redo it
    assert [c[0] for c in calls] == ["bnas", "darts", "bnas"]


def test_table_from_partial_results(bc, tmp_path, monkeypatch):
    values = {("xnor", 0): 0.90, ("xnor", 1): 0.92, ("xnor", 2): 0.91,
              ("bnn", 0): 0.85, ("bnn", 1): 0.86}
    monkeypatch.setitem(bc.RUNNERS, "mnist", lambda ctx, kind, seed, mult: {
        "metric": values[(kind, seed)], "curve": [0.5, 0.6, 0.7, 0.71]})
    ctx = _ctx(bc, tmp_path)
    for (kind, seed) in values:
        ctx.ensure(f"mnist/{kind}", seed)
    claims = [bc.CLAIM_BY_NAME["xnor_gt_bnn"], bc.CLAIM_BY_NAME["bireal_gt_xnor"]]
    path = bc.write_table(ctx, claims, [0, 1, 2])
    md = path.read_text()
    data = json.loads(path.with_suffix(".json").read_text())
    row, missing = data["claims"]
    assert row["missing"] == ["mnist/bnn s2"] and row["verdict"].startswith("partial: ")
    assert row["diff"] == pytest.approx(0.91 - 0.855)
    assert missing["verdict"] == "missing"
    line = next(x for x in md.splitlines() if x.startswith("| XNOR-Net > BNN |"))
    assert f"{91.0:.2f} ± {100 * np.std([0.9, 0.92, 0.91], ddof=1):.2f}" in line
    assert "2/3" not in line and "| 3/2 |" in line
    assert "+1.00 (1 ep)" in line              # baseline curve gain: 0.71 - 0.70 = 1 pt, 1 epoch
    secs = {k: np.mean([json.loads(ctx.path(f"mnist/{k}", s).read_text())["wall_seconds"]
                        for s in (0, 1, 2) if (k, s) in values]) for k in ("xnor", "bnn")}
    assert row["extras"]["seconds"] == {f"mnist/{k}": pytest.approx(v) for k, v in secs.items()}
    assert f"| {secs['xnor']:.0f} / {secs['bnn']:.0f} |" in line
    assert "wall s per run (method / baseline)" in md
    nas = {"method_run": "nas/bnas", "baseline_run": "nas/handmade",
           "extras": {"seconds": {"nas/bnas": 310.4, "nas/handmade": 162.0},
                      "search_seconds": {"nas/bnas": 205.9}}}
    assert bc._wall_text(nas) == "310 / 162; search 206 / -"
    assert bc._wall_text({**nas, "extras": {}}) is None
    assert "Claims that hold: 0 of 2; missing: 1." in md


def test_records_keep_their_cpu_and_the_table_counts_them(bc, tmp_path, monkeypatch):
    """The cache outlives machines: each record names the CPU it ran on, records from before
    the field count as 'not recorded', and the table lists both."""
    from tfcompress.report.tables import environment

    monkeypatch.setitem(bc.RUNNERS, "mnist", lambda ctx, kind, seed, mult: {
        "metric": 0.9, "curve": [0.5, 0.6]})
    ctx = _ctx(bc, tmp_path)
    rec = ctx.ensure("mnist/bnn", 0)
    assert rec["cpu"] == environment()["cpu"]
    old = ctx.ensure("mnist/xnor", 0)
    del old["cpu"]                                    # a record written before the field
    bc.write_record(ctx.path("mnist/xnor", 0), old)
    assert bc.run_cpus([rec, old]) == {environment()["cpu"]: 1, "not recorded": 1}
    path = bc.write_table(ctx, [bc.CLAIM_BY_NAME["xnor_gt_bnn"]], [0])
    data = json.loads(path.with_suffix(".json").read_text())
    assert data["meta"]["run_cpus"] == {environment()["cpu"]: 1, "not recorded": 1}
    assert f"{environment()['cpu']}: 1; not recorded: 1" in path.read_text()


@pytest.mark.slow
def test_quick_run_writes_table_and_resumes(tmp_path, run_script):
    out = run_script("tools/bench_claims.py", "--quick", "--out-dir", str(tmp_path), timeout=600)
    assert out.count("[claims] run ") == 4                 # xnor and bnn, seeds 0 and 1
    data = json.loads((tmp_path / "claims_quick.json").read_text())
    (row,) = data["claims"]
    assert row["name"] == "xnor_gt_bnn" and len(row["method_values"]) == 2
    assert all(0.0 <= v <= 1.0 for v in row["method_values"] + row["baseline_values"])
    cache = sorted(p.name for p in (tmp_path / "claims_cache" / "quick").glob("*.json"))
    assert cache == ["mnist__bnn__s0.json", "mnist__bnn__s1.json", "mnist__xnor__s0.json",
                     "mnist__xnor__s1.json"]
    again = run_script("tools/bench_claims.py", "--quick", "--out-dir", str(tmp_path), timeout=600)
    assert "[claims] run " not in again                    # resumed from the cache
    assert "| XNOR-Net > BNN |" in (tmp_path / "claims_quick.md").read_text()


def test_paired_standard_error_matches_scipy(bc):
    rng = np.random.default_rng(1)
    base = rng.normal(0.5, 0.05, 4)                      # a shared starting model per seed
    m, b = base + rng.normal(0.01, 0.002, 4), base + rng.normal(0.0, 0.002, 4)
    r = bc.compare(m, b, ">=", paired=True)
    t = stats.ttest_rel(m, b).statistic
    assert r["se_kind"] == "paired" and r["se"] == pytest.approx(r["diff"] / t)
    assert r["se"] < bc.compare(m, b, ">=")["se"] / 5    # Welch sees the seeds' spread


def test_probes_change_only_their_option(tmp_path):
    """tools/claims_probes.py: each probe builds the layer of the claims benchmark with one
    option changed (what the 'why' column cites), nothing else."""
    import sys

    sys.path.insert(0, str(ROOT / "tools"))
    import claims_probes as CP

    from tfcompress import keras

    expected = {"pcnn-j1": {"projections": 1}, "pcnn-j2": {"projections": 2},
                "pcnn-j2-signed": {"projections": 2}, "xnor-no-k": {"input_scaling": False},
                "xnor-one-pad": {"input_scaling": True, "pad_values": 1.0}}
    for name, (kind, dataset, factory, budget) in CP.PROBES.items():
        if factory is None:                # a data probe: the benchmark's layer, more images
            assert name.endswith("-all-data") and dataset == "cifar"
            assert budget == {"train": 45000, "epochs": 20}
            assert budget["train"] + CP.BC.BUDGETS["full"]["cifar"]["val"] == 50000
        ctx, bench = CP.probe_context(name), CP.BC.Context(argparse.Namespace(
            quick=False, out_dir=str(tmp_path)))
        run = f"{dataset}/{kind}"
        assert ctx.budget_of(run) == {**bench.budget_of(run), **budget}, name
        if factory is None:
            continue
        assert budget == {}, name
        layer, act = factory(16)
        ref, ref_act = CP.BC.quantized_conv(kind, 16)
        def norm(c):     # auto-generated names (ste_sign, ste_sign_1, ...) are not options
            if isinstance(c, dict):
                return {k: norm(v) for k, v in c.items() if k != "name"}
            return norm(c.get_config()) if hasattr(c, "get_config") else c

        cfg, base = norm(layer.get_config()), norm(ref.get_config())
        changed = {k for k in cfg if k != "name" and cfg[k] != base.get(k)}
        assert {k: cfg[k] for k in expected[name]} == expected[name], name
        assert changed <= set(expected[name]) | {"projection_initializer"}, (name, changed)
        assert type(layer) is type(ref) and act is None and ref_act is None
    signed = CP.PROBES["pcnn-j2-signed"][2](16)[0]
    assert isinstance(signed.projection_initializer, keras.initializers.RandomUniform)
