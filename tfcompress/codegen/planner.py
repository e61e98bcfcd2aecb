"""Offline memory planning: tensor lifetimes -> offsets in one static arena.

1. **Aliases and in-place ops.** A RESHAPE output is its input's memory; an element-wise step
   (activation, requantization, bit-packing, add/mul with a constant) writes over its input
   when that input dies at the step.
2. **Row streaming.** A large activation produced by a row-wise step (convolution, pooling,
   element-wise, bit-packing) and read by exactly one row-wise consumer whose windows do not
   overlap (element-wise, or pooling/convolution with stride >= window) need not exist whole:
   the chain runs one output row of its last step at a time and keeps only the rows in flight
   of each intermediate tensor (its "band"). An edge is streamed when that lowers the arena's
   peak (``stream="auto"``), so a float first layer of a binarized network costs a few rows
   instead of its whole output.
3. **Offsets.** Buffers (whole tensors, bands, kernel scratch) get lifetimes ``[first write,
   last read]`` in step order and are placed greedily, largest first, at the lowest offset
   that overlaps no placed buffer with an intersecting lifetime (the greedy planner of
   TFLite Micro).
"""

from dataclasses import dataclass, field

from tfcompress.codegen.graph import CodegenError

ALIGN = 8


def _align(n):
    return (int(n) + ALIGN - 1) // ALIGN * ALIGN


@dataclass
class Buffer:
    """An arena region: ``size`` bytes alive from step ``start`` to step ``end``."""

    key: object
    size: int
    start: int
    end: int
    offset: int = -1
    tensors: list = field(default_factory=list)


@dataclass
class Chain:
    """Steps fused into one row loop; ``steps[i]`` writes ``band_tensors[i]`` (the last one
    writes its whole output)."""

    steps: list
    band_rows: list = field(default_factory=list)  # rows held per intermediate tensor


@dataclass
class Plan:
    """The schedule (steps and chains in execution order) and the arena layout."""

    schedule: list
    buffers: list
    tensor_buffer: dict     # tensor index -> Buffer (whole tensors and bands)
    band: dict              # tensor index -> rows held, for streamed tensors
    scratch: dict           # schedule position -> Buffer
    arena_bytes: int
    user_input: int = None  # tensor read straight from the caller's input pointer

    def describe(self):
        lines = []
        for i, item in enumerate(self.schedule):
            steps = item.steps if isinstance(item, Chain) else [item]
            lines.append(f"{i}: " + " -> ".join(s.label for s in steps))
        return "\n".join(lines)


def _row_capable_producer(step):
    return (step.rows is not None or step.elementwise) and len(step.outs) == 1 and not step.alias


def _row_capable_consumer(step):
    if step.alias or not step.ins:
        return False
    if step.elementwise:
        return True
    return step.rows is not None and not step.rows.overlapping


def stream_candidates(graph, steps):
    """Tensor indices that may be streamed (producer -> single non-overlapping consumer)."""
    producer = {}
    for s in steps:
        for t in s.outs:
            producer[t] = s
    consumers = {}
    for s in steps:
        for t in set(s.ins):
            consumers.setdefault(t, []).append(s)
    out = []
    for t, p in producer.items():
        tensor = graph.tensors[t]
        if t in graph.outputs or t in graph.inputs or len(consumers.get(t, [])) != 1:
            continue
        c = consumers[t][0]
        if len(tensor.shape) != 4 or tensor.shape[0] != 1:
            continue
        if not (_row_capable_producer(p) and _row_capable_consumer(c)) or c.ins[0] != t:
            continue
        if c.ins.count(t) != 1:
            continue
        out.append(t)
    return sorted(out, key=lambda t: -graph.tensors[t].nbytes)


def _chains(steps, streamed):
    """Group steps into chains along streamed edges; returns the schedule."""
    by_out = {}
    for s in steps:
        for t in s.outs:
            by_out[t] = s
    nxt = {}
    for s in steps:
        if s.ins and s.ins[0] in streamed:
            nxt[id(by_out[s.ins[0]])] = s
    has_prev = {id(s) for s in nxt.values()}
    schedule = []
    for s in steps:
        if id(s) in has_prev:
            continue
        if id(s) in nxt:
            chain = [s]
            while id(chain[-1]) in nxt:
                chain.append(nxt[id(chain[-1])])
            schedule.append(Chain(chain))
        else:
            schedule.append(s)
    return schedule


def chain_ranges(chain, out_h):
    """For every output row of the chain's last step, the (lo, hi) rows each step computes."""
    steps = chain.steps
    per_row = []
    for r in range(out_h):
        ranges = [None] * len(steps)
        lo, hi = r, r + 1
        for i in range(len(steps) - 1, -1, -1):
            ranges[i] = (lo, hi)
            s = steps[i]
            if i > 0:
                if s.elementwise:
                    lo, hi = lo, hi
                else:
                    lo, hi = s.rows.input_rows(lo, hi)
        per_row.append(ranges)
    return per_row


def _out_rows(graph, step):
    t = graph.tensors[step.outs[0]]
    return t.shape[1]


def plan(graph, steps, *, stream="auto", user_input=True):
    """Plan the arena for ``steps`` (graph order). Returns a :class:`Plan`.

    Args:
        stream: ``"auto"`` (stream an edge when it lowers the peak), ``True`` (every candidate)
            or ``False``.
        user_input: read a float32 graph input straight from the caller's buffer.
    """
    if stream not in ("auto", True, False):
        raise ValueError(f"stream must be 'auto', True or False, got {stream!r}.")
    candidates = stream_candidates(graph, steps) if stream else []
    chosen = set(candidates) if stream is True else set()
    best = _layout(graph, steps, chosen, user_input)
    if stream == "auto":
        follow = _forward_candidates(graph, steps, candidates)
        for t in candidates:
            if t in chosen:
                continue
            for extra in ({t}, follow[t]):
                trial = _layout(graph, steps, chosen | extra, user_input)
                if trial.arena_bytes < best.arena_bytes:
                    chosen |= extra
                    best = trial
                    break
    return best


