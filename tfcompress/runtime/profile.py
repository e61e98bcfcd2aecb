"""Where the time goes: per-op-type and per-node latency of a ``.tflite`` file in a runtime.

:func:`profile` measures

1. the whole model (median of ``runs`` invokes after ``warmup``), as
   :meth:`tfcompress.runtime.Interpreter.latency` does;
2. every node on its own: the node is cut out into a one-operator model (its constant inputs
   kept, every other input made a model input filled with random data of the right type) and
   timed in the same runtime, threads and kernel options. The sum of the node times next to
   the whole-model time shows what isolation misses (cache effects, the interpreter's
   per-node overhead, fusion across nodes);
3. for ``runtime="tfcompress"``, the time each of tfcompress's kernels spends *inside* the
   full model (the kernel library's own timers), so fused groups of nodes (a binary conv with
   the ops folded into it) appear as they really run.

Reading: ``by_op`` sums node times per op type (the table a user reads first), ``nodes``
lists them in graph order; ``share`` is a node's fraction of the sum of node times.

Example::

    from tfcompress.runtime import profile
    p = profile("quicknet.tflite", runtime="tfcompress", runs=20)
    print(p.table())
"""

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from tfcompress.errors import InterpreterError
from tfcompress.runtime.flatbuffer import inspect_flatbuffer
from tfcompress.runtime.interpreter import Interpreter, _read_model

__all__ = ["ModelProfile", "NodeTime", "profile"]

_NP_TYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 6: np.bool_,
             7: np.int16, 9: np.int8}


@dataclass
class NodeTime:
    """One node of the graph and its isolated latency."""

    index: int
    op: str
    inputs: str          # shapes and types of the non-constant inputs, e.g. "1x56x56x64 f32"
    output: str
    ms: float            # median isolated latency (NaN if it could not run alone)
    share: float = 0.0   # fraction of the sum of node times
    error: str = None


@dataclass
class ModelProfile:
    """Result of :func:`profile` (all times in milliseconds, medians)."""

    runtime: str
    kernel: str
    threads: int
    total_ms: float                                 # whole model
    sum_nodes_ms: float                             # sum of isolated node times
    nodes: list = field(default_factory=list)       # NodeTime, graph order
    by_op: dict = field(default_factory=dict)       # op -> {"count", "ms", "share"}
    in_graph: list = field(default_factory=list)    # tfcompress kernels: dicts name/ms/calls
    runs: int = 0
    clock: str = "wall"

    def to_dict(self):
        return asdict(self)

    def table(self, top=15):
        """Plain-text report: per op type, then the ``top`` slowest nodes."""
        lines = [f"runtime {self.runtime} ({self.kernel}), {self.threads} thread(s), {self.clock} "
                 f"time: whole "
                 f"model {self.total_ms:.3f} ms, sum of isolated nodes "
                 f"{self.sum_nodes_ms:.3f} ms", "", f"{'op type':<24}{'count':>6}{'ms':>10}"
                 f"{'share':>8}"]
        for op, row in sorted(self.by_op.items(), key=lambda kv: -kv[1]["ms"]):
            lines.append(f"{op:<24}{row['count']:>6}{row['ms']:>10.3f}{100 * row['share']:>7.1f}%")
        lines += ["", f"slowest {min(top, len(self.nodes))} nodes:",
                  f"{'node':>5}  {'op':<20}{'ms':>9}{'share':>8}  input -> output"]
        for n in sorted(self.nodes, key=lambda n: -(n.ms if n.ms == n.ms else -1))[:top]:
            lines.append(f"{n.index:>5}  {n.op:<20}{n.ms:>9.3f}{100 * n.share:>7.1f}%  "
                         f"{n.inputs} -> {n.output}" + (f"  [{n.error}]" if n.error else ""))
        if self.in_graph:
            lines += ["", "inside the full model (tfcompress kernels' own timers):"]
            for k in self.in_graph:
                lines.append(f"  {k['name']:<48}{k['ms']:>9.3f} ms  x{k['calls']}")
        return "\n".join(lines)


def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


def _shape_str(t):
    shape = "x".join(str(int(d)) for d in (t.shape if t.shape is not None else [])) or "scalar"
    kind = {0: "f32", 1: "f16", 2: "i32", 3: "u8", 4: "i64", 6: "bool", 7: "i16", 9: "i8"}
    return f"{shape} {kind.get(t.type, t.type)}"


def _is_constant(model, t):
    b = model.buffers[t.buffer] if 0 < t.buffer < len(model.buffers) else None
    return b is not None and b.data is not None and len(b.data) > 0


