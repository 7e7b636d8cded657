"""LoAd convergence graph (like the paper's Fig. 3) from the controller's event history.

Draws hold-out mIoU (%) per propagation: each cycle as its own segment starting from its start
model (the revert to g_s), the start line mu_s, cycle boundaries, peaks (g_i), cycle ends
(g_{i,j}) and dynamic start updates. Input is `state["history"]` of `controller.py` (or the path
of a state JSON / a JSON list of events).

    python -m deeplab_load_tools.plot_convergence --state=RUN/state.json --out=RUN/convergence.png
"""
import json
import os

from deeplab_load.atomic_files import replacing

PEAK_COLOR = "#d62728"
END_COLOR = "#555555"
START_COLOR = "#2ca02c"


def load_history(history):
    """Event list from a list, a state JSON path or a JSON list path (ValueError names the file)."""
    if isinstance(history, (str, os.PathLike)):
        path = os.fspath(history)
        with open(path, encoding="utf-8") as f:
            try:
                payload = json.load(f)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}: not valid JSON ({error})") from error
        if isinstance(payload, dict):
            payload = payload.get("history")
        if not isinstance(payload, list):
            raise ValueError(f"{path}: expected a LoAd state with 'history' or a list of events")
        history = payload
    if not any(e.get("kind") == "start" for e in history):
        raise ValueError("LoAd history has no 'start' event (initialisation not finished)")
    return history


def _subscript(label):
    """'g0_1' -> '$g_{0,1}$', 'g2' -> '$g_{2}$'."""
    return "$g_{" + label[1:].replace("_", ",") + "}$"


def convergence_series(history):
    """Plot data: cycle segments [(propagations, mIoU %)], mu_s steps, markers (all in %)."""
    segments, mu_s_x, mu_s_y = [], [], []
    markers = {"start": [], "peak": [], "cycle_end": [], "dynamic_start": []}
    boundaries = []
    for event in history:
        kind, p = event["kind"], event["propagation"]
        if kind == "start":
            markers["start"].append((p, 100 * event["mu"], "g0"))
            mu_s_x.append(p)
            mu_s_y.append(100 * event["mu"])
        elif kind == "cycle_start":
            segments.append({"peak": int(event["model"][1:]), "x": [p],
                             "y": [100 * event["mu_s"]]})
            boundaries.append(p)
            mu_s_x.append(p)
            mu_s_y.append(100 * event["mu_s"])
        elif kind == "propagation":
            segments[-1]["x"].append(p)
            segments[-1]["y"].append(100 * event["mu"])
            mu_s_x.append(p)
            mu_s_y.append(100 * event["mu_s"])
        elif kind == "peak":
            markers["peak"].append((event["at_propagation"], 100 * event["mu"], event["label"]))
        elif kind == "cycle_end":
            markers["cycle_end"].append((p, 100 * event["mu"], event["label"]))
        elif kind == "dynamic_start":
            markers["dynamic_start"].append((p, 100 * event["mu_s"], ""))
    return segments, (mu_s_x, mu_s_y), markers, boundaries


def plot_convergence(history, out_png, title="LoAd convergence on the hold-out set",
                     figsize=(10.0, 4.5), dpi=100, max_labels=40, max_boundaries=100):
    """Writes the convergence PNG (figsize * dpi pixels) atomically; returns `out_png`.

    Marker labels are drawn while there are at most `max_labels` of a kind, cycle boundaries
    while there are at most `max_boundaries`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    history = load_history(history)
    segments, (mu_s_x, mu_s_y), markers, boundaries = convergence_series(history)
    figure = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    colors = [f"C{k}" for k in range(10)]
    for segment in segments:
        axes.plot(segment["x"], segment["y"], "-", marker=".", markersize=3, linewidth=1.2,
                  color=colors[segment["peak"] % len(colors)])
    axes.plot(mu_s_x, mu_s_y, "--", drawstyle="steps-post", color="black", linewidth=0.8,
              label=r"start $\mu^s$")
    for x in boundaries if len(boundaries) <= max_boundaries else []:
        axes.axvline(x, color="0.8", linestyle=":", linewidth=0.8, zorder=0)
    styles = {"start": ("o", START_COLOR, "start $g_0$"), "peak": ("*", PEAK_COLOR, "peak $g_i$"),
              "cycle_end": ("x", END_COLOR, "cycle end $g_{i,j}$ (revert)"),
              "dynamic_start": ("^", "C1", "dynamic start update")}
    for kind, points in markers.items():
        if not points:
            continue
        marker, color, legend = styles[kind]
        xs, ys, labels = zip(*points)
        axes.scatter(xs, ys, marker=marker, color=color, s=60 if kind == "peak" else 30,
                     zorder=3, label=legend)
        if kind != "dynamic_start" and len(points) <= max_labels:
            for x, y, label in points:
                axes.annotate(_subscript(label), (x, y), textcoords="offset points",
                              xytext=(0, 6 if kind != "cycle_end" else -12), ha="center",
                              fontsize=8, color=color)
    done = [e for e in history if e["kind"] == "done"]
    if done:
        title += (f" (start {100 * done[-1]['mu_start']:.2f}%, "
                  f"returned {100 * done[-1]['mu_final']:.2f}%)")
    axes.set_title(title, fontsize=10)
    axes.set_xlabel("propagation")
    axes.set_ylabel("hold-out mIoU (%)")
    axes.grid(True, axis="y", color="0.9")
    axes.legend(loc="best", fontsize=8)
    figure.tight_layout()
    out_png = os.fspath(out_png)
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    with replacing(out_png) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi)
    return out_png
