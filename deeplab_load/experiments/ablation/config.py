"""AblationConfig: what the ablation runs besides the TrainConfig every arm shares; its fields
are the ablation tool's flags (`config_fields`)."""
import dataclasses
import math

from deeplab_load.config_fields import option
from deeplab_load.errors import FlagError
from deeplab_load.experiments.ablation.arm_names import GROUPS, parse_groups


def _groups(name, values):
    try:
        return parse_groups(",".join(values))
    except ValueError as err:
        raise FlagError(str(err)) from err


def _floats(name, values):
    try:
        return tuple(float(v) for v in values if v.strip())
    except ValueError as err:
        raise FlagError(f"--{name} must be numbers, got {','.join(values)}") from err


@dataclasses.dataclass(frozen=True)
class AblationConfig:
    """groups: `arm_names.GROUPS` to run (the baseline is always reported).
    num_seeds: seeds TrainConfig.seed, seed + 1, ... (each runs every selected arm).
    arm_steps: generator steps of every arm; 0 = as many as the LoAd arm of the seed took
      propagations (LoAd then runs first). With arm_steps > 0 the controller-driven arms (LoAd,
      (b'), (g)) are capped at it (they may stop earlier by their own rule).
    hybrid_weights: lambdas of the hybrid arms (f), CE + lambda adv.
    bootstrap_resamples, confidence: of the paired bootstrap intervals in the report.
    ablation_dir: where the arms' runs and the report go (None: the tool's default).
    """
    groups: tuple = option(
        GROUPS, f"Arm groups to run, a comma list of {', '.join(GROUPS)}, or all (the baseline "
        "is always reported).", flag="arms", parse=_groups)
    num_seeds: int = option(3, "Seeds --seed, --seed + 1, ... (each runs every selected arm).")
    arm_steps: int = option(0, "Generator steps of every arm; 0 = as many as the seed's LoAd arm "
                               "took propagations.")
    hybrid_weights: tuple = option((0.01, 0.1), "Lambdas of the hybrid arms (f), CE + lambda "
                                   "adv.", parse=_floats)
    bootstrap_resamples: int = option(10000, "Resamples of the report's paired bootstrap "
                                             "intervals.")
    confidence: float = option(0.95, "Confidence of the report's bootstrap intervals.",
                               flag="bootstrap_confidence")
    ablation_dir: str = option(None, "Where the arms' runs and the report go (default: "
                                     "runs/ablation_<dataset>).")

    def __post_init__(self):
        object.__setattr__(self, "groups", parse_groups(",".join(self.groups)))
        object.__setattr__(self, "hybrid_weights", tuple(float(w) for w in self.hybrid_weights))
        problems = []
        if not (isinstance(self.num_seeds, int) and self.num_seeds >= 1):
            problems.append(f"--num_seeds must be an integer >= 1, got {self.num_seeds!r}")
        if not (isinstance(self.arm_steps, int) and self.arm_steps >= 0):
            problems.append(f"--arm_steps must be an integer >= 0, got {self.arm_steps!r}")
        if "hybrid" in self.groups and not self.hybrid_weights:
            problems.append("--hybrid_weights is empty but --arms selects hybrid")
        if any(not math.isfinite(w) or w < 0 for w in self.hybrid_weights):
            problems.append(f"--hybrid_weights must be finite numbers >= 0, got "
                            f"{list(self.hybrid_weights)}")
        if len(set(f"{w:g}" for w in self.hybrid_weights)) != len(self.hybrid_weights):
            problems.append(f"--hybrid_weights repeats a value: {list(self.hybrid_weights)}")
        if not (isinstance(self.bootstrap_resamples, int) and self.bootstrap_resamples >= 1):
            problems.append(f"--bootstrap_resamples must be an integer >= 1, got "
                            f"{self.bootstrap_resamples!r}")
        if not 0 < self.confidence < 1:
            problems.append(f"--bootstrap_confidence must be in (0, 1), got {self.confidence!r}")
        if problems:
            raise ValueError("; ".join(problems))