def _single_op(model, op_index):
    """The one-operator model of node ``op_index`` and its non-constant input tensors."""
    import flatbuffers

    s = _schema()
    g = model.subgraphs[0]
    op = g.operators[op_index]
    new = s.ModelT()
    new.version = model.version
    new.operatorCodes = model.operatorCodes
    new.buffers = [s.BufferT()]
    sub = s.SubGraphT()
    sub.tensors, sub.inputs = [], []
    remap = {}

    def add(i):
        if i < 0:
            return -1
        if i in remap:
            return remap[i]
        t = g.tensors[i]
        c = s.TensorT()
        c.shape, c.type, c.name, c.quantization = t.shape, t.type, t.name, t.quantization
        c.shapeSignature = t.shapeSignature
        c.buffer = 0
        if _is_constant(model, t):
            new.buffers.append(model.buffers[t.buffer])
            c.buffer = len(new.buffers) - 1
        else:
            sub.inputs.append(len(sub.tensors))
        sub.tensors.append(c)
        remap[i] = len(sub.tensors) - 1
        return remap[i]

    new_op = s.OperatorT()
    for attr, value in vars(op).items():
        setattr(new_op, attr, value)
    new_op.inputs = [add(int(i)) for i in (op.inputs if op.inputs is not None else [])]
    ins = list(sub.inputs)
    outs = []
    for i in (op.outputs if op.outputs is not None else []):
        t = g.tensors[int(i)]
        c = s.TensorT()
        c.shape, c.type, c.name, c.quantization = t.shape, t.type, t.name, t.quantization
        c.buffer = 0
        sub.tensors.append(c)
        outs.append(len(sub.tensors) - 1)
    new_op.outputs = outs
    sub.inputs, sub.outputs, sub.operators = ins, outs, [new_op]
    new.subgraphs = [sub]
    b = flatbuffers.Builder(1024)
    b.Finish(new.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output()), [sub.tensors[i] for i in ins]


def _random_input(t, rng):
    shape = tuple(int(d) for d in (t.shape if t.shape is not None else []))
    dtype = _NP_TYPES.get(t.type, np.float32)
    if dtype in (np.float32, np.float16):
        return rng.normal(0.0, 1.0, shape).astype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(bool)
    if dtype == np.int32:  # bitpacked activations: random bits
        return rng.integers(-2 ** 31, 2 ** 31, shape, dtype=np.int64).astype(np.int32)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max + 1, shape, dtype=np.int64).astype(dtype)


class _Raw:
    """A runtime on raw arrays (no quantization), for one-op models and whole models."""

    def __init__(self, fb, runtime, threads, lce_kernel, isa, kernel_profile=False):
        self.runtime = runtime
        self.delegate = None
        if runtime == "lce":
            from larq_compute_engine.tflite.python.interpreter import Interpreter as LCE

            self.it = LCE(fb, num_threads=threads,
                          use_reference_bconv=lce_kernel == "reference",
                          use_indirect_bgemm=lce_kernel == "indirect_bgemm",
                          use_xnnpack=lce_kernel == "xnnpack")
            return
        from ai_edge_litert.interpreter import Interpreter as LiteRT

        delegates = []
        if runtime == "tfcompress":
            from tfcompress import _kernels

            self.delegate = _kernels.delegate(isa=isa, profile=kernel_profile)
            delegates = [self.delegate]
        self.it = LiteRT(model_content=fb, num_threads=threads, experimental_delegates=delegates)
        self.it.allocate_tensors()
        self.inputs = [d["index"] for d in self.it.get_input_details()]

    def run(self, arrays):
        if self.runtime == "lce":
            return self.it.interpreter.predict(arrays)
        for i, a in zip(self.inputs, arrays):
            self.it.set_tensor(i, a)
        self.it.invoke()
        return None


def _time(runner, arrays, runs, warmup, clock="wall"):
    tick = time.perf_counter if clock == "wall" else time.thread_time
    for _ in range(warmup):
        runner.run(arrays)
    times = []
    for _ in range(runs):
        t0 = tick()
        runner.run(arrays)
        times.append((tick() - t0) * 1e3)
    return float(np.median(times))


