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
            def read(inner) -> bytes:
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


# --- on AWS, under moto: the deployer points the 4xx comparison at the fleets; the registry shows it --


GROUP = "iris-models"
ENDPOINT = "iris-endpoint"
COMPARISON = f"{ENDPOINT}-4xx-vs-blue"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, moto_aws: None) -> Any:
    import boto3
    import moto_sagemaker_ext as ext

    ext.install()
    ext.reset()
    for key, value in {
        "MODEL_PACKAGE_GROUP_NAME": GROUP,
        "ENDPOINT_NAME": ENDPOINT,
        "EXECUTION_ROLE_ARN": "arn:aws:iam::123456789012:role/sagemaker-exec",
        "INITIAL_INSTANCE_COUNT": "2",
        "ROLLBACK_ALARM_NAMES": f"{ENDPOINT}-invocation-5xx,{COMPARISON}",
        "AUTOSCALING_MAX_CAPACITY": "0",
        "AWS_LAMBDA_FUNCTION_NAME": "iris-deployer",
    }.items():
        monkeypatch.setenv(key, value)
    cw = boto3.client("cloudwatch", region_name="us-east-1")
    # As the stack declares them (components/blue_green_endpoint.py): a plain 5xx alarm, and the
    # comparison pointed at no fleet.
    cw.put_metric_alarm(
        AlarmName=f"{ENDPOINT}-invocation-5xx",
        Namespace="AWS/SageMaker",
        MetricName="Invocation5XXErrors",
        Dimensions=[
            {"Name": "EndpointName", "Value": ENDPOINT},
            {"Name": "VariantName", "Value": "AllTraffic"},
        ],
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=2,
        Threshold=1,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
    )
    cw.put_metric_alarm(
        AlarmName=COMPARISON,
        AlarmDescription="green vs blue",
        Metrics=fleet_alarms.comparison_queries(ENDPOINT, "AllTraffic", 20),
        EvaluationPeriods=2,
        Threshold=0.05,
        ComparisonOperator="GreaterThanThreshold",
        TreatMissingData="notBreaching",
    )
    cw.set_alarm_state(AlarmName=COMPARISON, StateValue="ALARM", StateReason="the last deployment's fleets")
    yield {"sm": boto3.client("sagemaker", region_name="us-east-1"), "cw": cw, "ext": ext}
    ext.reset()


def _deliver(aws: Any, arn: str) -> dict[str, Any]:
    from workloads.serve.deployer import handler

    sm, ext = aws["sm"], aws["ext"]
    sm.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Approved")
    result = handler.handler(ext.package_event(sm, arn))
    handler.handler(ext.endpoint_event(sm, ENDPOINT))
    return result


def test_before_each_update_the_deployer_points_the_comparison_at_blue_and_green(aws: Any) -> None:
    sm, cw, ext = aws["sm"], aws["cw"], aws["ext"]
    _deliver(aws, ext.register_package(sm, GROUP, commit="v1"))
    blue = sm.describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"]
    result = _deliver(aws, ext.register_package(sm, GROUP, commit="v2"))
    green = result["endpoint_config"]
    assert (result["status"], ext.behaviour.updates[-1]["EndpointConfigName"]) == ("InProgress", green)

    (alarm,) = cw.describe_alarms(AlarmNames=[COMPARISON])["MetricAlarms"]
    pointed = {
        q["Id"]: {d["Name"]: d["Value"] for d in q["MetricStat"]["Metric"]["Dimensions"]}[
            "EndpointConfigName"
        ]
        for q in alarm["Metrics"]
        if "MetricStat" in q
    }
    assert pointed == {"green_4xx": green, "green_requests": green, "blue_4xx": blue, "blue_requests": blue}
    # The rest as the stack declared it, and a fresh start: the last deployment's ALARM is not this one's.
    assert (alarm["Threshold"], alarm["EvaluationPeriods"], alarm["TreatMissingData"]) == (
        0.05,
        2,
        "notBreaching",
    )
    assert alarm["AlarmDescription"] == "green vs blue"
    assert alarm["StateValue"] == "OK" and green in alarm["StateReason"]
    (five_xx,) = cw.describe_alarms(AlarmNames=[f"{ENDPOINT}-invocation-5xx"])["MetricAlarms"]
    # The 5xx alarm is left as the stack made it (the deployer may not rewrite it, tests/test_iam_reference.py).
    assert (five_xx["MetricName"], five_xx.get("Metrics") or []) == ("Invocation5XXErrors", [])
    # And SageMaker watches it: it is in the update's AutoRollbackConfiguration.
    rollback = ext.behaviour.updates[-1]["DeploymentConfig"]["AutoRollbackConfiguration"]["Alarms"]
    assert {"AlarmName": COMPARISON} in rollback


