"""The ablation's arms: ids in table order, titles, and the `--arms` groups that select them.

Groups (one `--arms` entry each) and the arm ids they hold:

    baseline                 baseline                    (a) the stage-1 model
    cross_entropy            cross_entropy               (b) CE, generator's optimizer, last
    cross_entropy_selected   cross_entropy_selected      (b') the same CE steps under LoAd's
                                                         controller (lookahead, hold-out
                                                         selection, no D)
    adversarial              adversarial_last/_best      (c)/(d) plain adversarial
    load                     load                        (e) LoAd
    hybrid                   hybrid_<lambda>_last/_best  (f) CE + lambda adv, per lambda
    selection_only           selection_only              (g) LoAd with the generator's lr 0
"""
GROUPS = ("baseline", "cross_entropy", "cross_entropy_selected", "adversarial", "load",
          "hybrid", "selection_only")
# Groups whose arms take the step budget from the LoAd arm of the same seed.
CONTROL_GROUPS = ("cross_entropy", "cross_entropy_selected", "adversarial", "hybrid",
                  "selection_only")
LOAD = "load"
BASELINE = "baseline"

_TITLES = {
    "baseline": "(a) stage-1 baseline",
    "cross_entropy": "(b) + CE, generator's optimizer (last)",
    "cross_entropy_selected": "(b') + the same CE steps under LoAd's controller, no D",
    "adversarial_last": "(c) + adversarial, no lookahead (last)",
    "adversarial_best": "(d) + adversarial, no lookahead (best hold-out)",
    "load": "(e) + LoAd",
    "selection_only": "(g) LoAd with the generator's lr 0 (selection only)",
}


def hybrid_arm(weight, which):
    """Arm id of the hybrid loss CE + `weight` adv, `which` = "last" | "best"."""
    return f"hybrid_{weight:g}_{which}"


def parse_groups(text):
    """`--arms` value (comma list of GROUPS, or "all") -> tuple of groups in GROUPS order."""
    names = [name.strip() for name in str(text).split(",") if name.strip()]
    if not names or names == ["all"]:
        return GROUPS
    unknown = sorted(set(names) - set(GROUPS))
    if unknown:
        raise ValueError(f"--arms: unknown arm group(s) {unknown}; choose from "
                         f"{', '.join(GROUPS)} (comma list) or all")
    return tuple(group for group in GROUPS if group in names)


def group_arms(group, hybrid_weights):
    """Arm ids of one group, in table order."""
    if group == "adversarial":
        return ["adversarial_last", "adversarial_best"]
    if group == "hybrid":
        return [hybrid_arm(w, which) for w in hybrid_weights for which in ("last", "best")]
    return [group]


def arm_ids(groups, hybrid_weights):
    """Arm ids of `groups` in table order; the baseline is always first."""
    ids = [BASELINE]
    for group in groups:
        ids += [arm for arm in group_arms(group, hybrid_weights) if arm not in ids]
    return ids


def title(arm):
    if arm in _TITLES:
        return _TITLES[arm]
    if arm.startswith("hybrid_"):
        _, weight, which = arm.split("_")
        return f"(f) + CE + {weight} adv, no lookahead ({'best hold-out' if which == 'best' else which})"
    raise KeyError(f"unknown ablation arm {arm!r}")


def letter(arm):
    """"(a)", "(b')", ... of an arm."""
    return title(arm).split(" ", 1)[0]
