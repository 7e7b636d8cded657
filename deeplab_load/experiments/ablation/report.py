"""The ablation's table (markdown + JSON) and plot from {seed: {arm: figures}}.

Figures are fractions in [0, 1] as `training.ablation` keeps them; tables show percent, mean +/-
sample standard deviation over seeds.
"""
import math
import os

from absl import logging

from deeplab_load.lookahead.buffer import write_json_atomic
from deeplab_load.training.ablation import ARM_TITLES, ARMS
from deeplab_load.training.reporting import UNSELECTED, WHOLE


def mean_std(values):
    """(mean, sample std) of numbers, None entries dropped; (None, None) if none is left."""
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _cell(values, scale=100.0):
    mean, std = mean_std(values)
    if mean is None:
        return "n/a"
    return f"{scale * mean:.2f} ± {scale * std:.2f}"


def _part(figures, part):
    return figures.get(part) or {}


def summarize(results):
    """Per arm: mIoU values per seed (whole and unselected), per-class values, steps, D."""
    seeds = sorted(results)
    summary = {"seeds": seeds, "arms": {}}
    for arm in ARMS:
        rows = [results[s][arm] for s in seeds if arm in results[s]]
        classes = next((_part(r, UNSELECTED).get("class_names") for r in rows
                        if _part(r, UNSELECTED).get("class_names")), [])
        d_first = [r["discriminator_rounds"][0]["accuracy"] for r in rows
                   if r.get("discriminator_rounds")]
        d_all = [d["accuracy"] for r in rows for d in r.get("discriminator_rounds", [])]
        summary["arms"][arm] = {
            "unselected_miou": [_part(r, UNSELECTED).get("miou") for r in rows],
            "val_miou": [_part(r, WHOLE).get("miou") for r in rows],
            "per_class_unselected": {c: [_part(r, UNSELECTED).get("per_class_iou", {}).get(c)
                                         for r in rows] for c in classes},
            "steps": [r.get("steps") for r in rows],
            "d_round0_accuracy": d_first, "d_all_round_accuracy": d_all,
        }
    load = summary["arms"]["load"]["unselected_miou"]
    best = summary["arms"]["adversarial_best"]["unselected_miou"]
    summary["load_minus_adversarial_best"] = [
        None if a is None or b is None else a - b for a, b in zip(load, best)]
    return summary


def format_markdown(summary, title):
    seeds = summary["seeds"]
    arms = summary["arms"]
    lines = [f"# {title}", "",
             f"{len(seeds)} seeds ({', '.join(str(s) for s in seeds)}); mean ± sample std over "
             f"seeds. Unselected val = the evaluation split minus the hold-out images that LoAd "
             f"and arm (d) selected on; whole val includes them (the paper's figure).", "",
             "| arm | unselected-val mIoU (%) | whole-val mIoU (%) | generator steps | "
             "D hold-out acc. round 0 | D hold-out acc. all rounds |",
             "|---|---:|---:|---:|---:|---:|"]
    def accuracy(values):
        return _cell(values, 1.0) if values else "-"

    for arm in ARMS:
        a = arms[arm]
        steps = ", ".join(str(s) for s in a["steps"])
        lines.append(f"| {ARM_TITLES[arm]} | {_cell(a['unselected_miou'])} | "
                     f"{_cell(a['val_miou'])} | {steps} | {accuracy(a['d_round0_accuracy'])} | "
                     f"{accuracy(a['d_all_round_accuracy'])} |")
    diffs = summary["load_minus_adversarial_best"]
    lines += ["", "LoAd minus (d), unselected-val mIoU per seed (points): " +
              ", ".join("n/a" if d is None else f"{100 * d:+.2f}" for d in diffs) +
              f"; mean ± std {_cell(diffs)}."]
    classes = list(arms["baseline"]["per_class_unselected"])
    if classes:
        lines += ["", "Per-class IoU on unselected val (%):", "",
                  "| arm | " + " | ".join(classes) + " |",
                  "|---|" + "---:|" * len(classes)]
        for arm in ARMS:
            per_class = arms[arm]["per_class_unselected"]
            lines.append(f"| {ARM_TITLES[arm]} | " +
                         " | ".join(_cell(per_class.get(c, [])) for c in classes) + " |")
    return "\n".join(lines) + "\n"


def plot(summary, path):
    """Bar per arm (mean unselected-val mIoU), one dot per seed; returns path or None."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        logging.warning("ablation plot not drawn (%s)", err)
        return None
    fig, ax = plt.subplots(figsize=(8, 4))
    for x, arm in enumerate(ARMS):
        values = [100 * v for v in summary["arms"][arm]["unselected_miou"] if v is not None]
        if not values:
            continue
        mean, std = mean_std(values)
        ax.bar(x, mean, yerr=std, color="tab:orange" if arm == "load" else "tab:blue",
               alpha=0.6, capsize=4)
        ax.scatter([x] * len(values), values, color="black", s=12, zorder=3)
    ax.set_xticks(range(len(ARMS)))
    ax.set_xticklabels([ARM_TITLES[a].split(" ", 1)[0] + "\n" + a for a in ARMS], fontsize=8)
    all_values = [100 * v for a in ARMS for v in summary["arms"][a]["unselected_miou"]
                  if v is not None]
    if all_values:
        ax.set_ylim(min(all_values) - 2, max(all_values) + 2)
    ax.set_ylabel("unselected-val mIoU (%)")
    ax.set_title("LoAd vs its controls (bars: mean ± std; dots: seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(results, ablation_dir, title="LoAd ablation"):
    """Writes ablation.md, ablation.json and ablation.png into `ablation_dir`."""
    summary = summarize(results)
    write_json_atomic(os.path.join(ablation_dir, "ablation.json"),
                      {"summary": summary, "results": {str(k): v for k, v in results.items()}})
    markdown = format_markdown(summary, title)
    with open(os.path.join(ablation_dir, "ablation.md.tmp"), "w", encoding="utf-8") as f:
        f.write(markdown)
    os.replace(os.path.join(ablation_dir, "ablation.md.tmp"),
               os.path.join(ablation_dir, "ablation.md"))
    plot(summary, os.path.join(ablation_dir, "ablation.png"))
    logging.info("ablation report:\n%s", markdown)
    return markdown
