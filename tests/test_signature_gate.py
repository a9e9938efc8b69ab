"""The signature gate (issue 10, "No silent breaking change"), rule by rule: lifecycle.compare_signatures
and its decisions, the registry's record of a signature (signatures.py), and the 4xx comparison alarm's
queries (fleet_alarms.py). tests/test_lifecycle_parity.py runs the gate on both targets."""

from __future__ import annotations

from typing import Any

import pytest

from workloads.serve.deployer import fleet_alarms, signatures
from workloads.serve.deployer import lifecycle as lc
from workloads.serve.deployer.lifecycle import EndpointView, Signature
from workloads.train.steps import signature_properties

IRIS = ("sepal_length", "sepal_width", "petal_length", "petal_width")


def sig(*features: str | tuple[str, str], task: str = "classification", output: Any = None) -> Signature:
    pairs = [(f, "number") if isinstance(f, str) else f for f in features]
    found = Signature.from_mapping(
        {
            "task": task,
            "features": [{"name": n, "type": t} for n, t in pairs],
            "output": output or {"kind": "classes", "classes": ["setosa", "versicolor", "virginica"]},
        }
    )
    assert found is not None
    return found


SERVING = sig(*IRIS)


@pytest.mark.parametrize(
    ("new", "changes"),
    [
        (sig(*IRIS, "petal_area"), ["feature added: petal_area (number)"]),
        (sig(*IRIS, "a", ("b", "string")), ["features added: a (number), b (string)"]),
        (sig(*IRIS[:3]), ["feature removed: petal_width (number)"]),
        (
            sig(IRIS[0], IRIS[1], IRIS[2], (IRIS[3], "string")),
            ["feature retyped: petal_width number -> string"],
        ),
        (
            sig(IRIS[1], IRIS[0], IRIS[2], IRIS[3]),
            [
                "features reordered: sepal_length, sepal_width, petal_length, petal_width -> sepal_width, "
                "sepal_length, petal_length, petal_width, so values sent by position would land under "
                "the wrong feature"
            ],
        ),
        (
            sig(*IRIS, task="regression", output={"kind": "value", "name": "y"}),
            ["task changed from classification to regression"],
        ),
        # Several at once: each is named. A removed feature does not also count as a reordering.
        (
            sig(IRIS[0], IRIS[2], IRIS[3], "new"),
            ["feature added: new (number)", "feature removed: sepal_width (number)"],
        ),
    ],
)
def test_every_kind_of_breaking_change_is_named(new: Signature, changes: list[str]) -> None:
    check = lc.compare_signatures(2, new, 1, SERVING)
    assert list(check.changes) == changes
    assert not check.compatible and not check.deployable


def test_what_callers_do_not_send_is_not_a_breaking_change() -> None:
    # Same features in the same order, other classes (new training data): compatible.
    other_classes = sig(*IRIS, output={"kind": "classes", "classes": ["a", "b"]})
    check = lc.compare_signatures(2, other_classes, 1, SERVING)
    assert (check.changes, check.compatible, check.note()) == ((), True, "")


def test_nothing_serving_or_the_same_version_has_nothing_to_compare() -> None:
    assert lc.compare_signatures(1, SERVING, None, None).compatible
    assert lc.compare_signatures(1, sig("x"), 1, SERVING).compatible


def test_a_version_without_a_recorded_signature_is_deployed_and_the_decision_says_it_was_not_checked() -> (
    None
):
    check = lc.compare_signatures(2, SERVING, 1, None)
    assert check.deployable and check.unchecked == "version 1 has no recorded signature"
    decision = lc.on_approval(EndpointView(serving=1), 2, signature=check)
    assert decision == lc.Decision(
        lc.DEPLOY, 2, "deploying version 2 (input signature not checked: version 1 has no recorded signature)"
    )