def _forward_candidates(graph, steps, candidates):
    """candidate -> itself plus the candidates that continue its chain downstream."""
    cand = set(candidates)
    consumer_out = {}
    for s in steps:
        for t in s.ins:
            if t in cand and s.outs:
                consumer_out[t] = s.outs[0]
    follow = {}
    for t in candidates:
        chain, cur = {t}, t
        while cur in consumer_out and consumer_out[cur] in cand:
            cur = consumer_out[cur]
            chain.add(cur)
        follow[t] = chain
    return follow


def _layout(graph, steps, streamed, user_input):
    schedule = _chains(steps, streamed)
    n = len(schedule)
    # --- tensor -> producing position, last reading position
    first, last = {}, {}
    band = {}
    chain_scratch = {}
    for pos, item in enumerate(schedule):
        items = item.steps if isinstance(item, Chain) else [item]
        if isinstance(item, Chain):
            ranges = chain_ranges(item, _out_rows(graph, items[-1]))
            item.band_rows = [max(rr[i][1] - rr[i][0] for rr in ranges) for i in range(len(items))]
            for i, s in enumerate(items[:-1]):
                band[s.outs[0]] = item.band_rows[i]
        for s in items:
            for t in s.ins:
                last[t] = pos
            for t in s.outs:
                first.setdefault(t, pos)
                last.setdefault(t, pos)
        chain_scratch[pos] = max((s.scratch for s in items), default=0)
    for t in graph.inputs:
        first[t] = -1
        last.setdefault(t, -1)
    for t in graph.outputs:
        last[t] = n
    # --- alias / in-place groups (union-find over tensor indices)
    parent = {}

    def find(t):
        parent.setdefault(t, t)
        while parent[t] != t:
            parent[t] = parent[parent[t]]
            t = parent[t]
        return t

    user = None
    if user_input and len(graph.inputs) == 1 and graph.tensors[graph.inputs[0]].dtype == "float32":
        user = graph.inputs[0]
    for pos, item in enumerate(schedule):
        items = item.steps if isinstance(item, Chain) else [item]
        for idx, s in enumerate(items):
            if not s.outs or not s.ins:
                continue
            src, dst = s.ins[0], s.outs[0]
            src_t, dst_t = graph.tensors[src], graph.tensors[dst]
            if s.alias:
                parent[find(dst)] = find(src)
                continue
            if not s.inplace or src == user or find(src) == find(user if user is not None else -2):
                continue
            if src in graph.outputs or src in graph.inputs or s.ins.count(src) != 1:
                continue
            in_band, out_band = src in band, dst in band
            if in_band != out_band:
                continue
            if in_band:
                if s.row_bytes_out > s.row_bytes_in or band[src] != band[dst]:
                    continue
            elif dst_t.nbytes > src_t.nbytes or last.get(src, -1) != pos:
                continue
            # every other tensor in src's group must also die here
            root = find(src)
            group = [t for t in list(parent) if find(t) == root] or [src]
            if any(last.get(t, -1) > pos for t in group if t != dst):
                continue
            parent[find(dst)] = root
    # --- buffers
    groups = {}
    for t in set(first) | set(last):
        tensor = graph.tensors[t]
        if tensor.data is not None:
            continue
        groups.setdefault(find(t), []).append(t)
    buffers, tensor_buffer = [], {}
    for root, ts in groups.items():
        if user is not None and find(user) == root:
            continue
        size = 0
        for t in ts:
            tensor = graph.tensors[t]
            if t in band:
                prod = next(s for it in schedule for s in (it.steps if isinstance(it, Chain) else [it])
                            if t in s.outs)
                size = max(size, band[t] * prod.row_bytes_out)
            else:
                size = max(size, tensor.nbytes)
        start = min(first.get(t, 0) for t in ts)
        end = max(last.get(t, start) for t in ts)
        b = Buffer(("t", root), _align(size), start, end, tensors=sorted(ts))
        buffers.append(b)
        for t in ts:
            tensor_buffer[t] = b
    scratch = {}
    for pos, size in chain_scratch.items():
        if size:
            b = Buffer(("scratch", pos), _align(size), pos, pos)
            buffers.append(b)
            scratch[pos] = b
    arena = _place(buffers)
    return Plan(schedule, buffers, tensor_buffer, band, scratch, arena, user)


def _place(buffers):
    placed = []
    peak = 0
    for b in sorted(buffers, key=lambda x: (-x.size, x.start)):
        live = sorted((p for p in placed if p.start <= b.end and b.start <= p.end),
                      key=lambda p: p.offset)
        offset = 0
        for p in live:
            if offset + b.size <= p.offset:
                break
            offset = max(offset, p.offset + p.size)
        b.offset = offset
        placed.append(b)
        peak = max(peak, offset + b.size)
    return peak


def check_plan(graph, plan_):
    """Sanity check: live buffers never overlap (raises CodegenError on a planner bug)."""
    bs = plan_.buffers
    for i, a in enumerate(bs):
        for b in bs[i + 1:]:
            if a.start <= b.end and b.start <= a.end:
                if a.offset < b.offset + b.size and b.offset < a.offset + a.size:
                    raise CodegenError(f"internal: arena buffers {a.key} and {b.key} overlap")


__all__ = ["Buffer", "Chain", "Plan", "chain_ranges", "check_plan", "plan", "stream_candidates"]
