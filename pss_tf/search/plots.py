"""The search's figures: fitness against generation, and searched subnets beside the pool winners.

Both are drawn with matplotlib's Agg backend and written atomically.
"""

from __future__ import annotations

from pss_tf.io_utils import save_figure

_LINESTYLES = {"uniform": ":", "conditional": "--", "prior": "-"}
_MARKERS = {"uniform": "s", "conditional": "^", "prior": "*"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str) -> None:
    fig.tight_layout()
    save_figure(fig, path)


def plot_fitness(entries: list[dict], path: str, unit: str) -> None:
    """Best held-out top-1 against generation: one line per (init, budget); colour = budget, style = init."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    budgets = sorted({e["budget"] for e in entries})
    colours = plt.get_cmap("viridis")
    for entry in entries:
        position = budgets.index(entry["budget"]) / max(len(budgets) - 1, 1)
        best = [100 * v for v in entry["best_per_generation"]]
        ax.plot(
            range(1, len(best) + 1),
            best,
            linestyle=_LINESTYLES.get(entry["init"], "-"),
            color=colours(0.85 * position),
            label=f"{entry['budget']:g}, {entry['init']}",
        )
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("generation")
    ax.set_ylabel(f"best {'held-out' if _held_out(entries) else 'training-subset'} top-1 (%)")
    ax.set_title("Search progress: the best candidate so far")
    ax.grid(alpha=0.3)
    if entries:
        ax.legend(fontsize="small", title=f"budget ({unit}), init", title_fontsize="small")
    _save(fig, path)


def plot_pareto(entries: list[dict], winners: list[dict], path: str, metric_label: str) -> None:
    """Validation top-1 against cost: the pool winners as a line, searched subnets as markers per init."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    if winners:
        winners = sorted(winners, key=lambda w: w["value"])
        ax.plot(
            [w["value"] for w in winners], [100 * w["val_top1"] for w in winners],
            marker="o", color="0.45", label="pool winners",
        )
    for init in sorted({e["init"] for e in entries}):
        chosen = [e for e in entries if e["init"] == init]
        ax.scatter(
            [e["value"] for e in chosen], [100 * e["val_top1"] for e in chosen],
            marker=_MARKERS.get(init, "D"), s=80, zorder=3, label=f"searched ({init})",
        )
    for budget in sorted({e["budget"] for e in entries}):
        ax.axvline(budget, color="0.6", linestyle=":", linewidth=1.0, zorder=0)
    ax.set_xlabel(metric_label)
    ax.set_ylabel("validation top-1 (%)")
    ax.set_title("Searched subnets and pool winners (budgets dotted)")
    ax.grid(alpha=0.3)
    if entries or winners:
        ax.legend(fontsize="small")
    _save(fig, path)


def _held_out(entries: list[dict]) -> bool:
    return all(e.get("fitness_data") == "holdout" for e in entries)
