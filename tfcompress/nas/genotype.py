"""Genotypes: the searched cells as data (JSON), and their derivation from edge/op scores.

A genotype holds, for the normal and the reduction cell, two ``(op, input)`` pairs per
intermediate node (node ``j`` may read states ``0 .. j+1``: the two cell inputs ``c_{k-2}``,
``c_{k-1}`` and the earlier nodes) and the states concatenated into the cell output, as in
DARTS' ``Genotype(normal, normal_concat, reduce, reduce_concat)``.

Derivation (DARTS, Liu et al. 2019, arXiv 1806.09055, ``model_search.py::genotype``): for each
intermediate node keep the 2 incoming edges whose strongest op other than ``none`` has the
largest weight, and on each kept edge the op with the largest weight other than ``none``.

>>> import numpy as np
>>> ops = ("none", "skip_connect", "max_pool_3x3")
>>> w = np.array([[.9, .05, .05], [.1, .2, .7], [.2, .5, .3], [.1, .1, .8], [0., .05, .95]])
>>> select_cell(w, ops, nodes=2)
[('max_pool_3x3', 1), ('skip_connect', 0), ('max_pool_3x3', 2), ('max_pool_3x3', 1)]
"""

import json
from dataclasses import dataclass, field

import numpy as np

from tfcompress.nas.ops import PRIMITIVES, canonical_op


def num_edges(nodes):
    """Edges of a cell with ``nodes`` intermediate nodes: ``sum_{j<nodes} (j + 2)``."""
    return sum(j + 2 for j in range(nodes))


def edge_index(nodes):
    """``[(edge, source_state, node), ...]`` in the supernet's edge order."""
    out, k = [], 0
    for j in range(nodes):
        for i in range(j + 2):
            out.append((k, i, j))
            k += 1
    return out


def select_cell(scores, primitives, nodes):
    """Top-2 incoming edges per node and the best op on each, ``none`` excluded.

    Args:
        scores: ``(edges, ops)`` array; larger is better, ``-inf`` marks a removed op.
        primitives: op names in column order.
        nodes: intermediate nodes.

    Returns:
        ``[(op, input_state), ...]``, two per node.

    Raises:
        ValueError: a node has fewer than two incoming edges with a usable op.
    """
    scores = np.asarray(scores, np.float64)
    if scores.shape != (num_edges(nodes), len(primitives)):
        raise ValueError(f"scores have shape {scores.shape}; a cell with {nodes} nodes and "
                         f"{len(primitives)} ops needs {(num_edges(nodes), len(primitives))}.")
    usable = np.array([p != "none" for p in primitives])
    masked = np.where(usable[None, :], scores, -np.inf)
    gene, start = [], 0
    for j in range(nodes):
        n = j + 2
        block = masked[start: start + n]
        strength = block.max(axis=1)
        order = sorted(range(n), key=lambda i: -strength[i])[:2]
        for i in order:
            if not np.isfinite(strength[i]):
                raise ValueError(f"Node {j} has fewer than two incoming edges with an op other "
                                 "than 'none' left (all removed); cannot derive a genotype.")
            gene.append((primitives[int(block[i].argmax())], int(i)))
        start += n
    return gene


