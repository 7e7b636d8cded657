"""LoAd controller: paper Algorithm 3 (dynamic peak finding) with Algorithm 1, resumable.

Pure Python: the training loop injects the TensorFlow work as hooks. Reference (DESIGN.md):

    mu_s = mu = mu_best = eval(g_s);  B = [g_s(X)];  train D on D_t + B;  psi = 0
    while psi < Psi:
        mu_0 = mu_s;  gamma = 0;  omega = 0;  g, mu = g_s, mu_s          (one step back)
        while mu_s - beta_l < mu and gamma < Gamma:
            g = adversarial step;  mu = eval(g)
            if mu > mu_s + beta_u:
                if mu > mu_best: mu_best, g_best = mu, g
                if omega > Omega: mu_s, g_s = mu, g;  omega = 0;  gamma = 0
                omega += 1
            gamma += 1
        g_end = g
        if mu_best > mu_0: g_s, mu_s = g_best, mu_best;  B = [g_best(X), g_end(X)];  psi = 0
        else:              B = append g_end(X) (drop B[1] when |B| = B_max);  psi += 1
        train D on D_t + B
    return g_best (or g_s if no peak was ever found)

One deviation with no effect on the result: the discriminator is not trained after the final
cycle (the loop ends right after it).

Naming: peaks are g_0 (the start), g_1, g_2, ...; cycle j spawned from peak i ends with g_{i,j}
(j = psi at the cycle's start); buffer sets are labelled "g1", "g0_1", ...

Hooks (any object with these methods; see `LoAdHooks`). "Working generator" = the generator the
adversarial steps update, in memory. Tags are "g_s", "g_best", "g_end".

    adversarial_step(propagation: int) -> dict[str, float]
        One generator update on one batch; `propagation` is global, 1-based, so data and
        augmentation can be a function of it. Returns losses (logged).
    evaluate() -> float
        Hold-out mIoU in [0, 1] of the working generator (must not change it).
    save_working(propagation: int) -> None
        Checkpoint the working generator + its optimizer as of after `propagation`.
    restore_working(propagation: int) -> None
        Load that checkpoint. Only the last committed propagation is ever asked for, and a
        checkpoint for propagation n is written before the state saying n: keeping the two most
        recent (e.g. slots n % 2) is enough.
    save_model(tag: str) -> None
        Snapshot the working generator's weights under `tag` (replacing the old snapshot).
    copy_model(src_tag: str, dst_tag: str) -> None
        Make `dst_tag` the same snapshot as `src_tag` (used for g_s <- g_best).
    restore_model(tag: str) -> None
        Load `tag` into the working generator (cycle start: g_s, "one step back"). Whether the
        optimizer slots are reset too is the hook's choice; be consistent.
    write_map_set(tag: str, set_dir: str) -> None
        Write the label maps of snapshot `tag` over the training images into the existing
        empty folder `set_dir` (the buffer renames it when complete). May clobber the working
        generator: the controller restores it before the next step.
    train_discriminator(set_dirs: list[str], round: int) -> dict[str, float]
        Train D on D_t (real) + the sets (fake). Round 0 is the initial training, round r the
        one after the r-th trained cycle. Must leave D saved for `round` and be repeatable:
        a repeat of the same round after a crash starts from D of round - 1.
    restore_discriminator(round: int) -> None
        Load D as saved by round `round` (called only when resuming).
    on_event(event: dict) -> None
        Logging / TensorBoard. Every event has "kind", "seq" (1, 2, ...), "propagation",
        "cycle". Kinds: start, buffer, discriminator, cycle_start (the revert to g_s), propagation
        (mu, mu_s, mu_best, gamma, omega, psi, losses), new_best, dynamic_start, cycle_end
        (reason "diverged" | "patience", peak_found), peak, done (reason, final_tag, mu_final).
        Delivery is at least once: after a resume the last committed events are sent again with
        the same "seq"; drop a seq you have already seen.

Call order. When `run()` starts a run that has no state yet (or whose state is still in phase
"init"), the working generator must hold g_0.
    init:          evaluate, save_model("g_s"), state written, write_map_set("g_s", tmp_dir),
                   train_discriminator(sets, 0)
    cycle start:   restore_model("g_s") (before the first step)
    propagation n: adversarial_step(n), evaluate, save_working(n), state written, then
                   save_model("g_best") and/or save_model("g_s") when decided, state written
    cycle end:     save_model("g_end"), [copy_model("g_best", "g_s") on a peak], state written,
                   write_map_set("g_best" on a peak, then "g_end"), state written,
                   train_discriminator(sets, round + 1) unless the run ends
On resume the controller first re-sends the last committed events, then calls
restore_discriminator(last round) before the next step and restore_working(propagation) or
restore_model("g_s") as the phase requires.

State (`state.json`, written atomically after every decision; all JSON):
    version, config, seed, phase ("init" | "init_buffer" | "init_discriminator" |
    "cycle_start" | "propagate" | "cycle_end" | "done"), cycle_end_step ("save_end" | "buffer"
    | "discriminator"), propagation (completed, global), cycle (0-based, -1 before the first),
    cycle_propagations, psi, gamma, omega, mu_start, mu_0, mu_s, mu, mu_best, best_propagation,
    peak_index (i of the current start g_i), cycle_label ([i, j] of the running cycle),
    cycle_peak_found, end_reason, tags ({tag: {"model", "propagation", "mu"}}; model is "g0",
    "g1", "g0_1", ... or "p<n>" = the working generator after propagation n),
    pending_snapshots (tags to save from working(propagation), written before saving),
    buffer_sets (set names), discriminator_round (-1 before the first), history (all events, in
    order; what `convergence_plot` draws), emitted_through (last seq handed to on_event before
    this write), done_reason, final_tag.
"""
import dataclasses
import math
import os
from typing import Protocol

