"""Draw a genotype's normal and reduction cells with matplotlib (no graphviz needed)."""

from pathlib import Path

from tfcompress.nas.genotype import Genotype

_COLORS = {"skip_connect": "#4c72b0", "max_pool_3x3": "#55a868", "avg_pool_3x3": "#8172b2",
           "sep_conv_3x3": "#c44e52", "sep_conv_5x5": "#dd8452", "dil_conv_3x3": "#937860",
           "dil_conv_5x5": "#da8bc3", "none": "#999999"}


def _layout(nodes):
    """Positions: the two inputs on the left, the nodes in a column, the output on the right."""
    pos = {0: (0.0, 0.75), 1: (0.0, 0.25)}
    for j in range(nodes):
        pos[j + 2] = (1.0 + j * 0.9, 0.9 - 0.8 * j / max(nodes - 1, 1))
    pos["out"] = (1.0 + nodes * 0.9, 0.5)
    return pos


def _draw_cell(ax, gene, concat, title, kind):
    nodes = len(gene) // 2
    pos = _layout(nodes)
    labels = {0: "c_{k-2}", 1: "c_{k-1}", "out": "c_{k}"}
    labels.update({j + 2: str(j) for j in range(nodes)})
    for key, (x, y) in pos.items():
        color = "#f2c14e" if key == "out" else ("#9ecae1" if key in (0, 1) else "#d9d9d9")
        ax.text(x, y, labels[key], ha="center", va="center", fontsize=9,
                bbox=dict(boxstyle="round,pad=0.4", fc=color, ec="black"))
    arrows = 0
    for idx, (op, src) in enumerate(gene):
        dst = idx // 2 + 2
        (x0, y0), (x1, y1) = pos[src], pos[dst]
        bend = 0.25 if idx % 2 else -0.25
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                    arrowprops=dict(arrowstyle="-|>", color=_COLORS.get(op, "black"), lw=1.6,
                                    shrinkA=14, shrinkB=14, connectionstyle=f"arc3,rad={bend}"))
        ax.text((x0 + x1) / 2, (y0 + y1) / 2 + (0.04 if bend > 0 else -0.04), op, fontsize=7,
                ha="center", va="center", color=_COLORS.get(op, "black"))
        arrows += 1
    for c in concat:
        (x0, y0), (x1, y1) = pos[c], pos["out"]
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                    arrowprops=dict(arrowstyle="-|>", color="gray", lw=1.0, ls="--",
                                    shrinkA=14, shrinkB=14))
        arrows += 1
    ax.set_title(f"{title} cell ({kind})", fontsize=10)
    ax.set_xlim(-0.4, pos["out"][0] + 0.4)
    ax.set_ylim(-0.05, 1.05)
    ax.axis("off")
    return arrows


def plot_genotype(genotype, path=None, *, dpi=120):
    """Draw the normal and the reduction cell of ``genotype`` side by side.

    Args:
        genotype: a :class:`~tfcompress.nas.Genotype` (or its JSON text / dict).
        path: where to save the figure (format from the suffix, e.g. ``.png``, ``.pdf``);
            ``None`` only returns it.

    Returns:
        the matplotlib ``Figure`` (its ``arrows`` attribute counts the drawn edges:
        two per node and one per concatenated state, per cell).
    """
    from matplotlib.figure import Figure   # no pyplot: no global backend or figure state

    if isinstance(genotype, str):
        genotype = Genotype.from_json(genotype)
    elif isinstance(genotype, dict):
        genotype = Genotype.from_dict(genotype)
    if not isinstance(genotype, Genotype):
        raise ValueError(f"plot_genotype needs a Genotype, got {type(genotype).__name__}.")
    width = 3.0 + 1.6 * genotype.nodes
    fig = Figure(figsize=(2 * width, 3.6))
    axes = fig.subplots(1, 2)
    fig.arrows = (_draw_cell(axes[0], genotype.normal, genotype.normal_concat, "normal", genotype.kind)
                  + _draw_cell(axes[1], genotype.reduce, genotype.reduce_concat, "reduction",
                               genotype.kind))
    fig.tight_layout()
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi)
    return fig
