"""Predictive HPA (the runlang paper's phpa-linear and phpa-knn baselines).

After jthomperoo/predictive-horizontal-pod-autoscaler: every sync period the HPA's answer is
computed as usual (runqscale.scaler.policies.hpa, with its own stabilisation and rate limits) and
stored; a model predicts the next replica count from the last 12 stored answers; the decision is
max(prediction, current HPA answer) (the project's default `decisionType: maximum`), bounded by
[min, max]. If the HPA has no usable metrics, nothing is predicted and nothing changes.

- linear: least-squares line through (timestamp, replicas) of the history, evaluated one sync
  period ahead (`look_ahead_seconds`, 15 s) and rounded up, as the project's linear model does
  (ceil of the regression at now + lookAhead); one point predicts itself.
- knn: the project has no kNN model; the paper is silent on its features, so this is the standard
  k-nearest-neighbour time-series regressor: the last `lag` answers are the query, every earlier
  run of `lag` answers in the history is a neighbour whose successor is its label; the prediction
  is the ceiling of the mean label of the `k` nearest (Euclidean; ties to the most recent). With
  fewer than lag + 1 points it predicts the last answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from runqscale.scaler.model import (
    CurrentState,
    Recommendation,
    ScalerConfig,
    SignalWindow,
)
from runqscale.scaler.policies import hpa

PERIOD_SECONDS = hpa.PERIOD_SECONDS


@dataclass(frozen=True)
class Params:
    history: int = 12
    look_ahead_seconds: float = 15.0
    k: int = 3
    lag: int = 3
    hpa: hpa.Params = hpa.Params()


@dataclass(frozen=True)
class State:
    hpa: hpa.State = hpa.State()
    history: tuple[tuple[float, int], ...] = ()


def initial_state() -> State:
    return State()


def predict_linear(history: tuple[tuple[float, int], ...], now: float, look_ahead: float) -> int:
    if len(history) == 1:
        return history[0][1]
    t = np.array([h[0] - now for h in history], dtype=np.float64)
    y = np.array([h[1] for h in history], dtype=np.float64)
    tc = t - t.mean()
    var = float(np.dot(tc, tc))
    slope = float(np.dot(tc, y - y.mean())) / var if var > 0 else 0.0
    pred = float(y.mean()) + slope * (look_ahead - float(t.mean()))
    return int(math.ceil(round(pred, 9)))


def predict_knn(history: tuple[tuple[float, int], ...], k: int, lag: int) -> int:
    y = np.array([h[1] for h in history], dtype=np.float64)
    if y.size < lag + 1:
        return int(y[-1])
    query = y[-lag:]
    n = y.size - lag  # candidate windows y[i:i+lag] with successor y[i+lag]
    windows = np.lib.stride_tricks.sliding_window_view(y[:-1], lag)[:n]
    dist = np.sqrt(((windows - query) ** 2).sum(axis=1))
    # stable order by distance, most recent first among equals
    order = sorted(range(n), key=lambda i: (float(dist[i]), -i))[:k]
    return int(math.ceil(round(float(y[[i + lag for i in order]].mean()), 9)))


def _decide(
    model: str,
    window: SignalWindow,
    current: CurrentState,
    config: ScalerConfig,
    state: State | None,
    params: Params,
) -> tuple[Recommendation, State]:
    state = state or State()
    now = window.now
    answer, why, hstate, valid = hpa.decide_replicas(window, current, config, state.hpa, params.hpa)
    if not valid:
        replicas = answer
        reason = f"HPA: {why}; no prediction"
        history = state.history
    else:
        history = (state.history + ((now, answer),))[-params.history :]
        if model == "linear":
            pred = predict_linear(history, now, params.look_ahead_seconds)
            ahead = params.look_ahead_seconds
            how = f"linear fit of the last {len(history)} HPA answers, {ahead:g} s ahead"
        else:
            pred = predict_knn(history, params.k, params.lag)
            how = f"{params.k}-NN over lag-{params.lag} runs of the last {len(history)} HPA answers"
        replicas = config.clamp_replicas(max(pred, answer))
        reason = (
            f"predicted {pred} replicas ({how}), HPA answer {answer}: "
            f"max bounded to [{config.min_replicas}, {config.max_replicas}] = {replicas}; "
            f"HPA: {why}"
        )
    recommended = replace(current, replicas=replicas)
    rec = Recommendation.decided(window, f"phpa-{model}", current, recommended, reason)
    return rec, State(hstate, history)


def decide_linear(
    window: SignalWindow,
    current: CurrentState,
    config: ScalerConfig,
    state: State | None,
    params: Params = Params(),
) -> tuple[Recommendation, State]:
    return _decide("linear", window, current, config, state, params)


def decide_knn(
    window: SignalWindow,
    current: CurrentState,
    config: ScalerConfig,
    state: State | None,
    params: Params = Params(),
) -> tuple[Recommendation, State]:
    return _decide("knn", window, current, config, state, params)
