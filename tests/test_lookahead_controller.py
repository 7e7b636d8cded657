"""LoAd controller (Algorithm 3): scripted mIoU sequences through every branch, Fig. 1, resume."""
import itertools
import json
import math
import os
import sys
import zlib

import numpy as np
import pytest

from deeplab_load.errors import DamagedFileError, NonFiniteError
from deeplab_load.lookahead import LoAdConfig, LoAdController, MapBuffer, load_state


class Killed(Exception):
    """Simulated process kill raised from a hook."""


class Disk:
    """What survives a kill: snapshots, working checkpoints, discriminators, the event log."""

    def __init__(self):
        self.tags = {}
        self.working_slots = {}
        self.discriminators = {}
        self.events = []
        self.calls = []


class FakeHooks:
    """Deterministic stand-in for the TensorFlow side.

    The "generator" is the tuple of (propagation, discriminator) updates applied to g0, the
    "discriminator" a checksum of its training sets; mIoU is `mu_of(model)`.
    """

    MAP_FILES = 3

    def __init__(self, disk, mu_of, kill_at=None, kill_after=False):
        self.disk = disk
        self.mu_of = mu_of
        self.kill_at = kill_at
        self.kill_after = kill_after
        self.count = 0
        self.model = ()
        self.discriminator = "d_init"

    def _call(self, name, *args):
        self.count += 1
        self.disk.calls.append((name,) + args)
        if self.count == self.kill_at and not self.kill_after:
            raise Killed(name)

    def _done(self):
        if self.count == self.kill_at and self.kill_after:
            raise Killed("after")

    def adversarial_step(self, propagation):
        self._call("adversarial_step", propagation)
        self.model = self.model + ((propagation, self.discriminator),)
        self._done()
        return {"loss_g": 0.5 + propagation / 100}

    def evaluate(self):
        self._call("evaluate")
        self._done()
        return self.mu_of(self.model)

    def save_working(self, propagation):
        self._call("save_working", propagation)
        self.disk.working_slots[propagation % 2] = (propagation, self.model)
        self._done()

    def restore_working(self, propagation):
        self._call("restore_working", propagation)
        saved_propagation, model = self.disk.working_slots[propagation % 2]
        assert saved_propagation == propagation, "working slot overwritten before commit"
        self.model = model
        self._done()

    def save_model(self, tag):
        self._call("save_model", tag)
        self.disk.tags[tag] = self.model
        self._done()

    def copy_model(self, src_tag, dst_tag):
        self._call("copy_model", src_tag, dst_tag)
        self.disk.tags[dst_tag] = self.disk.tags[src_tag]
        self._done()

    def restore_model(self, tag):
        self._call("restore_model", tag)
        self.model = self.disk.tags[tag]
        self._done()

    def write_map_set(self, tag, set_dir):
        self.model = ("clobbered",)  # allowed: the controller restores before the next step
        for k in range(self.MAP_FILES):
            self._call("write_map", tag, k)
            with open(os.path.join(set_dir, f"map_{k}.txt"), "w") as f:
                f.write(repr(self.disk.tags[tag]))
            self._done()

    def train_discriminator(self, set_dirs, round):
        self._call("train_discriminator", round)
        previous = self.disk.discriminators.get(round - 1, "d_init")
        contents = [previous]
        for set_dir in set_dirs:
            for name in sorted(os.listdir(set_dir)):
                with open(os.path.join(set_dir, name)) as f:
                    contents.append(f.read())
        self.discriminator = f"d{round}_{zlib.crc32(repr(contents).encode()):08x}"
        self.disk.discriminators[round] = self.discriminator
        self._done()
        return {"accuracy": 0.9}

    def restore_discriminator(self, round):
        self._call("restore_discriminator", round)
        self.discriminator = self.disk.discriminators[round]
        self._done()

    def on_event(self, event):
        self._call("on_event", event["kind"])
        self.disk.events.append(event)
        self._done()


