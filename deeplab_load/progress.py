"""Progress lines (step, losses, mIoU, rate, ETA) for long-running loops."""
import time

from absl import logging


def format_duration(seconds):
    """Seconds -> '1h02m', '3m05s' or '12s'."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def format_value(value):
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class Progress:
    """Logs `<name> <step>/<total> k=v ... | <rate> it/s ETA <t>` at most every `interval` s.

    `total` may be None when the loop length is unknown (then no ETA is shown).
    """

    def __init__(self, name, total=None, interval=5.0, clock=time.monotonic, log=logging.info):
        self.name = name
        self.total = total
        self.interval = interval
        self.clock = clock
        self.log = log
        self.start = clock()
        self.first_step = None
        self.last_print = None

    def line(self, step, **metrics):
        now = self.clock()
        if self.first_step is None:
            self.first_step, self.start = step, now
        done = step - self.first_step
        elapsed = now - self.start
        rate = done / elapsed if elapsed > 0 and done > 0 else None
        parts = [f"{self.name} {step}" + (f"/{self.total}" if self.total else "")]
        parts += [f"{k} {format_value(v)}" for k, v in metrics.items()]
        tail = []
        if rate:
            tail.append(f"{rate:.2f} it/s")
            if self.total:
                tail.append(f"ETA {format_duration((self.total - step) / rate)}")
        tail.append(f"elapsed {format_duration(elapsed)}")
        return "  ".join(parts) + " | " + " ".join(tail)

    def update(self, step, force=False, **metrics):
        """Logs a progress line if `interval` seconds passed since the last one (or `force`)."""
        now = self.clock()
        text = self.line(step, **metrics)
        if force or self.last_print is None or now - self.last_print >= self.interval:
            self.last_print = now
            self.log(text)
        return text
