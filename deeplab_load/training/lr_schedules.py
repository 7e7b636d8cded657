"""research/deeplab's learning policies (`utils/train_utils.get_model_learning_rate`) as a Keras
LearningRateSchedule, for stage 1.

The rate of the update at optimizer iteration t (0-based; the t-th step uses t, as the
original's global step) is, with t' = max(t - slow_start_step, 0):

    constant  base
    poly      (base - end) * (1 - min(t', D) / D) ** power + end,  D = total_steps - slow_start_step
    step      base * decay_factor ** floor(t' / decay_step)

and slow_start_learning_rate instead while t < slow_start_step. After the last step
(t = total_steps) poly has reached `end`. The schedule holds no variables: it is a function of
the optimizer's `iterations`, which the checkpoints keep, so a resumed run continues it exactly.
"""
import keras
from keras import ops

POLICIES = ("constant", "poly", "step")


@keras.saving.register_keras_serializable(package="deeplab_load")
class DeepLabLearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """Learning rate (float32 scalar) at optimizer iteration `step`; see the module docstring."""

    def __init__(self, policy, base_learning_rate, total_steps, power=0.9,
                 end_learning_rate=0.0, decay_step=2000, decay_factor=0.1, slow_start_step=0,
                 slow_start_learning_rate=1e-4):
        if policy not in POLICIES:
            raise ValueError(f"learning policy must be one of {POLICIES}, got {policy!r}")
        if policy == "poly" and total_steps <= slow_start_step:
            raise ValueError(f"poly learning policy: the step budget ({total_steps} steps) must "
                             f"exceed the slow start ({slow_start_step} steps)")
        if decay_step < 1:
            raise ValueError(f"step learning policy: decay_step must be >= 1, got {decay_step}")
        self.policy = policy
        self.base_learning_rate = float(base_learning_rate)
        self.total_steps = int(total_steps)
        self.power = float(power)
        self.end_learning_rate = float(end_learning_rate)
        self.decay_step = int(decay_step)
        self.decay_factor = float(decay_factor)
        self.slow_start_step = int(slow_start_step)
        self.slow_start_learning_rate = float(slow_start_learning_rate)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        adjusted = ops.maximum(step - self.slow_start_step, 0.0)
        if self.policy == "poly":
            decay_steps = float(self.total_steps - self.slow_start_step)
            remaining = 1.0 - ops.minimum(adjusted, decay_steps) / decay_steps
            rate = ((self.base_learning_rate - self.end_learning_rate)
                    * ops.power(remaining, self.power) + self.end_learning_rate)
        elif self.policy == "step":
            rate = self.base_learning_rate * ops.power(
                self.decay_factor, ops.floor(adjusted / self.decay_step))
        else:
            rate = ops.full((), self.base_learning_rate, "float32")
        if self.slow_start_step > 0:
            rate = ops.where(step < self.slow_start_step, self.slow_start_learning_rate, rate)
        return ops.cast(rate, "float32")

    def get_config(self):
        return {"policy": self.policy, "base_learning_rate": self.base_learning_rate,
                "total_steps": self.total_steps, "power": self.power,
                "end_learning_rate": self.end_learning_rate, "decay_step": self.decay_step,
                "decay_factor": self.decay_factor, "slow_start_step": self.slow_start_step,
                "slow_start_learning_rate": self.slow_start_learning_rate}

    def __repr__(self):
        return (f"{self.policy} learning rate {self.base_learning_rate:g} over "
                f"{self.total_steps} steps")


def stage1_learning_rate(config, total_steps):
    """Stage 1's learning rate of TrainConfig `config`: the float --stage1_learning_rate for the
    constant policy without slow start (the paper's; the optimizer then keeps it in a variable, as
    before), else a `DeepLabLearningRate` over `total_steps` (stage 1's step budget)."""
    if config.stage1.learning_policy == "constant" and config.stage1.slow_start_step == 0:
        return config.stage1.learning_rate
    return DeepLabLearningRate(
        config.stage1.learning_policy, config.stage1.learning_rate, total_steps,
        power=config.stage1.learning_power, end_learning_rate=config.stage1.end_learning_rate,
        decay_step=config.stage1.learning_rate_decay_step,
        decay_factor=config.stage1.learning_rate_decay_factor,
        slow_start_step=config.stage1.slow_start_step,
        slow_start_learning_rate=config.stage1.slow_start_learning_rate)


def current_learning_rate(optimizer):
    """The rate (float) `optimizer`'s next update uses (a schedule at its current iteration)."""
    return float(ops.convert_to_numpy(optimizer.learning_rate))


def describe_learning_rate(optimizer):
    """'0.05 (constant)' or the schedule's parameters, for logs."""
    value = optimizer.get_config()["learning_rate"]
    if isinstance(value, dict):
        config = value.get("config", {})
        return ", ".join(f"{k} {v}" for k, v in config.items())
    return f"{value:g} (constant)"