@dataclass
class Genotype:
    """A searched architecture: two cells as ``(op, input)`` pairs, two per node.

    Attributes:
        normal, reduce: ``[(op, input_state), ...]`` with ``2 * nodes`` entries.
        normal_concat, reduce_concat: states concatenated into the cell output.
        primitives: the op set of the space it was searched in.
        kind: ``"float"`` or ``"binary"``.
        meta: free-form extras (strategy, epoch, scores) kept in the JSON.
    """

    normal: list
    normal_concat: list
    reduce: list
    reduce_concat: list
    primitives: tuple = PRIMITIVES
    kind: str = "float"
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        for cell in ("normal", "reduce"):
            gene = getattr(self, cell)
            try:
                gene = [(canonical_op(op), int(i)) for op, i in gene]
            except (TypeError, ValueError) as err:
                raise ValueError(f"Genotype.{cell} must be a list of (op, input) pairs: {err}") from None
            if not gene or len(gene) % 2:
                raise ValueError(f"Genotype.{cell} has {len(gene)} entries; it needs two "
                                 "(op, input) pairs per intermediate node.")
            setattr(self, cell, gene)
            concat = [int(c) for c in getattr(self, f"{cell}_concat")]
            if not concat:
                raise ValueError(f"Genotype.{cell}_concat is empty.")
            setattr(self, f"{cell}_concat", concat)
        if len(self.normal) != len(self.reduce):
            raise ValueError(f"Genotype: the normal cell has {len(self.normal) // 2} nodes but the "
                             f"reduction cell {len(self.reduce) // 2}; both need the same count.")
        self.primitives = tuple(canonical_op(p) for p in self.primitives)
        if self.kind not in ("float", "binary"):
            raise ValueError(f"Genotype.kind must be 'float' or 'binary', got {self.kind!r}.")

    @property
    def nodes(self):
        return len(self.normal) // 2

    def to_dict(self):
        return {"normal": [list(p) for p in self.normal], "normal_concat": list(self.normal_concat),
                "reduce": [list(p) for p in self.reduce], "reduce_concat": list(self.reduce_concat),
                "primitives": list(self.primitives), "kind": self.kind, "meta": dict(self.meta)}

    def to_json(self, indent=None):
        return json.dumps(self.to_dict(), indent=indent, default=_jsonable)

    @classmethod
    def from_dict(cls, data):
        if not isinstance(data, dict):
            raise ValueError(f"A genotype is a dict, got {type(data).__name__}.")
        missing = [k for k in ("normal", "normal_concat", "reduce", "reduce_concat") if k not in data]
        if missing:
            raise ValueError(f"Genotype data lacks the field(s) {', '.join(missing)}.")
        return cls(normal=data["normal"], normal_concat=data["normal_concat"],
                   reduce=data["reduce"], reduce_concat=data["reduce_concat"],
                   primitives=tuple(data.get("primitives", PRIMITIVES)),
                   kind=data.get("kind", "float"), meta=dict(data.get("meta", {})))

    @classmethod
    def from_json(cls, text):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"Genotype.from_json: not valid JSON ({err}).") from None
        return cls.from_dict(data)

    def __str__(self):
        def cell(gene):
            return ", ".join(f"{op}<-{i}" for op, i in gene)

        return f"normal=[{cell(self.normal)}] reduce=[{cell(self.reduce)}]"


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def check_genotype(genotype, nodes, primitives):
    """Raise ValueError naming the mismatch if ``genotype`` does not fit a space with
    ``nodes`` intermediate nodes and the op set ``primitives``."""
    if not isinstance(genotype, Genotype):
        raise ValueError(f"Expected a tfcompress.nas.Genotype, got {type(genotype).__name__}.")
    for cell in ("normal", "reduce"):
        gene = getattr(genotype, cell)
        if len(gene) != 2 * nodes:
            raise ValueError(f"The genotype's {cell} cell has {len(gene) // 2} intermediate nodes; "
                             f"this space's cells have {nodes} (DartsSpace(nodes={nodes})).")
        for idx, (op, src) in enumerate(gene):
            node = idx // 2
            if op not in primitives:
                raise ValueError(f"Operation {op!r} of the genotype's {cell} cell (node {node}) is "
                                 f"not in this space's operations: {', '.join(primitives)}.")
            if op == "none":
                raise ValueError(f"The genotype's {cell} cell uses 'none' at node {node}; a derived "
                                 "cell keeps only real operations.")
            if not 0 <= src < node + 2:
                raise ValueError(f"Node {node} of the genotype's {cell} cell reads state {src}; it "
                                 f"can only read states 0..{node + 1}.")
        for c in getattr(genotype, f"{cell}_concat"):
            if not 2 <= c < nodes + 2:
                raise ValueError(f"The genotype's {cell}_concat names state {c}; the output of a "
                                 f"cell with {nodes} nodes concatenates intermediate states "
                                 f"2..{nodes + 1}.")
