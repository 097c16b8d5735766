"""The basis policy: schedule table, improvement rules, bad input, state, properties."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvml_core.policy.basis import BasisPolicy, MissingMetricError

# (skip_from_start, frequency, first epoch run, last epoch run) -> due epochs
SCHEDULES = [
    (0, 1, 1, 6, [1, 2, 3, 4, 5, 6]),
    (4, 1, 1, 8, [5, 6, 7, 8]),
    (4, 5, 1, 12, [5, 10]),
    (0, 3, 1, 10, [3, 6, 9]),
    (2, 2, 1, 9, [4, 6, 8]),
    (4, 5, 7, 16, [10, 15]),  # resumed at epoch 7: same schedule as uninterrupted
    (0, 1, 4, 5, [4, 5]),
    (10, 1, 1, 10, []),
]


@pytest.mark.parametrize("skip,frequency,first,last,expected", SCHEDULES)
def test_due_epochs_follow_the_epoch_number_alone(skip, frequency, first, last, expected):
    policy = BasisPolicy({"val_loss": "min"}, skip_from_start=skip, frequency=frequency)
    assert [e for e in range(first, last + 1) if policy.is_due(e)] == expected


def test_min_and_max_keys_keep_their_own_best():
    policy = BasisPolicy({"val_loss": "min", "val_accuracy": "max"})
    assert policy.update(1, {"val_loss": 1.0, "val_accuracy": 0.5}) == ["val_loss", "val_accuracy"]
    assert policy.update(2, {"val_loss": 0.9, "val_accuracy": 0.4}) == ["val_loss"]
    assert policy.update(3, {"val_loss": 0.95, "val_accuracy": 0.6}) == ["val_accuracy"]
    assert policy.update(4, {"val_loss": 0.95, "val_accuracy": 0.6}) == []  # ties do not improve
    assert (policy.best["val_loss"].value, policy.best["val_loss"].epoch) == (0.9, 2)
    assert (policy.best["val_accuracy"].value, policy.best["val_accuracy"].epoch) == (0.6, 3)


def test_min_delta_must_be_beaten():
    policy = BasisPolicy({"loss": "min"}, min_delta=0.1)
    assert policy.update(1, {"loss": 1.0}) == ["loss"]
    assert policy.update(2, {"loss": 0.95}) == []
    assert policy.update(3, {"loss": 0.9}) == []  # exactly min_delta is not "more than"
    assert policy.update(4, {"loss": 0.85}) == ["loss"]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_infinities_never_improve(bad):
    policy = BasisPolicy({"val_loss": "min"})
    assert policy.update(1, {"val_loss": bad}) == []  # not even on the first due epoch
    assert policy.best["val_loss"].value is None
    assert policy.update(2, {"val_loss": 3.0}) == ["val_loss"]
    assert policy.update(3, {"val_loss": bad}) == []
    assert policy.best["val_loss"].value == 3.0


def test_missing_key_on_a_due_epoch_names_it_and_the_present_keys():
    policy = BasisPolicy({"val_acc": "max"}, skip_from_start=1)
    assert policy.update(1, {"loss": 1.0}) == []  # not due: not checked
    with pytest.raises(MissingMetricError) as info:
        policy.update(2, {"loss": 1.0, "val_accuracy": 0.5})
    message = str(info.value)
    assert "'val_acc'" in message and "'val_accuracy'" in message and "'loss'" in message


@pytest.mark.parametrize(
    "kwargs,argument",
    [
        ({"basis_dict": {}}, "basis_dict"),
        ({"basis_dict": None}, "basis_dict"),
        ({"basis_dict": ["val_loss"]}, "basis_dict"),
        ({"basis_dict": {"val_loss": "minimum"}}, "basis_dict['val_loss']"),
        ({"basis_dict": {"val_loss": None}}, "basis_dict['val_loss']"),
        ({"basis_dict": {"": "min"}}, "basis_dict keys"),
        ({"basis_dict": {1: "min"}}, "basis_dict keys"),
        ({"frequency": 0}, "frequency"),
        ({"frequency": 1.5}, "frequency"),
        ({"frequency": True}, "frequency"),
        ({"skip_from_start": -1}, "skip_from_start"),
        ({"skip_from_start": "4"}, "skip_from_start"),
        ({"min_delta": -0.1}, "min_delta"),
        ({"min_delta": float("nan")}, "min_delta"),
    ],
)
def test_bad_arguments_name_the_argument_and_the_value(kwargs, argument):
    args = {"basis_dict": {"val_loss": "min"}, **kwargs}
    with pytest.raises(ValueError) as info:
        BasisPolicy(**args)
    message = str(info.value)
    assert argument in message and "Received" in message


def test_modes_are_case_insensitive():
    assert BasisPolicy({"val_loss": "MIN"}).basis == {"val_loss": "min"}


def test_state_round_trips_through_json():
    policy = BasisPolicy({"val_loss": "min", "val_accuracy": "max"}, skip_from_start=1)
    policy.update(2, {"val_loss": 0.5, "val_accuracy": 0.7})
    state = json.loads(json.dumps(policy.state_dict()))
    restored = BasisPolicy({"val_loss": "min", "val_accuracy": "max"}, skip_from_start=1)
    restored.load_state_dict(state)
    assert restored.best == policy.best
    assert restored.update(3, {"val_loss": 0.6, "val_accuracy": 0.8}) == ["val_accuracy"]


def test_restoring_a_state_with_another_mode_is_refused():
    old = BasisPolicy({"val_loss": "min"})
    old.update(1, {"val_loss": 0.5})
    new = BasisPolicy({"val_loss": "max"})
    with pytest.raises(ValueError, match="'val_loss'"):
        new.load_state_dict(old.state_dict())


def test_a_key_added_on_resume_starts_fresh():
    old = BasisPolicy({"val_loss": "min"})
    old.update(1, {"val_loss": 0.5})
    new = BasisPolicy({"val_loss": "min", "val_accuracy": "max"})
    new.load_state_dict(old.state_dict())
    assert new.update(2, {"val_loss": 0.6, "val_accuracy": 0.1}) == ["val_accuracy"]


# -- properties ------------------------------------------------------------------------

values = st.one_of(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    st.sampled_from([math.nan, math.inf, -math.inf]),
)
schedules = st.tuples(st.integers(0, 6), st.integers(1, 4), st.sampled_from([0.0, 0.01, 1.0]))
modes = st.sampled_from(["min", "max"])


def _logs(seq):
    return [{"m": v, "other": 0.0} for v in seq]


@settings(max_examples=150, deadline=None)
@given(schedules, modes, st.lists(values, min_size=1, max_size=30))
def test_the_best_never_gets_worse(schedule, mode, seq):
    skip, frequency, min_delta = schedule
    policy = BasisPolicy({"m": mode}, skip, frequency, min_delta)
    previous = None
    for epoch, logs in enumerate(_logs(seq), start=1):
        improved = policy.update(epoch, logs)
        best = policy.best["m"].value
        if previous is not None:
            assert (best <= previous) if mode == "min" else (best >= previous)
        if improved:
            assert best == logs["m"] and math.isfinite(best)
        previous = best


@settings(max_examples=150, deadline=None)
@given(schedules, modes, st.lists(values, min_size=1, max_size=30))
def test_a_non_due_epoch_never_changes_state(schedule, mode, seq):
    skip, frequency, min_delta = schedule
    policy = BasisPolicy({"m": mode}, skip, frequency, min_delta)
    for epoch, logs in enumerate(_logs(seq), start=1):
        before = policy.state_dict()
        improved = policy.update(epoch, logs if policy.is_due(epoch) else {})
        if not policy.is_due(epoch):
            assert improved == [] and policy.state_dict() == before


@settings(max_examples=150, deadline=None)
@given(schedules, modes, st.lists(values, min_size=2, max_size=30), st.data())
def test_a_resumed_policy_decides_like_an_uninterrupted_one(schedule, mode, seq, data):
    skip, frequency, min_delta = schedule
    stop = data.draw(st.integers(1, len(seq) - 1))
    logs = _logs(seq)

    straight = BasisPolicy({"m": mode}, skip, frequency, min_delta)
    expected = [straight.update(e, lg) for e, lg in enumerate(logs, start=1)]

    first = BasisPolicy({"m": mode}, skip, frequency, min_delta)
    got = [first.update(e, lg) for e, lg in enumerate(logs[:stop], start=1)]
    resumed = BasisPolicy({"m": mode}, skip, frequency, min_delta)
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    got += [resumed.update(e, lg) for e, lg in enumerate(logs[stop:], start=stop + 1)]

    assert got == expected
    assert resumed.state_dict() == straight.state_dict()
