"""The ablation's table (markdown + JSON) and plot from {seed: {arm: figures}} (`runner`).

Figures are fractions in [0, 1] as the runner keeps them; tables show percent. Per arm: the
report-split mIoU (mean ± sample std over seeds), its paired difference against the baseline and
against LoAd with a bootstrap interval over seeds then images
(`evaluation_stats.paired_bootstrap.paired_miou_difference` on the saved per-image confusion
matrices), the structural metric (`evaluation_stats.structure`: share of ground-truth objects
one predicted class covers on >= 90%, and predicted / ground-truth connected components), the
discriminator's hold-out accuracy per round for the arms with a D, and the wall time.
"""
import math
import os

import numpy as np
from absl import logging

from deeplab_load.evaluation_stats.paired_bootstrap import paired_miou_difference
from deeplab_load.evaluation_stats.per_image import PerImageResults
from deeplab_load.experiments.ablation import arm_names
from deeplab_load.atomic_files import write_json_atomic


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


def _arms_present(results, config):
    """Arm ids in table order that some seed has."""
    ids = arm_names.arm_ids(config.groups, config.hybrid_weights)
    return [arm for arm in ids if any(arm in results[s] for s in results)]


def _confusions(results, seeds, arm, ablation_dir):
    """int [S, N, K, K] of `arm` for `seeds` (the baseline, shared by every seed: [1, N, K, K])."""
    if arm == arm_names.BASELINE:
        seeds = seeds[:1]
    return np.stack([PerImageResults.load(os.path.join(
        ablation_dir, results[s][arm]["report"]["per_image"])).confusions for s in seeds])


def paired_difference(results, arm, reference, ablation_dir, config):
    """Bootstrap of mIoU(arm) - mIoU(reference) over the seeds that have both, or None."""
    seeds = [s for s in sorted(results) if arm in results[s] and reference in results[s]]
    if not seeds:
        return None
    return paired_miou_difference(
        _confusions(results, seeds, arm, ablation_dir),
        _confusions(results, seeds, reference, ablation_dir),
        num_resamples=config.bootstrap_resamples, seed=0, confidence=config.confidence)


def _structure(rows):
    shares = {key: [(r["report"].get("structure") or {}).get(key) for r in rows]
              for key in ("pure_share", "correct_pure_share", "component_ratio")}
    return shares


def _discriminator_rounds(rows):
    """Per D round: hold-out accuracies over seeds ([] for arms without a D)."""
    per_round = {}
    for r in rows:
        for index, entry in enumerate(r.get("discriminator_rounds") or []):
            per_round.setdefault(index, []).append(entry["accuracy"])
    return [per_round[i] for i in sorted(per_round)]


def summarize(results, ablation_dir, config):
    """The report's numbers: per arm mIoU per seed, intervals, structure, D rounds, times."""
    seeds = sorted(results)
    arms = _arms_present(results, config)
    summary = {"seeds": seeds, "arms": {}, "order": arms,
               "bootstrap": {"num_resamples": config.bootstrap_resamples,
                             "confidence": config.confidence,
                             "scheme": "seeds, then images (paired)"}}
    for arm in arms:
        rows = [results[s][arm] for s in seeds if arm in results[s]]
        first = rows[0]["report"]
        summary["arms"][arm] = {
            "title": arm_names.title(arm),
            "miou": [r["report"]["miou"] for r in rows],
            "split": first["split"], "num_images": first["num_images"],
            "per_class_iou": {c: [r["report"]["per_class_iou"].get(c) for r in rows]
                              for c in first["class_names"]},
            "vs_baseline": paired_difference(results, arm, arm_names.BASELINE, ablation_dir,
                                             config),
            "vs_load": (paired_difference(results, arm, arm_names.LOAD, ablation_dir, config)
                        if arm_names.LOAD in arms else None),
            "structure": _structure(rows),
            "steps": [r.get("steps") for r in rows],
            "discriminator_rounds": _discriminator_rounds(rows),
            "wall_time_s": [r.get("wall_time_s") for r in rows],
        }
    return summary


def _interval(entry):
    if entry is None:
        return "-"
    return (f"{100 * entry['difference']:+.2f} [{100 * entry['low']:+.2f}, "
            f"{100 * entry['high']:+.2f}]")


