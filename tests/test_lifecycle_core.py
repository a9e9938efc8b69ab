"""The shared lifecycle rules (workloads/serve/deployer/lifecycle.py), decision by decision.

tests/test_lifecycle_deployer.py and the local deployer tests show each adapter carries them out;
tests/test_lifecycle_parity.py runs the same scenarios on both targets.
"""

from __future__ import annotations

import pytest

from workloads.serve.deployer import lifecycle as lc
from workloads.serve.deployer.lifecycle import EndpointView


@pytest.mark.parametrize(
    ("view", "version", "status", "expected"),
    [
        (EndpointView(), 1, lc.APPROVED, (lc.DEPLOY, "deploying version 1")),
        (EndpointView(serving=1), 2, lc.APPROVED, (lc.DEPLOY, "deploying version 2")),
        (EndpointView(serving=2), 2, lc.APPROVED, (lc.SKIP, "version 2 is already deployed")),
        (
            EndpointView(serving=2),
            1,
            lc.APPROVED,
            (lc.SKIP, "version 1 is not newer than the serving version 2"),
        ),
        (
            EndpointView(serving=1),
            2,
            lc.REJECTED,
            (lc.SKIP, "version 2 is Rejected, not Approved; nothing deployed"),
        ),
        (
            EndpointView(serving=1, deploying=2),
            2,
            lc.APPROVED,
            (lc.SKIP, "version 2 is already being deployed"),
        ),
        (
            EndpointView(serving=1, deploying=2),
            3,
            lc.APPROVED,
            (lc.QUEUE, "version 3 queued, deployed when the endpoint is free"),
        ),
        (
            EndpointView(serving=1, deploying=2, pending=4),
            3,
            lc.APPROVED,
            (lc.SKIP, "version 3 not queued: version 4 is already queued"),
        ),
        (
            EndpointView(serving=1, busy=True),
            2,
            lc.APPROVED,
            (lc.QUEUE, "version 2 queued, deployed when the endpoint is free"),
        ),
        # The v3/v2 case, decided once: a failed newer version does not make an older approval stale.
        (EndpointView(serving=1, failed=frozenset({3})), 2, lc.APPROVED, (lc.DEPLOY, "deploying version 2")),
        (
            EndpointView(serving=1, failed=frozenset({3})),
            3,
            lc.APPROVED,
            (lc.SKIP, "version 3 was rolled back before; deploy it by name to try again"),
        ),
    ],
)
def test_what_an_approval_does(
    view: EndpointView, version: int, status: str, expected: tuple[str, str]
) -> None:
    decision = lc.on_approval(view, version, status)
    assert (decision.action, decision.reason) == expected
    assert decision.version == version


def test_approvals_read_together_deploy_the_highest_and_say_why_the_rest_do_not() -> None:
    target, skipped = lc.on_approvals(EndpointView(serving=2), [4, 1, 3])
    assert target == lc.Decision(lc.DEPLOY, 4, "deploying version 4")
    assert [(d.version, d.reason) for d in skipped] == [
        (1, "version 1 is not newer than the serving version 2"),
        (3, "superseded by version 4, approved at the same time"),
    ]
    assert lc.on_approvals(EndpointView(serving=5), [3]) == (
        None,
        [lc.Decision(lc.SKIP, 3, "version 3 is not newer than the serving version 5")],
    )


def test_rollback_goes_to_the_last_version_that_served_and_still_is_approved() -> None:
    view = EndpointView(serving=4, served=(1, 2, 4))
    assert lc.rollback_target(view, {1, 2, 3, 4}) == 2
    assert lc.rollback_target(view, {1, 3, 4}) == 1  # v2 was rejected since; v3 never served
    with pytest.raises(
        lc.LifecycleError, match=r"no version that served before version 4 is still approved \(served: 1, 2\)"
    ):
        lc.rollback_target(view, {3, 4})
    with pytest.raises(lc.LifecycleError, match="no version serves all traffic"):
        lc.rollback_target(EndpointView(), {1})


def test_outcomes_keep_the_histories() -> None:
    view = EndpointView(serving=1, served=(1,))
    view = lc.after_outcome(view, 2, True)
    assert (view.serving, view.served, view.failed) == (2, (1, 2), frozenset())
    view = lc.after_outcome(view, 3, False)
    assert (view.serving, view.served, view.failed) == (2, (1, 2), frozenset({3}))
    # A rollback by hand from 2 to 1 withdraws 2: out of the history, not redeployed by its event.
    view = lc.after_outcome(view, 1, True, rolled_back_from=2)
    assert (view.serving, view.served, view.failed) == (1, (1,), frozenset({2, 3}))
    # A failed version that later serves (deployed by name) is no longer failed.
    view = lc.after_outcome(view, 3, True)
    assert (view.serving, view.served, view.failed) == (3, (1, 3), frozenset({2}))