def test_the_deployer_reads_the_whole_signature_json_a_long_signature_is_cut_in_the_properties(
    aws: Any,
) -> None:
    import json

    import boto3

    sm, ext = aws["sm"], aws["ext"]
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="mlops-artifacts")
    wide = [{"name": f"feature_{i:02d}", "type": "number"} for i in range(40)]
    for commit, features in (("v1", wide), ("v2", wide[:-1])):
        signature = {"task": "classification", "features": features, "output": {}}
        s3.put_object(
            Bucket="mlops-artifacts",
            Key=f"training/{commit}/output/signature.json",
            Body=json.dumps(signature).encode(),
        )
    _deliver(
        aws,
        ext.register_package(sm, GROUP, commit="v1", signature={"task": "classification", "features": wide}),
    )
    v2 = ext.register_package(
        sm, GROUP, commit="v2", signature={"task": "classification", "features": wide[:-1]}
    )
    assert sm.describe_model_package(ModelPackageName=v2)["CustomerMetadataProperties"][
        "signature_features"
    ].endswith("...")
    result = _deliver(aws, v2)
    # Only the whole file shows the last feature went: the cut properties of both look the same.
    assert result["status"] == "Skipped"
    assert "feature removed: feature_39 (number)" in result["message"]
    assert ext.behaviour.updates == []


def test_mlops_models_on_aws_shows_the_signature_estimator_and_the_allowance(aws: Any) -> None:
    from mlops.aws import AwsBackend, AwsSettings
    from mlops.cli import estimator_text, signature_text

    sm, ext = aws["sm"], aws["ext"]
    signature = {
        **ext.IRIS_SIGNATURE,
        "estimator": "sklearn.pipeline.Pipeline(StandardScaler, LogisticRegression)",
        "hyperparameters": {"C": "1.0", "max_iter": "1000"},
    }
    arn = ext.register_package(sm, GROUP, commit="v1", signature=signature)
    backend = AwsBackend(AwsSettings.from_env(), poll_seconds=0)
    backend.approve("1", allow_signature_change=True)
    (model,) = backend.list_models()
    assert signature_text(model) == (
        "classification: sepal_length (number), sepal_width (number), petal_length (number), petal_width "
        "(number) -> classes setosa versicolor virginica"
    )
    assert estimator_text(model) == (
        "sklearn.pipeline.Pipeline_StandardScaler_ LogisticRegression_ (C=1.0, max_iter=1000)"
    )
    assert model.signature_change_allowed is True
    package = sm.describe_model_package(ModelPackageName=arn)
    assert package["CustomerMetadataProperties"]["signature_change_allowed"] == "true"
    assert "with --allow-signature-change" in package["ApprovalDescription"]
    # A later approval without the flag takes the allowance away: it belongs to that approval.
    backend.approve("1", force=True)
    assert (
        "signature_change_allowed"
        not in sm.describe_model_package(ModelPackageName=arn)["CustomerMetadataProperties"]
    )


