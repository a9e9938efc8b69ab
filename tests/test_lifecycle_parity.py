"""One scenario suite, two targets: the deployment lifecycle of workloads/serve/deployer/lifecycle.py
driven on AWS (the deployer Lambda under moto) and on the local platform (the daemon, real model
servers), asserting the same outcomes. The drivers are in tests/parity_drivers.py.

Scenarios, each run on ["aws", "local"]:
 1. The first approval creates the endpoint: v1 serves, the last deployment is Succeeded to 1.
 2. A newer approval shifts LINEAR: v2 serves after going through 50% then 100% of the traffic
    (AWS: the UpdateEndpoint's DeploymentConfig; local: the splits the status showed).
 2b. A LINEAR step moves whole instances on both targets (lifecycle.linear_step): 25% of 2 instances
    goes 50% then 100%, 25% of 4 goes 25/50/75/100%.
 3. A duplicate approval, a stale one (an older version approved while a newer serves, or its late
    event), another group's, and a rejected version change nothing: no deployment is attempted.
 4. An approval during a shift is queued, then deployed: v2 shifting, v3 approved -> v2 finishes, then
    v3 serves.
 5. A rollback keeps the last serving version and reports RolledBack: a version whose model fails
    (AWS: SageMaker's own rollback; local: a model that cannot load), or a shift that fails midway
    (AWS: the alarm rolls the held update back; local: the green model server dies mid-shift).
 5b. A rolled-back version is not retried by its redelivered approval event, only by a person
    deploying it by name.
 6. The v3/v2 case: v1 serves, v3 rolls back, approving v2 deploys v2 ("stale" means not newer than
    what serves, not older than anything tried).
 7. Rollback by hand goes to the last version that actually served: v1 served, v2 rolled back by the
    platform, v3 served; rollback -> v1, not v2.
 8. Teardown leaves nothing of the endpoint: AWS no endpoint, config, model or scalable target of the
    deployer; local no model-server process and the endpoint Absent (the daemon, like the deployer
    Lambda, keeps running: `mlops local down` stops it).
 9. No silent breaking change: a compatible new version (same features, new data) deploys as before;
    one whose input signature drops a feature is refused by `mlops approve` up front, by the deployer
    when it is approved behind that check (the reason shows in `mlops status`), and by `mlops deploy`
    by name; nothing changes. `mlops deploy N --allow-signature-change` deploys it.
10. `mlops approve N --allow-signature-change` is recorded with the approval, and the deployer, acting
    on the event later, deploys it; rolling back over the changed signature needs the flag too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from local_daemon_helpers import build_model
from parity_drivers import AwsDriver, Driver, LocalDriver, ModelDirs

from mlops.backend import DEPLOY_IN_PROGRESS, DEPLOY_ROLLED_BACK, DEPLOY_SUCCEEDED, PlatformError
from workloads.serve.deployer import lifecycle

OpenDriver = Callable[..., Driver]


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> ModelDirs:
    root = tmp_path_factory.mktemp("parity-models")
    return ModelDirs(
        good=build_model(root / "good"),
        bad=build_model(root / "bad", kind="corrupt"),
        narrow=build_model(root / "narrow", kind="three_features"),
    )


@pytest.fixture(params=["aws", "local"])
def open_driver(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_dirs: ModelDirs
) -> Iterator[OpenDriver]:
    """open_driver(hold=False, step_percent=, fleet=) -> the target's driver; hold=True lets a shift be
    held (see hold()); step_percent and fleet size the LINEAR shift (default 50% of 2 instances)."""
    if request.param == "aws":
        request.getfixturevalue("moto_aws")
    opened: list[Driver] = []

    def open_(*, hold: bool = False, **sizes: int) -> Driver:
        driver: Driver
        if request.param == "aws":
            driver = AwsDriver(monkeypatch, **sizes)
        else:
            driver = LocalDriver(tmp_path / "home", model_dirs, hold=hold, **sizes)
        opened.append(driver)
        return driver

    yield open_
    for driver in opened:
        driver.close()


@pytest.fixture
def driver(open_driver: OpenDriver) -> Driver:
    return open_driver()


def serve_first(driver: Driver) -> None:
    driver.register(1)
    driver.approve(1)
    assert driver.wait_settled() == (DEPLOY_SUCCEEDED, 1)


def test_1_first_approval_creates_the_endpoint(driver: Driver) -> None:
    assert driver.register(1) == 1
    assert (driver.serving(), driver.last_deployment()) == (None, None)

    driver.approve(1)

    assert driver.wait_settled() == (DEPLOY_SUCCEEDED, 1)
    assert driver.serving() == 1
    assert driver.attempts() == 1


def test_2_a_newer_approval_shifts_linear(driver: Driver) -> None:
    serve_first(driver)
    driver.register(2)

    driver.approve(2)

    assert driver.wait_settled() == (DEPLOY_SUCCEEDED, 2)
    assert driver.serving() == 2
    # Two LINEAR steps of 50%: a split of the traffic first, then all of it.
    assert driver.shift_steps(2) == [0.5, 1.0]
    assert driver.attempts() == 2


@pytest.mark.parametrize(
    ("fleet", "step_percent", "shares"),
    [
        # 25% of two instances is less than one: one whole instance per step, on both targets.
        pytest.param(2, 25, [0.5, 1.0], id="25% of 2 instances"),
        pytest.param(4, 25, [0.25, 0.5, 0.75, 1.0], id="25% of 4 instances"),
    ],
)
def test_2b_a_linear_step_moves_whole_instances_on_both_targets(
    open_driver: OpenDriver, fleet: int, step_percent: int, shares: list[float]
) -> None:
    driver = open_driver(step_percent=step_percent, fleet=fleet)
    serve_first(driver)
    driver.register(2)

    driver.approve(2)

    assert driver.wait_settled() == (DEPLOY_SUCCEEDED, 2)
    # The same traffic shares on both: the step lifecycle.linear_step makes of the fleet.
    assert driver.shift_steps(2) == shares == lifecycle.linear_shares(fleet, step_percent)


def test_3_duplicate_stale_foreign_and_rejected_approvals_change_nothing(driver: Driver) -> None:
    for version in (1, 2, 3):
        driver.register(version)
    driver.approve(1)
    driver.wait_settled()
    driver.approve(3)
    assert driver.wait_settled() == (DEPLOY_SUCCEEDED, 3)
    before = (driver.serving(), driver.last_deployment(), driver.attempts())
    assert before == (3, (DEPLOY_SUCCEEDED, 3), 2)

    changes: dict[str, Callable[[], object]] = {
        "duplicate of the serving version's approval": lambda: driver.redeliver(3),
        "v2 approved while v3 serves": lambda: driver.approve(2),
        "v1's approval delivered late": lambda: driver.redeliver(1),
        "another group's approval": driver.approve_other_group,
        "a rejected version": lambda: driver.reject(driver.register(4), "accuracy below the bar"),
    }
    for what, change in changes.items():
        change()
        driver.wait_settled()
        after = (driver.serving(), driver.last_deployment(), driver.attempts())
        assert after == before, what


def test_4_an_approval_during_a_shift_is_queued_then_deployed(open_driver: OpenDriver) -> None:
    driver = open_driver(hold=True)
    serve_first(driver)
    driver.register(2)
    driver.register(3)
    driver.hold()
    driver.approve(2)
    driver.wait_shifting(2)

    driver.approve(3)

    assert driver.last_deployment() == (DEPLOY_IN_PROGRESS, 2)
    assert driver.serving() == 1
    driver.finish("complete")
    assert driver.wait_settled() == (DEPLOY_SUCCEEDED, 3)
    assert driver.serving() == 3
    # v2's shift ran to its end and served before v3's began: three deployments, each served.
    assert driver.attempts() == 3
    assert driver.served() == [1, 2, 3]


@pytest.mark.parametrize("failure", ["bad_model", "fails_mid_shift"])
def test_5_a_rollback_keeps_the_serving_version(open_driver: OpenDriver, failure: str) -> None:
    driver = open_driver(hold=failure == "fails_mid_shift")
    serve_first(driver)
    if failure == "bad_model":
        driver.register(2, good=False)
        driver.approve(2)
    else:
        driver.register(2)
        driver.hold()
        driver.approve(2)
        driver.wait_shifting(2)
        driver.finish("rollback")

    assert driver.wait_settled() == (DEPLOY_ROLLED_BACK, 2)
    assert driver.serving() == 1
    assert driver.attempts() == 2
    assert driver.served() == [1]


def test_5b_a_rolled_back_version_is_retried_by_name_only(driver: Driver) -> None:
    serve_first(driver)
    driver.register(2, good=False)
    driver.approve(2)
    assert driver.wait_settled() == (DEPLOY_ROLLED_BACK, 2)

    driver.redeliver(2)
    assert driver.wait_settled() == (DEPLOY_ROLLED_BACK, 2)
    assert (driver.serving(), driver.attempts()) == (1, 2)

    assert driver.deploy(2) == 2  # a person may try it again
    assert driver.wait_settled() == (DEPLOY_ROLLED_BACK, 2)
    assert (driver.serving(), driver.attempts()) == (1, 3)


def test_6_after_v3_rolls_back_approving_v2_deploys_v2(driver: Driver) -> None:
    serve_first(driver)
    driver.register(2)
    driver.register(3, good=False)
    driver.approve(3)
    assert driver.wait_settled() == (DEPLOY_ROLLED_BACK, 3)
    assert driver.serving() == 1

    driver.approve(2)

    assert driver.wait_settled() == (DEPLOY_SUCCEEDED, 2)
    assert driver.serving() == 2
    assert driver.attempts() == 3


def test_7_rollback_by_hand_goes_to_the_last_version_that_served(driver: Driver) -> None:
    serve_first(driver)
    driver.register(2, good=False)
    driver.approve(2)
    assert driver.wait_settled() == (DEPLOY_ROLLED_BACK, 2)
    driver.register(3)
    driver.approve(3)
    assert driver.wait_settled() == (DEPLOY_SUCCEEDED, 3)

    assert driver.rollback() == 1

    assert driver.wait_settled() == (DEPLOY_SUCCEEDED, 1)
    assert driver.serving() == 1
    assert driver.attempts() == 4


def test_8_teardown_leaves_nothing(driver: Driver) -> None:
    serve_first(driver)
    driver.register(2)
    driver.approve(2)
    assert driver.wait_settled() == (DEPLOY_SUCCEEDED, 2)

    assert driver.teardown() != []

    assert driver.leftovers() == []
    assert driver.serving() is None


def test_9_a_breaking_signature_change_is_refused_everywhere_and_nothing_changes(driver: Driver) -> None:
    serve_first(driver)
    driver.register(2)  # the same features, new data: compatible
    driver.approve(2)
    assert driver.wait_settled() == (DEPLOY_SUCCEEDED, 2)
    assert driver.notes() == []
    driver.register(3, narrow=True)  # trained without petal_width
    before = (driver.serving(), driver.last_deployment(), driver.attempts())
    assert before == (2, (DEPLOY_SUCCEEDED, 2), 2)

    with pytest.raises(PlatformError, match=r"feature removed: petal_width") as refused:
        driver.approve(3)
    assert "`mlops approve 3 --allow-signature-change`" in str(refused.value)
    # An approval refused says so: the version stays as it was, not "not deployed".
    assert str(refused.value).startswith("version 3 not approved (it stays as it was): its input signature")
    assert (driver.serving(), driver.last_deployment(), driver.attempts()) == before

    driver.approve_unchecked(3)  # approved behind that check: the deployer's gate stands
    driver.wait_settled()
    assert (driver.serving(), driver.last_deployment(), driver.attempts()) == before
    (note,) = driver.notes()
    assert note.startswith(
        "version 3 not deployed: its input signature is incompatible with serving version 2"
    )
    assert "feature removed: petal_width" in note and "`mlops deploy 3 --allow-signature-change`" in note

    with pytest.raises(PlatformError, match=r"`mlops deploy 3 --allow-signature-change`"):
        driver.deploy(3)
    assert (driver.serving(), driver.last_deployment(), driver.attempts()) == before

    assert driver.deploy(3, allow_signature_change=True) == 3  # a person says so
    assert driver.wait_settled() == (DEPLOY_SUCCEEDED, 3)
    assert (driver.serving(), driver.attempts(), driver.notes()) == (3, 3, [])


def test_10_the_allowance_given_with_the_approval_is_honoured_by_the_deployer(driver: Driver) -> None:
    serve_first(driver)
    driver.register(2, narrow=True)

    driver.approve(2, allow_signature_change=True)

    assert driver.wait_settled() == (DEPLOY_SUCCEEDED, 2)
    assert (driver.serving(), driver.notes()) == (2, [])
    # Back to v1 changes the signature for v2's callers just as much: the rollback needs the flag too.
    with pytest.raises(PlatformError, match=r"feature added: petal_width .*`mlops deploy --rollback --allow"):
        driver.rollback()
    assert (driver.serving(), driver.attempts()) == (2, 2)
    assert driver.rollback(allow_signature_change=True) == 1
    assert driver.wait_settled() == (DEPLOY_SUCCEEDED, 1)
    assert driver.serving() == 1
    # v2's approval allowed the change for that approval's deployment only: deploying v2 again by
    # hand breaks v1's callers again, so it needs the flag again (found by the new-user review).
    with pytest.raises(PlatformError, match=r"feature removed: petal_width .*`mlops deploy 2 --allow"):
        driver.deploy(2)
    assert (driver.serving(), driver.attempts()) == (1, 3)
