"""The validation loops' hand-over to the decision routine: static as a Policy with its size,
and LocalApply routing each recommendation to its workload's actuator (the one apply(rec) ->
ApplyResult contract); the routine decides, applies through it and writes the design.md log."""

from __future__ import annotations

from runqscale.scaler import log
from runqscale.scaler.actuators.base import ApplyResult
from runqscale.scaler.model import CurrentState, Recommendation, ScalerConfig, SignalWindow
from runqscale.scaler.routine import DecisionRoutine
from runqscale.validation.drive import LocalApply, policy_for
from runqscale.validation.window import make_sample

WL_NAME = "runlang"


class _Replicas:
    """Stands in for LocalActuator.apply(rec) -> ApplyResult (the cgroup path is exercised by
    tests/test_validation_loop.py and tests/test_validation_actuator.py); fails when told to."""

    dry_run = False

    def __init__(self, fail: str | None = None) -> None:
        self.state, self.fail, self.calls = CurrentState(2, 0.4, 0.4), fail, []

    def apply(self, rec: Recommendation) -> ApplyResult:
        self.calls.append(rec.recommended)
        before = self.state
        if self.fail is None:
            self.state = rec.recommended
        return ApplyResult(self.fail is None, False, "local", rec.action, self.fail, 1,
                           before, self.state, 0.25, {"started": ["r3"]})


def _window(ts: float) -> SignalWindow:
    from runqscale.scaler.model import WorkloadRef

    wl = WorkloadRef("validate", WL_NAME)
    return SignalWindow.from_samples([make_sample(
        ts=ts, workload=wl, replicas=2, cpu_request_cores=0.4, cpu_limit_cores=0.4,
        cpu_usage_cores=0.5, runq_p95_seconds=0.001, throttled_ratio=0.0, request_rate=10.0,
        runq_wait_seconds_per_second=0.01, throttled_seconds_per_second=0.0, pressure=None,
        not_a_field=1.0)])


def test_static_policy_holds_its_size_through_the_routine_and_the_log(tmp_path) -> None:
    act = _Replicas()
    adapter = LocalApply({WL_NAME: act}, clock=lambda: 105.0)
    adapter.t0 = 100.0
    path = str(tmp_path / "rec.jsonl")
    routine = DecisionRoutine(adapter, path, resume=False)
    pol = policy_for("static", CurrentState(4, 0.4, 0.4))
    cfg = ScalerConfig(max_replicas=4)
    w = _window(1000.0)
    assert routine.due(w.workload, pol, cfg, mono=0.0)
    d = routine.decide(w, CurrentState(2, 0.4, 0.4), pol, cfg, mono=0.0)
    assert act.calls == [CurrentState(4, 0.4, 0.4)]
    assert d.result.applied and d.result.method == "local" and d.result.delay_seconds == 0.25
    assert d.rec.applied and not d.rec.dry_run
    assert adapter.applied == 1
    assert adapter.actuations[0]["t"] == 5.0 and adapter.actuations[0]["after"]["replicas"] == 4
    logged = log.read(path).recommendations
    assert [(r.policy, r.action, r.applied) for r in logged] == [("static", "scale_out", True)]
    # the routine owns the period: not due again right away
    assert not routine.due(w.workload, pol, cfg, mono=1.0)


def test_a_failed_local_apply_is_an_error_in_the_result_not_an_exception(tmp_path) -> None:
    act = _Replicas(fail="1 of 2 new replicas did not become ready within 15 s")
    adapter = LocalApply({WL_NAME: act})
    routine = DecisionRoutine(adapter, str(tmp_path / "rec.jsonl"), resume=False)
    d = routine.decide(_window(1000.0), CurrentState(2, 0.4, 0.4),
                       policy_for("static", CurrentState(4, 0.4, 0.4)),
                       ScalerConfig(max_replicas=4), mono=0.0)
    assert not d.result.applied and "did not become ready" in d.result.error
    assert d.backoff_seconds > 0 and adapter.applied == 0
    assert log.read(str(tmp_path / "rec.jsonl")).recommendations[0].error == d.result.error


def test_showar_gets_the_margin_and_the_replica_maximum_it_is_given() -> None:
    """`validate --showar-margin/--showar-replica-max` reach showar's Params (a partial of
    decide), each alone or both; at the library's margin and no maximum showar is the registry's."""
    import functools

    from runqscale.scaler import policies
    from runqscale.scaler.policies import showar

    assert policy_for("showar") is policies.get("showar")
    assert policy_for("showar", showar_margin=showar.Params().sizing.sigma_k) \
        is policies.get("showar")
    for margin, rmax in ((3.0, None), (None, 0.5), (1.0, 0.6)):
        pol = policy_for("showar", showar_margin=margin, showar_replica_max=rmax)
        assert isinstance(pol.decide, functools.partial), (margin, rmax)
        params = pol.decide.keywords["params"]
        assert params.max_replica_cores == rmax
        assert params.sizing.sigma_k == (showar.Params().sizing.sigma_k if margin is None
                                         else margin)
        assert pol.period_seconds == policies.get("showar").period_seconds