def profile(model, *, runtime="auto", runs=50, warmup=5, num_threads=1,
            lce_kernel="indirect_bgemm", isa=None, nodes=True, seed=0, clock="wall"):
    """Time ``model`` as a whole and node by node in one runtime.

    Args:
        model: flatbuffer bytes or a path to a ``.tflite`` file.
        runtime: ``"auto"``, ``"tfcompress"``, ``"lce"`` or ``"litert"`` (``"auto"`` as
            :class:`tfcompress.runtime.Interpreter` resolves it).
        runs: timed invokes per measurement (whole model and each node); ``warmup`` before.
        num_threads: interpreter threads.
        lce_kernel: LCE's kernel for ``runtime="lce"`` (see ``LCE_KERNELS``).
        isa: tfcompress kernel level for ``runtime="tfcompress"``.
        nodes: False skips the per-node measurement (whole model and in-graph kernels only).
        seed: random inputs.
        clock: ``"wall"`` (elapsed time) or ``"cpu"`` (CPU time of the invoking thread: with
            ``num_threads=1`` all the work runs there, so this stays accurate on a machine
            that other processes keep busy; with more threads it misses the workers' share).

    Returns:
        A :class:`ModelProfile`; ``print(p.table())`` for the report.

    Raises:
        InterpreterError: the runtime cannot run the file.
        ValueError: bad ``runs``/``warmup``/``runtime``.
    """
    if runs < 1 or warmup < 0:
        raise ValueError(f"runs must be >= 1 and warmup >= 0, got {runs} and {warmup}.")
    if clock not in ("wall", "cpu"):
        raise ValueError(f"clock must be 'wall' or 'cpu', got {clock!r}.")
    fb = _read_model(model)
    info = inspect_flatbuffer(fb)
    front = Interpreter(fb, runtime=runtime, num_threads=num_threads, lce_kernel=lce_kernel,
                        isa=isa)  # validates the runtime choice and resolves "auto"
    runtime = front.runtime
    kernel = front.kernel
    del front
    rng = np.random.default_rng(seed)
    s = _schema()
    tree = s.ModelT.InitFromPackedBuf(fb, 0)
    g = tree.subgraphs[0]
    inputs = [_random_input(g.tensors[int(i)], rng) for i in g.inputs]
    whole = _Raw(fb, runtime, num_threads, lce_kernel, isa, kernel_profile=True)
    if whole.delegate is not None:
        from tfcompress import _kernels

        _time(whole, inputs, 1, warmup)
        _kernels.profile_reset(whole.delegate)
    total = _time(whole, inputs, runs, 0 if whole.delegate is not None else warmup, clock)
    in_graph = []
    if whole.delegate is not None:
        from tfcompress import _kernels

        key = "seconds" if clock == "wall" else "cpu_seconds"
        for k in _kernels.profile_report(whole.delegate):
            in_graph.append(dict(name=k["name"], calls=k["calls"],
                                 ms=1e3 * k[key] / max(1, k["calls"])))
    del whole
    node_times = []
    if nodes:
        for i, op in enumerate(g.operators):
            name = info.ops[i]
            dyn = [g.tensors[int(t)] for t in (op.inputs if op.inputs is not None else [])
                   if t >= 0 and not _is_constant(tree, g.tensors[int(t)])]
            outs = [g.tensors[int(t)] for t in (op.outputs if op.outputs is not None else [])]
            row = NodeTime(index=i, op=name, inputs=", ".join(_shape_str(t) for t in dyn),
                           output=", ".join(_shape_str(t) for t in outs), ms=float("nan"))
            try:
                one, one_inputs = _single_op(tree, i)
                runner = _Raw(one, runtime, num_threads, lce_kernel, isa)
                arrays = [_random_input(t, rng) for t in one_inputs]
                row.ms = _time(runner, arrays, runs, warmup, clock)
            except Exception as err:  # recorded per node: one odd node must not stop the rest
                row.error = f"{type(err).__name__}: {str(err).splitlines()[0][:120]}"
            node_times.append(row)
    total_nodes = float(np.nansum([n.ms for n in node_times])) if node_times else 0.0
    by_op = {}
    for n in node_times:
        row = by_op.setdefault(n.op, {"count": 0, "ms": 0.0, "share": 0.0})
        row["count"] += 1
        if n.ms == n.ms:
            row["ms"] += n.ms
    for n in node_times:
        n.share = n.ms / total_nodes if total_nodes and n.ms == n.ms else 0.0
    for row in by_op.values():
        row["share"] = row["ms"] / total_nodes if total_nodes else 0.0
    return ModelProfile(runtime=runtime, kernel=str(kernel), threads=num_threads,
                        total_ms=total, sum_nodes_ms=total_nodes, nodes=node_times,
                        by_op=by_op, in_graph=in_graph, runs=runs, clock=clock)