def test_history_tags_fit_one_tag_value() -> None:
    versions = list(range(1, 200))
    text = lc.format_versions(versions)
    assert len(text) <= 256 and text.endswith("198 199")
    assert lc.parse_versions(text)[-1] == 199 and lc.parse_versions(" 3 x 4 ") == [3, 4]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3", lc.VersionRef(3)),
        ("v12", lc.VersionRef(12)),
        (
            "arn:aws:sagemaker:us-east-1:123456789012:model-package/iris-models/7",
            lc.VersionRef(
                7, "arn:aws:sagemaker:us-east-1:123456789012:model-package/iris-models/7", "iris-models"
            ),
        ),
    ],
)
def test_how_a_person_names_a_version(text: str, expected: lc.VersionRef) -> None:
    assert lc.parse_version_ref(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0", "'0' is not a model version"),
        ("latest", "'latest' is not a model version"),
        ("arn:aws:s3:::bucket", "'arn:aws:s3:::bucket' is not a model package ARN"),
    ],
)
def test_bad_version_names_are_refused_saying_what_is_expected(text: str, message: str) -> None:
    with pytest.raises(lc.LifecycleError, match=message):
        lc.parse_version_ref(text)


def test_review_rules() -> None:
    lc.review(1, lc.PENDING, lc.APPROVED)
    lc.review(1, lc.REJECTED, lc.APPROVED, force=True)
    with pytest.raises(
        lc.LifecycleError, match="version 1 is Rejected, not PendingManualApproval; pass --force"
    ):
        lc.review(1, lc.REJECTED, lc.APPROVED)
    with pytest.raises(lc.LifecycleError, match=r"a rejection needs a reason \(--reason\)"):
        lc.review(1, lc.PENDING, lc.REJECTED, reason="  ")
    # The same status again: nothing to force, and the message does not suggest --force.
    with pytest.raises(lc.LifecycleError) as again:
        lc.review(1, lc.APPROVED, lc.APPROVED)
    assert (
        str(again.value)
        == "version 1 is already Approved; nothing changed; `mlops deploy 1` deploys it by hand"
    )
    with pytest.raises(lc.LifecycleError) as rejected:
        lc.review(1, lc.REJECTED, lc.REJECTED, reason="still wrong")
    assert str(rejected.value) == "version 1 is already Rejected; nothing changed"


@pytest.mark.parametrize(
    ("view", "version", "expected"),
    [
        (EndpointView(), 1, (lc.DEPLOY, "deploying version 1")),
        # A person may go back, and may retry a version that rolled back: events may not.
        (EndpointView(serving=3, served=(1, 2, 3)), 1, (lc.DEPLOY, "deploying version 1")),
        (EndpointView(serving=1, failed=frozenset({2})), 2, (lc.DEPLOY, "deploying version 2")),
        (EndpointView(serving=2), 2, (lc.SKIP, "version 2 is already deployed")),
    ],
)
def test_a_deploy_by_name(view: EndpointView, version: int, expected: tuple[str, str]) -> None:
    decision = lc.on_deploy_request(view, version, lc.APPROVED)
    assert (decision.action, decision.reason) == expected


@pytest.mark.parametrize(
    ("view", "status", "error", "message"),
    [
        (
            EndpointView(serving=1),
            lc.PENDING,
            lc.LifecycleError,
            "version 2 is PendingManualApproval, not Approved; nothing deployed (approve it first: mlops approve 2)",
        ),
        (
            EndpointView(serving=1, deploying=3),
            lc.APPROVED,
            lc.EndpointBusyError,
            "deploying version 3; wait for it to finish before deploying again",
        ),
        (
            EndpointView(serving=1, busy=True),
            lc.APPROVED,
            lc.EndpointBusyError,
            "the endpoint is busy; wait for it to finish before deploying again",
        ),
    ],
)
def test_a_deploy_by_name_is_refused_unapproved_or_over_a_running_deployment(
    view: EndpointView, status: str, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as raised:
        lc.on_deploy_request(view, 2, status)
    assert str(raised.value) == message


# --- LINEAR steps: whole instances of the fleet, on both platforms ------------------------------------


@pytest.mark.parametrize(
    ("fleet", "percent", "step", "shares"),
    [
        # Two instances: one per step whatever the percentage (10-50% of 2 is one instance).
        (2, 10, 1, [0.5, 1.0]),
        (2, 25, 1, [0.5, 1.0]),
        (2, 50, 1, [0.5, 1.0]),
        (4, 25, 1, [0.25, 0.5, 0.75, 1.0]),
        (4, 50, 2, [0.5, 1.0]),
        # The last step takes what is left.
        (3, 50, 1, [1 / 3, 2 / 3, 1.0]),
        (5, 50, 2, [0.4, 0.8, 1.0]),
        # At least 10% of the fleet, at most half of it.
        (20, 10, 2, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]),
        (10, 75, 5, [0.5, 1.0]),
        (11, 1, 2, [2 / 11, 4 / 11, 6 / 11, 8 / 11, 10 / 11, 1.0]),
    ],
)
def test_a_linear_step_is_whole_instances_within_ten_to_fifty_percent(
    fleet: int, percent: int, step: int, shares: list[float]
) -> None:
    assert lc.linear_step(fleet, percent) == step
    assert lc.linear_shares(fleet, percent) == pytest.approx(shares)
    assert lc.linear_shares(fleet, percent)[-1] == 1.0


def test_a_linear_shift_needs_two_instances() -> None:
    with pytest.raises(lc.LifecycleError, match=r"^the endpoint has 1 instance; .* so it needs 2 or more$"):
        lc.linear_step(1, 50)
    with pytest.raises(lc.LifecycleError, match="needs 2 or more"):
        lc.linear_shares(0, 50)