from deeplab_load.errors import DamagedFileError, NonFiniteError
from deeplab_load.atomic_files import read_json, write_json_atomic

STATE_VERSION = 1
STATE_FILE = "state.json"
PHASES = ("init", "init_buffer", "init_discriminator", "cycle_start", "propagate", "cycle_end",
          "done")


@dataclasses.dataclass(frozen=True)
class LoAdConfig:
    """Algorithm 3 parameters (paper defaults). mIoU values are fractions in [0, 1].

    beta_l: divergence margin below mu_s that ends a cycle.
    beta_u: minimum gain over mu_s for a peak.
    gamma_max (Gamma): divergence patience, propagations per cycle without a start update.
    psi_max (Psi): cycles without a new peak before the run stops.
    omega_max (Omega): peak-finder patience before the dynamic start update.
    b_max (B_max): buffer capacity in label-map sets (>= 2).
    max_propagations: optional safety cap on propagations of the whole run (None = unlimited).
    """
    beta_l: float = 0.05
    beta_u: float = 0.001
    gamma_max: int = 50
    psi_max: int = 50
    omega_max: int = 10
    b_max: int = 3
    max_propagations: int | None = None

    def __post_init__(self):
        def require(ok, message):
            if not ok:
                raise ValueError(f"LoAdConfig: {message}")
        for name in ("beta_l", "beta_u"):
            value = getattr(self, name)
            require(isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value < 1,
                    f"{name} must be a number in [0, 1), got {value!r}")
        require(self.beta_l > 0, f"beta_l must be > 0 (else a cycle can end before its first "
                                 f"propagation), got {self.beta_l!r}")
        for name, low in (("gamma_max", 1), ("psi_max", 1), ("omega_max", 0), ("b_max", 2)):
            value = getattr(self, name)
            require(isinstance(value, int) and not isinstance(value, bool) and value >= low,
                    f"{name} must be an integer >= {low}, got {value!r}")
        cap = self.max_propagations
        require(cap is None or (isinstance(cap, int) and not isinstance(cap, bool) and cap >= 1),
                f"max_propagations must be None or an integer >= 1, got {cap!r}")


class LoAdHooks(Protocol):
    """The injected TensorFlow side (see the module docstring for the contract)."""

    def adversarial_step(self, propagation: int) -> dict: ...
    def evaluate(self) -> float: ...
    def save_working(self, propagation: int) -> None: ...
    def restore_working(self, propagation: int) -> None: ...
    def save_model(self, tag: str) -> None: ...
    def copy_model(self, src_tag: str, dst_tag: str) -> None: ...
    def restore_model(self, tag: str) -> None: ...
    def write_map_set(self, tag: str, set_dir: str) -> None: ...
    def train_discriminator(self, set_dirs: list, round: int) -> dict: ...
    def restore_discriminator(self, round: int) -> None: ...
    def on_event(self, event: dict) -> None: ...


@dataclasses.dataclass(frozen=True)
class LoAdResult:
    """Outcome: `final_tag` ("g_best" or "g_s") holds the returned generator."""
    final_tag: str
    mu_final: float
    mu_start: float
    propagations: int
    cycles: int
    peaks: int
    reason: str


def scalars(values):
    """{name: float} from a hook's dict of numbers / numpy or TF scalars (None -> {})."""
    return {str(k): float(v) for k, v in (values or {}).items()}