def test_an_approval_event_of_a_breaking_version_is_refused_with_the_reason_and_the_fix() -> None:
    check = lc.compare_signatures(2, sig(*IRIS[:3]), 1, SERVING)
    decision = lc.on_approval(EndpointView(serving=1), 2, signature=check)
    assert decision.action == lc.REFUSE
    assert decision.reason == (
        "version 2 not deployed: its input signature is incompatible with serving version 1's: feature "
        "removed: petal_width (number). Callers' requests would be refused or misread; if the change is "
        "meant, a person allows it: `mlops deploy 2 --allow-signature-change` (or approve it again: "
        "`mlops approve 2 --force --allow-signature-change`)"
    )
    assert lc.is_refusal(decision.reason)
    assert not lc.is_refusal("version 2 is already deployed")


def test_the_allowance_deploys_it_and_the_decision_keeps_what_changed() -> None:
    check = lc.compare_signatures(2, sig(*IRIS[:3]), 1, SERVING, allowed=True)
    decision = lc.on_approval(EndpointView(serving=1), 2, signature=check)
    assert decision == lc.Decision(
        lc.DEPLOY,
        2,
        "deploying version 2 (input signature change allowed by a person: feature removed: petal_width "
        "(number))",
    )


def test_the_other_rules_come_first_and_a_queued_approval_is_checked_when_it_starts() -> None:
    breaking = lc.compare_signatures(2, sig("x"), 1, SERVING)
    assert lc.on_approval(EndpointView(serving=2), 2, signature=breaking).action == lc.SKIP
    assert lc.on_approval(EndpointView(serving=1, deploying=3), 2, signature=breaking).action == lc.QUEUE


def test_of_several_approvals_the_highest_deployable_goes_and_the_refused_one_says_why() -> None:
    checks = {
        2: lc.compare_signatures(2, SERVING, 1, SERVING),
        3: lc.compare_signatures(3, sig("x"), 1, SERVING),
    }
    target, others = lc.on_approvals(EndpointView(serving=1), [2, 3], checks)
    assert target is not None and (target.action, target.version) == (lc.DEPLOY, 2)
    assert [(d.action, d.version) for d in others] == [(lc.REFUSE, 3)]


def test_a_person_deploying_or_rolling_back_needs_the_allowance_too() -> None:
    breaking = lc.compare_signatures(1, sig("x"), 2, SERVING)
    with pytest.raises(lc.SignatureChangeError, match=r"`mlops deploy 1 --allow-signature-change`$"):
        lc.on_deploy_request(EndpointView(serving=2), 1, lc.APPROVED, signature=breaking)
    with pytest.raises(lc.SignatureChangeError, match=r"`mlops deploy --rollback --allow-signature-change`$"):
        lc.on_deploy_request(
            EndpointView(serving=2),
            1,
            lc.APPROVED,
            signature=breaking,
            hint=lc.allow_hint("deploy --rollback"),
        )
    allowed = lc.compare_signatures(1, sig("x"), 2, SERVING, allowed=True)
    assert (
        lc.on_deploy_request(EndpointView(serving=2), 1, lc.APPROVED, signature=allowed).action == lc.DEPLOY
    )
    with pytest.raises(lc.SignatureChangeError, match="`mlops approve 1 --allow-signature-change`"):
        lc.require_signature(breaking, lc.allow_hint("approve 1"))


def test_the_signature_shows_features_with_types_and_the_answer() -> None:
    assert SERVING.describe() == (
        "classification: sepal_length (number), sepal_width (number), petal_length (number), petal_width "
        "(number) -> classes setosa versicolor virginica"
    )
    regression = sig("age", ("sex", "string"), task="regression", output={"kind": "value", "name": "y"})
    assert regression.describe() == "regression: age (number), sex (string) -> value y"


# --- the registry's record of a signature (AWS) -----------------------------------------------------


def _props(signature: dict[str, Any]) -> dict[str, str]:
    return signature_properties(signature, "s3://b/training/j/output/signature.json")