def scripted(mu_start, mu_by_propagation):
    """mIoU of a model = the script's value for its last propagation (mu_start for g0)."""
    def mu_of(model):
        return mu_start if not model else mu_by_propagation[model[-1][0]]
    return mu_of


def run_loaded(tmp_path, config, mu_of, seed=0):
    disk = Disk()
    buffer = MapBuffer(tmp_path / "buffer", config.b_max)
    controller = LoAdController(config, FakeHooks(disk, mu_of), tmp_path / "state.json", buffer,
                                seed=seed)
    result = controller.run()
    return result, controller.state, disk, buffer


def kinds(state, kind):
    return [e for e in state["history"] if e["kind"] == kind]


def buffer_labels(state):
    """Buffer contents after each buffer update, as labels (["g0"], ["g0", "g0_0"], ...)."""
    return [[name.split("_", 3)[3] for name in e["sets"]] for e in kinds(state, "buffer")]


def test_immediate_divergence_ends_cycle_after_one_propagation(tmp_path):
    config = LoAdConfig(gamma_max=5, psi_max=2, omega_max=2)
    # mu_s - beta_l = 0.45: 0.44 diverges at once in both cycles.
    result, state, disk, _ = run_loaded(tmp_path, config, scripted(0.5, {1: 0.44, 2: 0.40}))
    ends = kinds(state, "cycle_end")
    assert [(e["propagation"], e["reason"], e["peak_found"]) for e in ends] == [
        (1, "diverged", False), (2, "diverged", False)]
    assert result.final_tag == "g_s" and result.mu_final == 0.5 and result.peaks == 0
    assert result.reason == "no_peak_in_psi_cycles" and result.propagations == 2
    # Each cycle starts from g_s = g0 again ("one step back").
    assert [c[1] for c in disk.calls if c[0] == "restore_model"] == ["g_s", "g_s"]
    assert disk.tags["g_s"] == ()


def test_a_value_exactly_at_the_lower_bound_diverges(tmp_path):
    config = LoAdConfig(beta_l=0.25, gamma_max=5, psi_max=1)
    _, state, _, _ = run_loaded(tmp_path, config, scripted(0.5, {1: 0.25}))
    assert kinds(state, "cycle_end")[0]["reason"] == "diverged"
    assert state["propagation"] == 1


def test_patience_gamma_ends_cycle_without_peak(tmp_path):
    config = LoAdConfig(gamma_max=4, psi_max=1, omega_max=10)
    # Within (mu_s - beta_l, mu_s + beta_u]: neither diverging nor a peak (0.5005 < 0.501).
    script = {1: 0.49, 2: 0.5005, 3: 0.47, 4: 0.48, 5: 0.9}
    result, state, _, _ = run_loaded(tmp_path, config, scripted(0.5, script))
    (end,) = kinds(state, "cycle_end")
    assert (end["propagation"], end["reason"], end["peak_found"]) == (4, "patience", False)
    assert [e["gamma"] for e in kinds(state, "propagation")] == [1, 2, 3, 4]
    assert [e["omega"] for e in kinds(state, "propagation")] == [0, 0, 0, 0]
    assert result.propagations == 4 and result.final_tag == "g_s"