def check_finite(values, what, where):
    """NonFiniteError naming `where` when a number of `values` ({name: float}) is NaN / Inf.

    Raised before the state is written: state.json stays valid JSON and keeps the last good
    propagation, whose checkpoint stays the resume point."""
    bad = {name: value for name, value in values.items() if not math.isfinite(value)}
    if bad:
        shown = ", ".join(f"{name} = {value}" for name, value in sorted(bad.items()))
        raise NonFiniteError(
            f"LoAd {where}: {what} {shown}; the run stops (state.json and the checkpoints keep "
            f"the last good step; resuming repeats the same computation). Lower the learning "
            f"rate (--adv_learning_rate / --disc_learning_rate) or start from other weights.")


def initial_state(config, seed):
    return {
        "version": STATE_VERSION, "config": dataclasses.asdict(config), "seed": seed,
        "phase": "init", "cycle_end_step": None, "propagation": 0, "cycle": -1,
        "cycle_propagations": 0, "psi": 0, "gamma": 0, "omega": 0,
        "mu_start": None, "mu_0": None, "mu_s": None, "mu": None, "mu_best": None,
        "best_propagation": None, "peak_index": 0, "cycle_label": None,
        "cycle_peak_found": None, "end_reason": None, "tags": {}, "pending_snapshots": [],
        "buffer_sets": [], "discriminator_round": -1, "history": [], "emitted_through": 0,
        "done_reason": None, "final_tag": None,
    }


def load_state(path):
    """Reads a LoAd state file (DamagedFileError naming the file if it is not one)."""
    fix = ("delete it, events.jsonl and buffer/ beside it to restart LoAd from the stage-1 "
           "model, or delete the run dir")
    state = read_json(path, fix=fix)
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise DamagedFileError(f"{path}: not a LoAd state file of version {STATE_VERSION}; {fix}")
    if state.get("phase") not in PHASES:
        raise DamagedFileError(f"{path}: unknown phase {state.get('phase')!r}; {fix}")
    return state


