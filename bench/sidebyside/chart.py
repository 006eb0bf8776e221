"""A PNG of cost against size: per database (tables) and per fleet size (targets).

Needs matplotlib (`python3 -m venv ... && pip install matplotlib`); without it `draw` says so
and returns None, and the report simply has no chart.
"""

import os


def draw(results, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("chart: matplotlib is not installed, no chart drawn", flush=True)
        return None
    panels = 3 if results.get("fleet") else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.2))
    tables = [p["tables"] for p in results["phases"]]
    names = list(results["phases"][0]["subjects"])
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        xs = [j + i * width for j in range(len(tables))]
        cycle = [p["subjects"][name]["cycle_cpu"] * 1e3 for p in results["phases"]]
        backend = [(p["subjects"][name]["backend_cpu_per_cycle"] or 0) * 1e3 for p in results["phases"]]
        axes[0].bar(xs, cycle, width, label=name)
        axes[1].bar(xs, backend, width, label=name)
    for ax, title in ((axes[0], "process CPU per cycle (ms)"), (axes[1], "database backend CPU per cycle (ms)")):
        ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(tables))])
        ax.set_xticklabels([f"{t:,} tables" for t in tables])
        ax.set_yscale("log")
        ax.set_title(title)
        ax.legend(fontsize=8)
    st = results["sizes"].get("statements_in_view", results["sizes"]["statements"])
    axes[0].set_xlabel(f"{st:,} statements in pg_stat_statements")
    if results.get("fleet"):
        fl = results["fleet"]
        ax = axes[2]
        xs = [r["targets"] for r in fl]
        ax.plot(xs, [r["rss"] / 1e6 for r in fl], "o-", label="VmRSS (MB)")
        ax.plot(xs, [r["metrics_wall_median"] * 1e3 for r in fl], "s-", label="/metrics median (ms)")
        ax.plot(xs, [(r["cpu_per_target_poll"] or 0) * 1e3 * 10 for r in fl], "^-",
                label="CPU per target poll (ms × 10)")
        ax.set_xlabel("targets, default collectors")
        ax.set_title("one daemon, many targets")
        ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=90)
    return os.path.basename(path)