def test_new_peak_flushes_buffer_and_becomes_start(tmp_path):
    config = LoAdConfig(gamma_max=3, psi_max=1, omega_max=10)
    script = {1: 0.53, 2: 0.56, 3: 0.52,      # cycle 0: peak g1 = propagation 2, ends patience
              4: 0.50, 5: 0.49, 6: 0.48}      # cycle 1 (from g1, bound 0.51): diverges at 4
    result, state, disk, buffer = run_loaded(tmp_path, config, scripted(0.5, script))
    (peak,) = kinds(state, "peak")
    assert (peak["at_propagation"], peak["mu"], peak["label"]) == (2, 0.56, "g1")
    assert [e["kind"] for e in state["history"] if e["kind"] in ("new_best", "peak")] == [
        "new_best", "new_best", "peak"]
    ends = kinds(state, "cycle_end")
    assert [(e["propagation"], e["reason"]) for e in ends] == [(3, "patience"), (4, "diverged")]
    starts = kinds(state, "cycle_start")
    assert [(s["mu_s"], s["model"]) for s in starts] == [(0.5, "g0"), (0.56, "g1")]
    assert buffer_labels(state) == [["g0"], ["g1", "g0_0"], ["g1", "g0_0", "g1_0"]]
    # The peak set holds g1's maps (the model after propagation 2), the end set g_{0,0}'s.
    peak_dir, end_dir, _ = buffer.set_dirs()
    assert open(os.path.join(peak_dir, "map_0.txt")).read() == repr(disk.tags["g_best"])
    assert [p for p, _ in disk.tags["g_best"]] == [1, 2]
    assert open(os.path.join(end_dir, "map_0.txt")).read().count("(") == 1 + 3  # 3 steps
    assert disk.tags["g_s"] == disk.tags["g_best"]
    assert result.final_tag == "g_best" and result.mu_final == 0.56 and result.peaks == 1


def test_dynamic_start_update_after_omega_resets_counters(tmp_path):
    config = LoAdConfig(gamma_max=3, psi_max=1, omega_max=1)
    # Rising: without the dynamic update gamma would stop the cycle after propagation 3.
    script = {1: 0.51, 2: 0.52, 3: 0.53, 4: 0.54, 5: 0.55, 6: 0.56, 7: 0.49, 8: 0.49, 9: 0.6}
    result, state, disk, _ = run_loaded(tmp_path, config, scripted(0.5, script))
    props = kinds(state, "propagation")
    assert [(e["propagation"], e["gamma"], e["omega"], e["mu_s"]) for e in props] == [
        (1, 1, 1, 0.5), (2, 2, 2, 0.5), (3, 1, 1, 0.53),    # omega 2 > 1: start update
        (4, 2, 2, 0.53), (5, 1, 1, 0.55),                   # again at 5
        (6, 2, 2, 0.55), (7, 3, 2, 0.55),                   # 0.49 <= 0.50 = 0.55 - 0.05
        (8, 1, 0, 0.56)]                                    # next cycle from g_best
    assert [e["propagation"] for e in kinds(state, "dynamic_start")] == [3, 5]
    # Divergence is measured from the updated start: 0.49 ends the cycle (0.5 - 0.05 would not).
    (end, _) = kinds(state, "cycle_end")
    assert (end["propagation"], end["reason"], end["peak_found"]) == (7, "diverged", True)
    assert kinds(state, "peak")[0]["at_propagation"] == 6
    # The next cycle goes back to g_best (= g_s after the cycle), not to the ending model.
    restores = [i for i, c in enumerate(disk.calls) if c == ("restore_model", "g_s")]
    assert len(restores) == 2
    assert disk.tags["g_s"] == disk.tags["g_best"]
    assert [p for p, _ in disk.tags["g_best"]] == [1, 2, 3, 4, 5, 6]
    assert result.mu_final == 0.56


def test_psi_cycles_without_peak_end_run_and_return_start(tmp_path):
    config = LoAdConfig(gamma_max=2, psi_max=3, omega_max=0)
    script = {n: 0.49 for n in range(1, 7)}
    result, state, disk, _ = run_loaded(tmp_path, config, scripted(0.5, script))
    assert [s["psi"] for s in kinds(state, "cycle_start")] == [0, 1, 2]
    assert result.cycles == 3 and result.propagations == 6
    assert result.final_tag == "g_s" and result.mu_final == result.mu_start == 0.5
    # D after init and after cycles 0 and 1; not after the last one.
    assert [c[1] for c in disk.calls if c[0] == "train_discriminator"] == [0, 1, 2]
    assert "g_best" not in disk.tags