def test_the_seeds_approve_py_refuses_a_breaking_version_up_front(
    aws: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    import boto3

    from workloads.train import approve

    sm, ext = aws["sm"], aws["ext"]
    _deliver(aws, ext.register_package(sm, GROUP, commit="v1"))
    narrow = {**ext.IRIS_SIGNATURE, "features": ext.IRIS_SIGNATURE["features"][:3]}
    v2 = ext.register_package(sm, GROUP, commit="v2", signature=narrow)
    clients = {n: boto3.client(n, region_name="us-east-1") for n in ("sagemaker", "s3", "sts")}

    assert approve.main(["--model_package_arn", v2, "--endpoint-name", ENDPOINT], clients) == 1
    err = capsys.readouterr().err
    assert "feature removed: petal_width (number)" in err
    assert "`mlops approve 2 --allow-signature-change`" in err
    assert sm.describe_model_package(ModelPackageName=v2)["ModelApprovalStatus"] == "PendingManualApproval"

    argv = ["--model_package_arn", v2, "--endpoint-name", ENDPOINT, "--allow-signature-change"]
    assert approve.main(argv, clients) == 0
    after = sm.describe_model_package(ModelPackageName=v2)
    assert after["ModelApprovalStatus"] == "Approved"
    assert after["CustomerMetadataProperties"]["signature_change_allowed"] == "true"


def test_mlops_models_locally_shows_the_signature_estimator_and_hyperparameters(tmp_path: Any) -> None:
    from local_daemon_helpers import build_model, fast_settings, register
    from rich.console import Console

    from mlops.cli import ModelRow, estimator_text, models_view, signature_text
    from mlops.local.backend import LocalBackend

    settings = fast_settings(tmp_path / "home")
    register(settings, build_model(tmp_path / "m1", c=0.5))
    backend = LocalBackend(settings, cwd=tmp_path, approver="test")
    try:
        (model,) = backend.list_models()
    finally:
        backend.close()
    assert signature_text(model) == (
        "classification: sepal_length (number), sepal_width (number), petal_length (number), petal_width "
        "(number) -> classes setosa versicolor virginica"
    )
    assert estimator_text(model) == "sklearn.pipeline.Pipeline(StandardScaler, LogisticRegression) (C=0.5)"
    console = Console(width=200, record=True)
    console.print(models_view([ModelRow(model)]))
    text = console.export_text()
    assert "signature classification: sepal_length (number)" in text
    assert "estimator sklearn.pipeline.Pipeline(StandardScaler, LogisticRegression) (C=0.5)" in text


def _imputing(imputes: bool | None) -> Signature:
    raw: dict[str, Any] = {
        "task": "classification",
        "features": [{"name": n, "type": "number"} for n in IRIS],
    }
    if imputes is not None:
        raw["imputes_missing"] = imputes
    found = Signature.from_mapping(raw)
    assert found is not None
    return found


@pytest.mark.parametrize(
    ("serving", "new", "changes"),
    [
        # The serving model answers a null number; the new one would answer such rows 400.
        (
            True,
            False,
            [
                "missing numbers no longer accepted: null for sepal_length, sepal_width, petal_length, "
                "petal_width would be refused"
            ],
        ),
        (False, True, []),  # accepting more is not a break
        (True, True, []),
        (True, None, []),  # a record that does not say is not compared
        (None, False, []),
    ],
)
def test_a_version_that_refuses_nulls_the_serving_one_scores_is_a_breaking_change(
    serving: bool | None, new: bool | None, changes: list[str]
) -> None:
    check = lc.compare_signatures(2, _imputing(new), 1, _imputing(serving))
    assert (list(check.changes), check.compatible) == (changes, not changes)


def test_the_artifacts_signature_records_whether_it_scores_a_missing_number() -> None:
    from workloads.model_io import ModelMetadata

    meta = ModelMetadata(
        feature_names=list(IRIS), class_labels=["a"], target="y", algorithm="x", imputes_missing=True
    )
    assert meta.signature["imputes_missing"] is True
    assert Signature.from_mapping(meta.signature) == _imputing(True)