def test_the_properties_the_register_step_writes_read_back_as_the_signature() -> None:
    signature = {
        "task": "regression",
        "target": "progression",
        "features": [{"name": "age", "type": "number"}, {"name": "sex", "type": "string"}],
        "output": {"kind": "value", "name": "progression", "type": "number"},
    }
    found = signatures.from_properties(_props(signature))
    assert found is not None
    assert found["features"] == signature["features"] and found["task"] == "regression"
    assert found["output"] == {"kind": "value", "name": "progression", "type": "number"}


def test_cut_or_ambiguous_properties_are_no_signature() -> None:
    many = {
        "task": "classification",
        "features": [{"name": f"feature_{i:02d}", "type": "number"} for i in range(31)],
    }
    assert _props(many)["signature_features"].endswith("...")
    assert signatures.from_properties(_props(many)) is None  # the properties hold part of it only
    spaced = {"task": "classification", "features": [{"name": "sepal length", "type": "number"}]}
    assert signatures.from_properties(_props(spaced)) is None  # "sepal" and "length:number"?
    assert signatures.from_properties({"commit": "abc"}) is None  # registered before signatures


class _S3:
    def __init__(self, body: bytes | None) -> None:
        self.body = body

    def get_object(self, **kwargs: Any) -> dict[str, Any]:
        if self.body is None:
            raise RuntimeError("AccessDenied")

        class Body:
            def read(inner) -> bytes:  # noqa: N805
                assert self.body is not None
                return self.body

        return {"Body": Body()}


def test_the_whole_signature_json_wins_over_the_properties_and_they_are_the_fallback() -> None:
    many = {"task": "classification", "features": [{"name": f"f{i}", "type": "number"} for i in range(60)]}
    package = {"CustomerMetadataProperties": _props(many)}
    import json

    whole = signatures.of_package(package, _S3(json.dumps(many).encode()))
    assert whole is not None and len(whole.features) == 60
    assert signatures.of_package(package, _S3(None)) is None  # unreadable, and the properties are cut
    short = {
        "CustomerMetadataProperties": _props({"task": "classification", "features": many["features"][:2]})
    }
    found = signatures.of_package(short, _S3(None))
    assert found is not None and found.features == (("f0", "number"), ("f1", "number"))


# --- the 4xx comparison alarm's queries --------------------------------------------------------------


def test_the_comparison_is_pointed_at_each_deployments_fleets() -> None:
    queries = fleet_alarms.comparison_queries("ep", "AllTraffic", 20)
    assert fleet_alarms.is_fleet_aware(queries)
    pointed = fleet_alarms.retarget(queries, blue="ep-v1-aaaa", green="ep-v2-bbbb")
    configs = {
        q["Id"]: next(
            d["Value"] for d in q["MetricStat"]["Metric"]["Dimensions"] if d["Name"] == "EndpointConfigName"
        )
        for q in pointed
        if "MetricStat" in q
    }
    assert configs == {
        "green_4xx": "ep-v2-bbbb",
        "green_requests": "ep-v2-bbbb",
        "blue_4xx": "ep-v1-aaaa",
        "blue_requests": "ep-v1-aaaa",
    }
    (result,) = [q for q in pointed if q.get("ReturnData")]
    assert result["Expression"] == (
        "IF(green_requests >= 20 AND blue_requests >= 20, "
        "green_4xx / green_requests - blue_4xx / blue_requests, 0)"
    )
    # The stack's declaration is untouched (retarget copies), and it points at no fleet.
    assert {d["Value"] for d in queries[0]["MetricStat"]["Metric"]["Dimensions"]} == {
        "ep",
        "AllTraffic",
        "none",
    }
    five_xx = [
        {"Id": "m1", "MetricStat": {"Metric": {"Dimensions": [{"Name": "EndpointName", "Value": "ep"}]}}}
    ]
    assert not fleet_alarms.is_fleet_aware(five_xx)