def test_returned_model_is_best_and_never_worse_than_start(tmp_path, no_fsync):
    config = LoAdConfig(gamma_max=4, psi_max=2, omega_max=1)
    mu_of = random_walk(seed=3)
    result, state, disk, _ = run_loaded(tmp_path, config, mu_of)
    seen = [e["mu"] for e in kinds(state, "propagation")]
    assert result.mu_final >= result.mu_start
    assert result.mu_final == max([result.mu_start] + seen)
    assert mu_of(disk.tags[result.final_tag]) == result.mu_final


def test_fig1_walkthrough_buffer_after_each_cycle(tmp_path):
    config = LoAdConfig(gamma_max=3, psi_max=2, omega_max=10, b_max=3)
    script = {1: 0.49, 2: 0.48, 3: 0.47,      # (0,0): no peak, patience
              4: 0.52, 5: 0.51, 6: 0.49,      # (0,1): ascends to g1, patience
              7: 0.50, 8: 0.46,               # (1,0): diverges below 0.52 - 0.05
              9: 0.55, 10: 0.53, 11: 0.50,    # (1,1): ascends to g2
              12: 0.54, 13: 0.53, 14: 0.52,   # (2,0): no peak
              15: 0.49}                       # (2,1): diverges; psi = 2 ends the run
    result, state, disk, buffer = run_loaded(tmp_path, config, scripted(0.5, script))
    assert buffer_labels(state) == [
        ["g0"], ["g0", "g0_0"], ["g1", "g0_1"], ["g1", "g0_1", "g1_0"], ["g2", "g1_1"],
        ["g2", "g1_1", "g2_0"], ["g2", "g2_0", "g2_1"]]  # g_{1,1} deleted for g_{2,1}
    assert [m.name for m in buffer.sets()] == [
        "set_0005_peak_g2", "set_0007_end_g2_0", "set_0008_end_g2_1"]
    assert [(e["label"], e["reason"], e["peak_found"]) for e in kinds(state, "cycle_end")] == [
        ("g0_0", "patience", False), ("g0_1", "patience", True), ("g1_0", "diverged", False),
        ("g1_1", "patience", True), ("g2_0", "patience", False), ("g2_1", "diverged", False)]
    assert [(p["label"], p["at_propagation"]) for p in kinds(state, "peak")] == [
        ("g1", 4), ("g2", 9)]
    # D is retrained on every buffer state but the last.
    assert [c[1] for c in disk.calls if c[0] == "train_discriminator"] == list(range(6))
    assert result.final_tag == "g_best" and result.mu_final == 0.55 and result.peaks == 2


def test_max_propagations_caps_run_and_keeps_best(tmp_path):
    config = LoAdConfig(gamma_max=50, psi_max=50, omega_max=100, max_propagations=3)
    result, state, _, _ = run_loaded(tmp_path, config, scripted(0.5, {1: 0.52, 2: 0.51, 3: 0.5}))
    assert result.reason == "max_propagations" and result.propagations == 3
    assert result.final_tag == "g_best" and result.mu_final == 0.52


@pytest.mark.parametrize("bad", [dict(beta_l=0), dict(beta_u=-0.1), dict(gamma_max=0),
                                 dict(psi_max=1.5), dict(b_max=1), dict(max_propagations=0)])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        LoAdConfig(**bad)


def test_resume_with_other_config_is_refused(tmp_path):
    config = LoAdConfig(gamma_max=2, psi_max=1)
    run_loaded(tmp_path, config, scripted(0.5, {1: 0.4}))
    other = LoAdConfig(gamma_max=3, psi_max=1)
    controller = LoAdController(other, FakeHooks(Disk(), scripted(0.5, {})),
                                tmp_path / "state.json", MapBuffer(tmp_path / "buffer", 3))
    with pytest.raises(ValueError, match=r"state.json.*gamma_max"):
        controller.run()


