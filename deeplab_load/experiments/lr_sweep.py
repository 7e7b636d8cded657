"""The adversarial learning rate from a sweep, not by hand: LoAd for each rate from one start.

    sweep_dir/
      stage1/, stage1.json   the shared start (`shared_start`): stage 1, hold-out ids, baseline
      lr_<rate>/             a whole LoAd run at --adv_learning_rate=<rate> (resumable)
      lr_<rate>.json         its figures, written when it is done (its resume marker)
      sweep.md, sweep.json

Every rate runs with the same flags otherwise (the propagation cap included), the same seed and
hold-out images. The hold-out mIoU is what LoAd selects on; the unselected val images (val minus
the hold-out) are reported, not used to choose.
"""
import math
import os

from absl import logging

from deeplab_load.atomic_files import write_json_atomic
from deeplab_load.training import run, shared_start
from deeplab_load.training.reporting import UNSELECTED


def run_name(learning_rate):
    return f"lr_{learning_rate:g}"


def discriminator_rounds(events):
    """Per D round: its hold-out accuracies (overall, real, fake, per fake part) and epochs."""
    rounds = []
    for event in events:
        if event["kind"] == "discriminator":
            metrics = event["metrics"]
            rounds.append({k: v for k, v in metrics.items()
                           if k in ("accuracy", "real_accuracy", "fake_accuracy", "epochs")
                           or k.startswith("fake_accuracy_")})
    return rounds


def run_one(config, start, sweep_dir, learning_rate):
    """LoAd at `learning_rate` from the shared start; returns its figures."""
    run_dir = os.path.join(sweep_dir, run_name(learning_rate))
    summary = run.run_training(shared_start.start_flags(config, start, run_dir,
                                                        adv_learning_rate=learning_rate))
    if "interrupted" in summary:
        raise InterruptedError(summary["interrupted"])
    events = shared_start.read_events(run_dir)
    trace = [e["mu"] for e in events if e["kind"] == "propagation"]
    return {
        "learning_rate": learning_rate, "run_dir": run_dir,
        "holdout_start": summary["holdout_miou_start"],
        "holdout_final": summary["holdout_miou_final"],
        "holdout_min": min(trace, default=None), "holdout_max": max(trace, default=None),
        "unselected_val_baseline": summary["baseline_unselected_miou"],
        "unselected_val_final": summary["final_unselected_miou"],
        "final_tag": summary["final_tag"], "peaks": summary["peaks"],
        "propagations": summary["propagations"], "cycles": summary["cycles"],
        "stop_reason": summary["stop_reason"],
        "discriminator_rounds": discriminator_rounds(events),
        "wall_time_s": summary["wall_time_s"],
    }


def run_lr_sweep(config, sweep_dir, learning_rates, demo_profile=None):
    """Runs (or resumes) LoAd of TrainConfig `config` at each of `learning_rates`; returns the rows
    (one per rate, in the given order) and writes sweep.md / sweep.json into `sweep_dir`."""
    if not learning_rates:
        raise ValueError("the sweep needs at least one learning rate")
    bad = [lr for lr in learning_rates if not (math.isfinite(lr) and lr >= 0)]
    if bad:
        raise ValueError(f"learning rates must be finite and >= 0, got {bad}")
    if len({run_name(lr) for lr in learning_rates}) != len(learning_rates):
        raise ValueError(f"learning rates repeat: {learning_rates}")
    if not config.load.max_propagations:
        raise ValueError("the sweep needs a propagation cap: pass --max_propagations > 0")
    sweep_dir = os.path.abspath(sweep_dir)
    os.makedirs(sweep_dir, exist_ok=True)
    start = shared_start.prepare_start(config, sweep_dir, demo_profile)
    rows = []
    for index, learning_rate in enumerate(learning_rates):
        marker = os.path.join(sweep_dir, f"{run_name(learning_rate)}.json")
        if os.path.exists(marker):
            logging.info("lr sweep: %s done, read from %s", run_name(learning_rate), marker)
        else:
            logging.info("lr sweep %d/%d: adversarial learning rate %g", index + 1,
                         len(learning_rates), learning_rate)
            write_json_atomic(marker, run_one(config, start, sweep_dir, learning_rate))
        rows.append(shared_start.read_json(marker))
        write_report(rows, start, config, sweep_dir)
    return rows


def _pct(value):
    return "n/a" if value is None else f"{100 * value:.2f}"


def write_report(rows, start, config, sweep_dir):
    """sweep.json (config, baseline, rows) and sweep.md (one table row per rate)."""
    best = max(rows, key=lambda r: (r["holdout_final"], -r["learning_rate"]))
    write_json_atomic(os.path.join(sweep_dir, "sweep.json"), {
        "baseline": start["baseline"], "max_propagations": config.load.max_propagations,
        "seed": config.run.seed,
        "best_by_holdout": best["learning_rate"], "rows": rows})
    lines = [
        "# Adversarial learning-rate sweep",
        "",
        f"LoAd from one stage-1 model per rate; at most {config.load.max_propagations} "
        f"propagations, seed {config.run.seed}. mIoU in %. Hold-out: LoAd's selection set "
        f"(start, final = the returned model, min/max over the propagations). Unselected val: "
        f"val minus the hold-out, reported only (baseline "
        f"{_pct(start['baseline'].get(UNSELECTED))}). D: hold-out accuracy of each round (fake "
        f"accuracy pooled over g_s's and the newest set's maps).",
        "",
        "| adv lr | hold-out start | hold-out final | hold-out min / max | unselected val final "
        "| peaks | propagations | cycles | D accuracy per round | wall time |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rounds = ", ".join(f"{d['accuracy']:.2f}" for d in r["discriminator_rounds"]) or "-"
        lines.append(
            f"| {r['learning_rate']:g} | {_pct(r['holdout_start'])} | {_pct(r['holdout_final'])} "
            f"| {_pct(r['holdout_min'])} / {_pct(r['holdout_max'])} "
            f"| {_pct(r['unselected_val_final'])} | {r['peaks']} | {r['propagations']} "
            f"| {r['cycles']} | {rounds} | {r['wall_time_s']:.0f} s |")
    lines += ["", f"Highest hold-out final mIoU: adv lr {best['learning_rate']:g} "
              f"({_pct(best['holdout_final'])})."]
    with open(os.path.join(sweep_dir, "sweep.md"), "w", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