class LoAdController:
    """Runs Algorithm 3 over `hooks`, persisting to `state_path`, with a `MapBuffer`."""

    def __init__(self, config, hooks, state_path, buffer, seed=0):
        if buffer.max_sets != config.b_max:
            raise ValueError(f"{buffer.index_path}: buffer max_sets={buffer.max_sets} differs "
                             f"from LoAdConfig.b_max={config.b_max}")
        self.config = config
        self.hooks = hooks
        self.state_path = os.fspath(state_path)
        self.buffer = buffer
        self.seed = seed
        self.state = None
        self._working = None          # which model the working generator holds, if known
        self._discriminator_ready = False
        self._emitted = 0

    # Public.

    def run(self):
        """Runs (or resumes) to the end; returns LoAdResult."""
        self._open()
        handlers = {"init": self._init, "init_buffer": self._init_buffer,
                    "init_discriminator": self._init_discriminator,
                    "cycle_start": self._cycle_start, "propagate": self._propagate,
                    "cycle_end": self._cycle_end}
        while self.state["phase"] != "done":
            handlers[self.state["phase"]]()
        return self.result()

    def result(self):
        s = self.state
        if s is None or s["phase"] != "done":
            raise RuntimeError(f"{self.state_path}: LoAd run has not finished")
        return LoAdResult(final_tag=s["final_tag"], mu_final=s["tags"][s["final_tag"]]["mu"],
                          mu_start=s["mu_start"], propagations=s["propagation"],
                          cycles=s["cycle"] + 1, peaks=s["peak_index"], reason=s["done_reason"])

    # Persistence.

    def _open(self):
        if os.path.exists(self.state_path):
            state = load_state(self.state_path)
            self._check_compatible(state)
            self.state = state
            self._emitted = state["emitted_through"]
            resend = [e for e in state["history"] if e["seq"] > self._emitted]
            self._deliver(resend)
        else:
            os.makedirs(os.path.dirname(os.path.abspath(self.state_path)), exist_ok=True)
            self.state = initial_state(self.config, self.seed)
        self._working = None
        self._discriminator_ready = False

    def _check_compatible(self, state):
        saved = dict(state["config"])
        wanted = dataclasses.asdict(self.config)
        saved.pop("max_propagations", None)
        wanted.pop("max_propagations")
        differing = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
        if differing:
            raise ValueError(f"{self.state_path}: cannot resume, LoAd config differs in "
                             f"{differing} (saved {[saved.get(k) for k in differing]}, "
                             f"given {[wanted.get(k) for k in differing]})")
        if state["seed"] != self.seed:
            raise ValueError(f"{self.state_path}: cannot resume, seed {state['seed']} != "
                             f"{self.seed}")
        # The cap may be changed on resume.
        state["config"]["max_propagations"] = self.config.max_propagations

    def _commit(self, events=()):
        """Appends `events` to the history, writes the state atomically, then delivers them."""
        s = self.state
        seq = s["history"][-1]["seq"] if s["history"] else 0
        new_events = []
        for event in events:
            seq += 1
            event = {"kind": event["kind"], "seq": seq, "propagation": s["propagation"],
                     "cycle": s["cycle"], **event}
            s["history"].append(event)
            new_events.append(event)
        s["emitted_through"] = self._emitted
        write_json_atomic(self.state_path, s)
        self._deliver(new_events)

    def _deliver(self, events):
        for event in events:
            self.hooks.on_event(dict(event))
            self._emitted = event["seq"]

    # Side-effect helpers.

    def _ensure_discriminator(self):
        s = self.state
        if not self._discriminator_ready and s["discriminator_round"] >= 0:
            self.hooks.restore_discriminator(s["discriminator_round"])
        self._discriminator_ready = True

    def _ensure_working(self):
        """Puts the model the state says is current into the working generator."""
        s = self.state
        if s["cycle_propagations"] == 0:
            wanted = ("g_s", s["cycle"])
        else:
            wanted = ("propagation", s["propagation"])
        if self._working == wanted:
            return
        if wanted[0] == "g_s":
            self.hooks.restore_model("g_s")
        else:
            self.hooks.restore_working(s["propagation"])
        self._working = wanted

    def _writer(self, tag):
        return lambda set_dir: self.hooks.write_map_set(tag, set_dir)

    def _evaluate(self, where):
        value = self.hooks.evaluate()
        try:
            mu = float(value)
        except (TypeError, ValueError):
            mu = math.nan
        check_finite({"mIoU": mu}, "hold-out", where)
        return mu

    def _train_discriminator(self, round_):
        metrics = scalars(self.hooks.train_discriminator(self.buffer.set_dirs(), round_))
        check_finite(metrics, "discriminator", f"discriminator round {round_} (after "
                                               f"propagation {self.state['propagation']})")
        return metrics

    # Initialisation: mu_s, mu, mu_best <- eval(g_0); B = [g_0(X)]; train D.

    def _init(self):
        mu = self._evaluate("start (the initial generator g_0)")
        self.hooks.save_model("g_s")
        s = self.state
        s.update(mu_start=mu, mu_0=mu, mu_s=mu, mu=mu, mu_best=mu, phase="init_buffer")
        s["tags"]["g_s"] = {"model": "g0", "propagation": 0, "mu": mu}
        self._commit([{"kind": "start", "mu": mu, "mu_s": mu, "model": "g0"}])

    def _init_buffer(self):
        sets = self.buffer.start(self._writer("g_s"), "g0", op_id="init")
        self.state.update(buffer_sets=[m.name for m in sets], phase="init_discriminator")
        self._commit([{"kind": "buffer", "action": "start", "sets": self.state["buffer_sets"]}])

    def _init_discriminator(self):
        metrics = self._train_discriminator(0)
        self._discriminator_ready = True
        self.state.update(discriminator_round=0, phase="cycle_start")
        self._commit([{"kind": "discriminator", "round": 0, "metrics": metrics}])

    # One cycle.

    def _cycle_start(self):
        s = self.state
        s["cycle"] += 1
        s.update(mu_0=s["mu_s"], gamma=0, omega=0, mu=s["mu_s"], cycle_propagations=0,
                 cycle_label=[s["peak_index"], s["psi"]], cycle_peak_found=None,
                 end_reason=None, cycle_end_step=None, phase="propagate")
        self._commit([{"kind": "cycle_start", "mu_s": s["mu_s"], "model": f"g{s['peak_index']}",
                       "label": "g{}_{}".format(*s["cycle_label"]), "psi": s["psi"]}])

    def _propagate(self):
        s, cfg = self.state, self.config
        if s["pending_snapshots"]:
            self._save_pending()
            return
        if not (s["mu_s"] - cfg.beta_l < s["mu"] and s["gamma"] < cfg.gamma_max):
            self._end_cycle()
            return
        if cfg.max_propagations is not None and s["propagation"] >= cfg.max_propagations:
            self._finish("max_propagations")
            return
        self._ensure_discriminator()
        self._ensure_working()
        n = s["propagation"] + 1
        losses = scalars(self.hooks.adversarial_step(n))
        check_finite(losses, "generator", f"propagation {n}")
        mu = self._evaluate(f"propagation {n}")
        self.hooks.save_working(n)
        self._working = ("propagation", n)

        s.update(propagation=n, cycle_propagations=s["cycle_propagations"] + 1, mu=mu)
        events, pending = [], []
        if mu > s["mu_s"] + cfg.beta_u:
            if mu > s["mu_best"]:
                s.update(mu_best=mu, best_propagation=n)
                pending.append("g_best")
                events.append({"kind": "new_best", "mu": mu})
            if s["omega"] > cfg.omega_max:
                s.update(mu_s=mu, omega=0, gamma=0)
                pending.append("g_s")
                events.append({"kind": "dynamic_start", "mu_s": mu})
            s["omega"] += 1
        s["gamma"] += 1
        s["pending_snapshots"] = pending
        events.insert(0, {"kind": "propagation", "mu": mu, "mu_s": s["mu_s"],
                          "mu_best": s["mu_best"], "gamma": s["gamma"], "omega": s["omega"],
                          "psi": s["psi"], "losses": losses})
        self._commit(events)
        if pending:
            self._save_pending()

    def _save_pending(self):
        s = self.state
        self._ensure_working()
        for tag in s["pending_snapshots"]:
            self.hooks.save_model(tag)
            s["tags"][tag] = {"model": f"p{s['propagation']}", "propagation": s["propagation"],
                              "mu": s["mu"]}
        s["pending_snapshots"] = []
        self._commit()

    def _end_cycle(self):
        """Decides the cycle's outcome (no side effects; they follow in `_cycle_end`)."""
        s, cfg = self.state, self.config
        reason = "patience" if s["mu_s"] - cfg.beta_l < s["mu"] else "diverged"
        peak = s["mu_best"] > s["mu_0"]
        events = [{"kind": "cycle_end", "mu": s["mu"], "reason": reason, "peak_found": peak,
                   "label": "g{}_{}".format(*s["cycle_label"])}]
        if peak:
            s["peak_index"] += 1
            s.update(mu_s=s["mu_best"], psi=0)
            events.append({"kind": "peak", "at_propagation": s["best_propagation"],
                           "mu": s["mu_best"], "label": f"g{s['peak_index']}"})
        else:
            s["psi"] += 1
        s.update(phase="cycle_end", cycle_end_step="save_end", end_reason=reason,
                 cycle_peak_found=peak)
        self._commit(events)

    def _cycle_end(self):
        s = self.state
        step = s["cycle_end_step"]
        end_label = "g{}_{}".format(*s["cycle_label"])
        if step == "save_end":
            self._ensure_working()
            self.hooks.save_model("g_end")
            s["tags"]["g_end"] = {"model": end_label, "propagation": s["propagation"],
                                  "mu": s["mu"]}
            if s["cycle_peak_found"]:
                self.hooks.copy_model("g_best", "g_s")
                s["tags"]["g_best"]["model"] = f"g{s['peak_index']}"
                s["tags"]["g_s"] = dict(s["tags"]["g_best"])
            s["cycle_end_step"] = "buffer"
            self._commit()
        elif step == "buffer":
            op_id = f"cycle_{s['cycle']}"
            if s["cycle_peak_found"]:
                sets = self.buffer.flush(self._writer("g_best"), self._writer("g_end"),
                                         f"g{s['peak_index']}", end_label, op_id=op_id)
                action = "flush"
            else:
                sets = self.buffer.append(self._writer("g_end"), end_label, op_id=op_id)
                action = "append"
            self._working = None
            s.update(buffer_sets=[m.name for m in sets], cycle_end_step="discriminator")
            self._commit([{"kind": "buffer", "action": action, "sets": s["buffer_sets"]}])
        elif step == "discriminator" and s["psi"] >= self.config.psi_max:
            self._finish("no_peak_in_psi_cycles")
        elif step == "discriminator":
            round_ = s["discriminator_round"] + 1
            self._discriminator_ready = False
            metrics = self._train_discriminator(round_)
            self._discriminator_ready = True
            self._working = None
            s.update(discriminator_round=round_, phase="cycle_start", cycle_end_step=None)
            self._commit([{"kind": "discriminator", "round": round_, "metrics": metrics}])
        else:
            raise ValueError(f"{self.state_path}: unknown cycle_end_step {step!r}")

    def _finish(self, reason):
        s = self.state
        final_tag = "g_best" if "g_best" in s["tags"] else "g_s"
        s.update(phase="done", done_reason=reason, final_tag=final_tag)
        self._commit([{"kind": "done", "reason": reason, "final_tag": final_tag,
                       "mu_final": s["tags"][final_tag]["mu"], "mu_start": s["mu_start"]}])