def test_corrupt_state_file_is_named(tmp_path):
    (tmp_path / "state.json").write_text("{not json")
    controller = LoAdController(LoAdConfig(), FakeHooks(Disk(), scripted(0.5, {})),
                                tmp_path / "state.json", MapBuffer(tmp_path / "buffer", 3))
    with pytest.raises(ValueError, match="state.json"):
        controller.run()


class NumpyHooks(FakeHooks):
    """Returns numpy scalars, as TensorFlow-side code does."""

    def evaluate(self):
        return np.float32(super().evaluate())

    def adversarial_step(self, propagation):
        return {k: np.float32(v) for k, v in super().adversarial_step(propagation).items()}

    def train_discriminator(self, set_dirs, round):
        return {k: np.float64(v) for k, v in super().train_discriminator(set_dirs, round).items()}


def test_numpy_scalars_from_hooks_are_stored_as_json_numbers(tmp_path):
    config = LoAdConfig(gamma_max=2, psi_max=1)
    hooks = NumpyHooks(Disk(), scripted(0.5, {1: 0.52, 2: 0.40, 3: 0.40}))
    controller = LoAdController(config, hooks, tmp_path / "state.json",
                                MapBuffer(tmp_path / "buffer", 3))
    result = controller.run()
    assert result.mu_final == pytest.approx(0.52)
    state = load_state(tmp_path / "state.json")
    assert kinds(state, "propagation")[0]["losses"] == {"loss_g": pytest.approx(0.51)}
    assert kinds(state, "discriminator")[0]["metrics"] == {"accuracy": 0.9}


@pytest.mark.parametrize("bad", [float("nan"), None, "high"])
def test_non_numeric_miou_is_rejected(tmp_path, bad):
    config = LoAdConfig(gamma_max=2, psi_max=1)
    controller = LoAdController(config, FakeHooks(Disk(), lambda model: bad),
                                tmp_path / "state.json", MapBuffer(tmp_path / "buffer", 3))
    with pytest.raises(NonFiniteError, match="LoAd start .*hold-out mIoU = nan"):
        controller.run()


class NonFiniteHooks(FakeHooks):
    """The generator loss of propagation `bad_propagation`, or D's loss of round `bad_round`,
    is `value`."""

    def __init__(self, disk, mu_of, value, bad_propagation=None, bad_round=None):
        super().__init__(disk, mu_of)
        self.value, self.bad_propagation, self.bad_round = value, bad_propagation, bad_round

    def adversarial_step(self, propagation):
        losses = super().adversarial_step(propagation)
        return {"loss_g": self.value} if propagation == self.bad_propagation else losses

    def train_discriminator(self, set_dirs, round):
        metrics = super().train_discriminator(set_dirs, round)
        return dict(metrics, loss=self.value) if round == self.bad_round else metrics


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_generator_loss_stops_at_its_propagation_with_valid_state(tmp_path, value):
    config = LoAdConfig(gamma_max=3, psi_max=2)
    hooks = NonFiniteHooks(Disk(), scripted(0.5, {1: 0.5, 2: 0.5, 3: 0.5}), value,
                           bad_propagation=3)
    controller = LoAdController(config, hooks, tmp_path / "state.json",
                                MapBuffer(tmp_path / "buffer", 3))
    with pytest.raises(NonFiniteError, match=r"propagation 3: generator loss_g = (nan|inf)"):
        controller.run()
    text = (tmp_path / "state.json").read_text()
    state = json.loads(text, parse_constant=lambda token: pytest.fail(f"{token} in state.json"))
    assert state["propagation"] == 2 and state["phase"] == "propagate"
    # the last good working checkpoint (propagation 2) is the resume point
    assert hooks.disk.working_slots[0][0] == 2


