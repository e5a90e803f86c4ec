"""The report's figures, as standalone SVG text (embedded in index.html; no file, no CDN).

Figures are built on ``matplotlib.figure.Figure`` directly, never through pyplot's global
state. Text is drawn as paths (``svg.fonttype: path``), so a run name in a legend is shapes,
not markup, and the SVG looks the same without any font installed.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np

from eval_harness.report.collect import ReportData, RunEntry

_RC = {"svg.fonttype": "path", "svg.hashsalt": "eval_harness-report", "font.size": 9}


@dataclass
class Plot:
    key: str  # stable id, e.g. "mt_bench_radar", "lisa_layers_<run>"
    title: str
    caption: str
    svg: str


def _render(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and doctype


def _figure(width: float = 6.4, height: float = 4.0, **kw):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained", **kw)


def _with_rc(build):
    import matplotlib

    def wrapped(*args, **kwargs):
        with matplotlib.rc_context(_RC):
            return build(*args, **kwargs)

    return wrapped


def _colour(data: ReportData, run: RunEntry) -> str:
    """One colour per run, the same in every figure (by the run's place in the leaderboard)."""
    names = [r.name for r in data.runs]
    index = names.index(run.name) if run.name in names else len(names)
    return f"C{index % 10}"


def _category_runs(data: ReportData) -> tuple[list[str], list[RunEntry]]:
    runs = [r for r in data.runs if r.mt_bench and any(v is not None for v in r.mt_bench.per_category.values())]
    cats = list(dict.fromkeys(c for r in runs for c in r.mt_bench.per_category))
    return cats, runs


@_with_rc
def mt_bench_radar(data: ReportData) -> Plot | None:
    cats, runs = _category_runs(data)
    if len(cats) < 3:
        return None
    fig = _figure(5.5, 5.0)
    ax = fig.add_subplot(projection="polar")
    angles = np.linspace(0, 2 * math.pi, len(cats), endpoint=False).tolist()
    for run in runs:
        values = [run.mt_bench.per_category.get(c) or 0.0 for c in cats]
        ax.plot(angles + angles[:1], values + values[:1], marker="o", ms=3, label=run.name, color=_colour(data, run))
        ax.fill(angles + angles[:1], values + values[:1], alpha=0.08, color=_colour(data, run))
    ax.set_xticks(angles)
    ax.set_xticklabels(cats)
    ax.set_ylim(0, 10)
    ax.legend(loc="upper right", bbox_to_anchor=(1.35, 1.1), fontsize=8)
    return Plot("mt_bench_radar", "MT-Bench by category (radar)",
                "Mean judge score (1-10) per category; categories joined from MT-Bench's question.jsonl. "
                f"{_judged_by(runs)}", _render(fig))


@_with_rc
def mt_bench_bars(data: ReportData) -> Plot | None:
    cats, runs = _category_runs(data)
    if not cats:
        return None
    fig = _figure(7.5, 3.8)
    ax = fig.add_subplot()
    width = 0.8 / len(runs)
    x = np.arange(len(cats))
    for i, run in enumerate(runs):
        values = [run.mt_bench.per_category.get(c) or 0.0 for c in cats]
        ax.bar(x + (i - (len(runs) - 1) / 2) * width, values, width, label=run.name, color=_colour(data, run))
    ax.set_xticks(x, cats, rotation=20)
    ax.set_ylim(0, 10)
    ax.set_ylabel("judge score")
    ax.legend(fontsize=8, ncols=min(len(runs), 4))
    return Plot("mt_bench_bars", "MT-Bench by category (bars)",
                f"The same scores as the radar, side by side. {_judged_by(runs)}", _render(fig))


def _judged_by(runs) -> str:
    """Who judged the plotted scores; several judges are named per run (their scores are not comparable)."""
    judges = {r.name: r.mt_bench.judge or r.mt_bench.judge_model or "unknown" for r in runs}
    if len(set(judges.values())) == 1:
        return f"Judge: {next(iter(judges.values()))}."
    return ("Judged by different judges, not comparable: " + "; ".join(f"{n}: {j}" for n, j in judges.items()) + ".")


@_with_rc
def loss_curves(data: ReportData) -> Plot | None:
    runs = [r for r in data.runs if r.training.loss_curve]
    if not runs:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    for run in runs:
        points = sorted(run.training.loss_curve, key=lambda p: p["step"])
        ax.plot([p["step"] for p in points], [p["loss"] for p in points], label=f"{run.name} ({run.method})",
                color=_colour(data, run))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.legend(fontsize=8)
    return Plot("loss_curves", "Training loss", "Loss as logged by the trainer (trainer_state.json or debug.log).",
                _render(fig))


def _quality(run: RunEntry, data: ReportData) -> tuple[float | None, str]:
    if any(r.mt_bench and r.mt_bench.overall is not None for r in data.runs):
        return (run.mt_bench.overall if run.mt_bench else None), "MT-Bench overall"
    for title in (c.title for c in data.columns):
        if any(title in r.accuracy for r in data.runs):
            acc = run.accuracy.get(title)
            return (100 * acc.value if acc and acc.value is not None else None), title
    return None, ""


def _cost_axis(data: ReportData) -> tuple[str, str]:
    """Peak memory when the runs that have it all measured the same kind; else trainable parameters."""
    kinds = {r.training.peak_memory_kind or "gpu_trainer" for r in data.runs if r.training.peak_memory_gib}
    if len(kinds) == 1:
        label = {"gpu_trainer": "peak GPU memory, trainer-logged (GiB)", "gpu_process": "peak GPU memory (GiB)",
                 "rss_process": "peak RSS of training (GiB)"}[kinds.pop()]
        return "memory", label
    return "params", "trainable parameters"


def pareto_frontier(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (cost, quality) points no other point beats on both: cheaper or equal and at least as good."""
    frontier, best = [], -math.inf
    for cost, quality in sorted(points, key=lambda p: (p[0], -p[1])):
        if quality > best:
            frontier.append((cost, quality))
            best = quality
    return frontier


@_with_rc
def pareto(data: ReportData) -> Plot | None:
    """Quality against cost; the frontier joins the runs no other run beats on both."""
    axis, cost_label = _cost_axis(data)
    points = []
    for run in data.runs:
        quality, quality_label = _quality(run, data)
        cost = run.training.peak_memory_gib if axis == "memory" else run.training.trainable_params
        if quality is not None and cost:
            points.append((float(cost), quality, run))
    if not points:
        return None
    fig = _figure(6.0, 4.0)
    ax = fig.add_subplot()
    for cost, quality, run in points:
        ax.scatter([cost], [quality], s=40, label=f"{run.name} ({run.method})", color=_colour(data, run))
    frontier = pareto_frontier([(cost, quality) for cost, quality, _ in points])
    caption = "Up and to the left is better."
    if len(frontier) >= 2:  # a single point is no frontier: no line, no legend entry
        ax.plot([c for c, _ in frontier], [q for _, q in frontier], "k--", lw=1, label="Pareto frontier")
        caption += " Runs on the dashed line are not beaten on both axes by any other."
    ax.set_xlabel(cost_label)
    ax.set_ylabel(quality_label)
    if axis == "params":
        ax.set_xscale("log")
        if any(r.training.peak_memory_gib for r in data.runs):
            caption += " Peak memory is not one kind of measurement for every run, so trainable parameters are shown."
    ax.legend(fontsize=8)
    short = "peak memory" if axis == "memory" else "trainable parameters"
    return Plot("pareto", f"Quality vs {short}", caption, _render(fig))


@_with_rc
def lisa_layers(run: RunEntry) -> Plot | None:
    if not run.lisa_activation:
        return None
    fig = _figure(6.0, 3.0)
    ax = fig.add_subplot()
    counts = run.lisa_activation
    ax.bar(range(len(counts)), counts, color="tab:green")
    ax.set_xlabel("decoder layer")
    ax.set_ylabel("intervals trainable")
    ax.set_xticks(range(0, len(counts), max(1, len(counts) // 16)))
    return Plot(f"lisa_layers_{run.name}", f"LISA layer activations: {run.name}",
                "How many sampling intervals each decoder layer was trained in (lisa_history.json).", _render(fig))


@_with_rc
def weight_norms(data: ReportData) -> Plot | None:
    runs = [r for r in data.runs if r.norms]
    if not runs:
        return None
    fig = _figure(7.0, 3.6)
    ax = fig.add_subplot()
    labels: list[str] = []
    for run in runs:
        rows = run.norms
        labels = labels if len(labels) >= len(rows) else [str(row["layer"]) for row in rows]
        ax.plot(range(len(rows)), [row["mean_update_norm"] for row in rows], marker="o", ms=3,
                lw=2.2 if run.method == "LISA" else 1.2, label=f"{run.name} ({run.method})", color=_colour(data, run))
    ax.set_xticks(range(len(labels)), labels, rotation=90 if len(labels) > 20 else 0, fontsize=7)
    ax.set_yscale("log")
    ax.set_xlabel("layer group (embedding, decoder layers, head)")
    ax.set_ylabel("mean update norm per tensor")
    ax.legend(fontsize=8)
    return Plot("weight_norms", "Layer weight-norm profile",
                "How far training moved each layer from the base (lisa-plugin norms; Pan et al. 2024, Fig. 2).",
                _render(fig))


def all_plots(data: ReportData) -> list[Plot]:
    plots = [mt_bench_radar(data), mt_bench_bars(data), loss_curves(data), pareto(data)]
    plots += [lisa_layers(run) for run in data.runs if run.method == "LISA"]
    plots.append(weight_norms(data))
    return [p for p in plots if p is not None]