def format_markdown(summary, title):
    seeds, arms = summary["seeds"], summary["arms"]
    order = summary["order"]
    boot = summary["bootstrap"]
    first = arms[order[0]]
    percent = int(round(100 * boot["confidence"]))
    lines = [
        f"# {title}", "",
        f"{len(seeds)} seed(s) ({', '.join(str(s) for s in seeds)}); mIoU on {first['split']} "
        f"({first['num_images']} images), mean ± sample std over seeds. Differences in points "
        f"with {percent}% bootstrap intervals ({boot['num_resamples']} resamples of seeds, then "
        f"images, paired). Pure objects: ground-truth objects one predicted class covers on "
        f">= 90% of their pixels (correct: that class is theirs); components: predicted / "
        f"ground-truth connected components, all classes.", "",
        "| arm | mIoU (%) | vs (a) baseline | vs (e) LoAd | pure objects (%) | "
        "correct pure (%) | components pred/GT | generator steps | wall time (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for arm in order:
        a = arms[arm]
        structure = a["structure"]
        steps = ", ".join(str(s) for s in a["steps"])
        lines.append(
            f"| {a['title']} | {_cell(a['miou'])} | {_interval(a['vs_baseline'])} | "
            f"{_interval(a['vs_load'])} | {_cell(structure['pure_share'])} | "
            f"{_cell(structure['correct_pure_share'])} | "
            f"{_cell(structure['component_ratio'], 1.0)} | {steps} | "
            f"{_cell(a['wall_time_s'], 1.0)} |")
    with_d = [arm for arm in order if arms[arm]["discriminator_rounds"]]
    if with_d:
        rounds = max(len(arms[arm]["discriminator_rounds"]) for arm in with_d)
        lines += ["", "Discriminator hold-out accuracy per round (%, mean ± std over seeds):", "",
                  "| arm | " + " | ".join(f"round {r}" for r in range(rounds)) + " |",
                  "|---|" + "---:|" * rounds]
        for arm in with_d:
            per_round = arms[arm]["discriminator_rounds"]
            cells = [_cell(per_round[r]) if r < len(per_round) else "-" for r in range(rounds)]
            lines.append(f"| {arms[arm]['title']} | " + " | ".join(cells) + " |")
    classes = list(first["per_class_iou"])
    if classes:
        lines += ["", f"Per-class IoU on {first['split']} (%):", "",
                  "| arm | " + " | ".join(classes) + " |", "|---|" + "---:|" * len(classes)]
        for arm in order:
            per_class = arms[arm]["per_class_iou"]
            lines.append(f"| {arms[arm]['title']} | " +
                         " | ".join(_cell(per_class.get(c, [])) for c in classes) + " |")
    return "\n".join(lines) + "\n"


ZOOM_POINTS = 1.5   # the difference panel shows +-1.5 points; farther values are marked at its edge


def plot(summary, path):
    """mIoU per arm (bars: mean, dots: seeds) and each arm's paired difference against the
    baseline and against LoAd with its interval (zoomed to +-ZOOM_POINTS, farther values written
    at the edge); returns path, or None without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        logging.warning("ablation plot not drawn (%s)", err)
        return None
    order, arms = summary["order"], summary["arms"]
    labels = [arm_names.letter(a) + "\n" + a.replace("_", "\n", 1) for a in order]
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(8, 1.6 * len(order)), 4.5))
    values_all = []
    for x, arm in enumerate(order):
        values = [100 * v for v in arms[arm]["miou"] if v is not None]
        values_all += values
        mean, std = mean_std(values)
        left.bar(x, mean, yerr=std, color="tab:orange" if arm == arm_names.LOAD else "tab:blue",
                 alpha=0.6, capsize=4)
        left.scatter([x] * len(values), values, color="black", s=12, zorder=3)
        for key, offset, color in (("vs_baseline", -0.15, "tab:blue"),
                                   ("vs_load", 0.15, "tab:orange")):
            entry = arms[arm].get(key)
            if entry is None or (key == "vs_load" and arm == arm_names.LOAD):
                continue
            diff, low, high = (100 * entry[k] for k in ("difference", "low", "high"))
            if abs(diff) > ZOOM_POINTS:
                edge = ZOOM_POINTS if diff > 0 else -ZOOM_POINTS
                right.annotate(f"{diff:+.1f}", (x + offset, edge), fontsize=7, color=color,
                               ha="center", va="bottom" if diff > 0 else "top", rotation=90)
                right.plot([x + offset], [edge], marker="^" if diff > 0 else "v", color=color)
                continue
            right.errorbar(x + offset, diff, yerr=[[diff - low], [high - diff]], fmt="o",
                           capsize=3, color=color, markersize=4)
    if values_all:
        left.set_ylim(min(values_all) - 2, max(values_all) + 2)
    for ax in (left, right):
        ax.set_xticks(range(len(order)))
        ax.set_xticklabels(labels, fontsize=7)
    right.axhline(0.0, color="gray", lw=0.8)
    right.set_ylim(-ZOOM_POINTS - 1.3, ZOOM_POINTS + 1.3)
    right.plot([], [], "o", color="tab:blue", label="arm - (a) baseline")
    right.plot([], [], "o", color="tab:orange", label="arm - (e) LoAd")
    right.legend(fontsize=7, loc="lower right")
    left.set_ylabel(f"mIoU on {arms[order[0]]['split']} (%)")
    left.set_title("per arm (bars: mean ± std; dots: seeds)")
    right.set_ylabel("paired difference (points)")
    right.set_title(f"differences, {int(round(100 * summary['bootstrap']['confidence']))}% "
                    f"bootstrap intervals (zoomed to ±{ZOOM_POINTS:g})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(results, ablation_dir, config, title="LoAd ablation"):
    """Writes ablation.md, ablation.json and ablation.png into `ablation_dir`; returns the
    markdown."""
    summary = summarize(results, ablation_dir, config)
    write_json_atomic(os.path.join(ablation_dir, "ablation.json"),
                      {"summary": summary, "results": {str(k): v for k, v in results.items()}})
    markdown = format_markdown(summary, title)
    tmp = os.path.join(ablation_dir, "ablation.md.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(markdown)
    os.replace(tmp, os.path.join(ablation_dir, "ablation.md"))
    plot(summary, os.path.join(ablation_dir, "ablation.png"))
    logging.info("ablation report:\n%s", markdown)
    return markdown