def test_non_finite_discriminator_loss_names_the_round(tmp_path):
    config = LoAdConfig(gamma_max=2, psi_max=3)
    hooks = NonFiniteHooks(Disk(), scripted(0.5, {1: 0.5, 2: 0.5}), float("nan"), bad_round=1)
    controller = LoAdController(config, hooks, tmp_path / "state.json",
                                MapBuffer(tmp_path / "buffer", 3))
    with pytest.raises(NonFiniteError, match=r"discriminator round 1 \(after propagation 2\): "
                                             r"discriminator loss = nan"):
        controller.run()
    state = load_state(tmp_path / "state.json")
    assert state["discriminator_round"] == 0 and state["cycle_end_step"] == "discriminator"


def test_non_finite_holdout_miou_names_the_propagation(tmp_path):
    config = LoAdConfig(gamma_max=3, psi_max=2)
    controller = LoAdController(config, FakeHooks(Disk(), scripted(0.5, {1: 0.5, 2: math.inf})),
                                tmp_path / "state.json", MapBuffer(tmp_path / "buffer", 3))
    with pytest.raises(NonFiniteError, match="propagation 2: hold-out mIoU = inf"):
        controller.run()
    assert load_state(tmp_path / "state.json")["propagation"] == 1


@pytest.mark.parametrize("content", ["{not json", '{"version": 99}', "\xff\xfe"])
def test_damaged_state_and_buffer_index_are_named_with_a_fix(tmp_path, content):
    (tmp_path / "state.json").write_text(content, encoding="latin-1")
    controller = LoAdController(LoAdConfig(), FakeHooks(Disk(), scripted(0.5, {})),
                                tmp_path / "state.json", MapBuffer(tmp_path / "buffer", 3))
    with pytest.raises(DamagedFileError, match="state.json.*delete it, events.jsonl"):
        controller.run()
    (tmp_path / "buffer" / "index.json").write_text(content, encoding="latin-1")
    if content.startswith('{"version'):
        return   # valid JSON: the buffer checks max_sets (ValueError) instead
    with pytest.raises(DamagedFileError, match="index.json: damaged.*delete"):
        MapBuffer(tmp_path / "buffer", 3)


# Resume: a kill at any hook call, then a fresh process resumes.

def random_walk(seed):
    """mIoU as a deterministic function of the update sequence (and the discriminators used)."""
    def mu_of(model):
        mu = 0.5
        for propagation, discriminator in model:
            h = zlib.crc32(f"{seed}:{propagation}:{discriminator}".encode())
            mu += (h % 1000) / 1000 * 0.05 - 0.023
        return round(mu, 6)
    return mu_of


RESUME_CONFIG = LoAdConfig(beta_l=0.03, beta_u=0.001, gamma_max=4, psi_max=2, omega_max=1,
                           b_max=3)


def run_process(root, disk, mu_of, kill_at=None, kill_after=False):
    """One process: a fresh controller and hooks over `disk`; returns the result or None if
    killed."""
    hooks = FakeHooks(disk, mu_of, kill_at=kill_at, kill_after=kill_after)
    controller = LoAdController(RESUME_CONFIG, hooks, root / "state.json",
                                MapBuffer(root / "buffer", RESUME_CONFIG.b_max), seed=7)
    try:
        return controller.run()
    except Killed:
        return None


def run_with_kills(root, kill_points, kill_after, mu_of):
    """Runs to the end, killing the k-th hook call of each process in turn; returns outputs."""
    disk = Disk()
    for kill_at in kill_points:
        assert run_process(root, disk, mu_of, kill_at, kill_after) is None, "not killed"
    return run_process(root, disk, mu_of), disk


def outputs(root, result, disk):
    """Everything a resumed run must reproduce exactly."""
    buffer_files = {}
    for dirpath, _, files in os.walk(root / "buffer"):
        for name in files:
            path = os.path.join(dirpath, name)
            if name != "index.json":
                buffer_files[os.path.relpath(path, root)] = open(path).read()
    unique_events, seen = [], {}
    for event in disk.events:
        if event["seq"] in seen:
            assert seen[event["seq"]] == event, "re-sent event differs"
            continue
        seen[event["seq"]] = event
        unique_events.append(event)
    state = load_state(root / "state.json")
    return {"result": result, "state": state, "events": unique_events, "tags": disk.tags,
            "discriminators": disk.discriminators, "buffer": buffer_files,
            "index": json.loads((root / "buffer" / "index.json").read_text())}


@pytest.fixture
def no_fsync(monkeypatch):
    monkeypatch.setattr(os, "fsync", lambda fd: None)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("reference")
    mu_of = random_walk(seed=16)
    result, disk = run_with_kills(root, [], False, mu_of)
    return outputs(root, result, disk), len(disk.calls), mu_of


def test_reference_run_covers_every_branch(reference):
    expected, calls, _ = reference
    found = {e["kind"] for e in expected["state"]["history"]}
    assert {"new_best", "dynamic_start", "peak", "cycle_end", "done"} <= found
    reasons = {(e["reason"], e["peak_found"]) for e in expected["state"]["history"]
               if e["kind"] == "cycle_end"}
    assert {"diverged", "patience"} <= {r for r, _ in reasons}
    assert {True, False} <= {p for _, p in reasons}
    assert {e["action"] for e in expected["state"]["history"] if e["kind"] == "buffer"} == {
        "start", "flush", "append"}
    assert any(len(e["sets"]) == 3 for e in expected["state"]["history"]
               if e["kind"] == "buffer" and e["action"] == "append")
    assert 100 < calls < 400


@pytest.mark.slow
@pytest.mark.parametrize("kill_after", [False, True], ids=["before_effect", "after_effect"])
def test_resume_after_kill_at_every_hook_call_matches_uninterrupted(
        tmp_path, reference, kill_after, no_fsync):
    expected, calls, mu_of = reference
    for kill_at in range(1, calls + 1):
        root = tmp_path / f"k{kill_at}"
        result, disk = run_with_kills(root, [kill_at], kill_after, mu_of)
        got = outputs(root, result, disk)
        for key in expected:
            assert got[key] == expected[key], f"kill at hook call {kill_at}: {key} differs"


@pytest.mark.slow
def test_resume_after_kill_during_every_state_write_matches_uninterrupted(
        tmp_path, reference, monkeypatch, no_fsync):
    from deeplab_load.lookahead import controller as controller_module
    expected, _, mu_of = reference
    real_write = controller_module.write_json_atomic
    for kill_at in itertools.count(1):
        count = 0

        def write_or_die(path, payload):
            nonlocal count
            count += 1
            if count == kill_at:
                raise Killed("state write")
            real_write(path, payload)

        monkeypatch.setattr(controller_module, "write_json_atomic", write_or_die)
        root, disk = tmp_path / f"w{kill_at}", Disk()
        killed = run_process(root, disk, mu_of) is None
        monkeypatch.setattr(controller_module, "write_json_atomic", real_write)
        if not killed:
            break
        result = run_process(root, disk, mu_of)
        assert outputs(root, result, disk) == expected, f"kill at state write {kill_at}"
    assert kill_at > 40  # every state write of the run was a kill point


def test_resume_after_repeated_kills_matches_uninterrupted(tmp_path, reference, no_fsync):
    expected, _, mu_of = reference
    # Each resumed process is killed again a few calls in (also during its resume work) until a
    # process gets through.
    disk, kills = Disk(), 0
    for kill_at in itertools.cycle([5, 3, 1, 7, 2, 11, 4, 13, 6, 9]):
        result = run_process(tmp_path, disk, mu_of, kill_at)
        if result is not None:
            break
        kills += 1
    assert kills > 20
    assert outputs(tmp_path, result, disk) == expected


def test_controller_module_imports_no_tensorflow():
    import subprocess
    code = ("import sys, deeplab_load.lookahead.controller, deeplab_load.lookahead.buffer; "
            "sys.exit('tensorflow' in sys.modules or 'keras' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
