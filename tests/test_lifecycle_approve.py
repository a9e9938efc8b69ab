"""approve.py and the AWS adapter's registry verbs against moto."""

from __future__ import annotations

import json
from typing import Any

import boto3
import moto_sagemaker_ext as ext
import pytest

from mlops.aws import AwsBackend, AwsSettings
from mlops.backend import PlatformError
from workloads.train import approve

GROUP = "iris-models"
BUCKET = "mlops-artifacts"
CALLER = "arn:aws:sts::123456789012:user/moto"  # moto's get_caller_identity for the test keys


@pytest.fixture
def sm(moto_aws: None) -> Any:
    ext.install()
    client = boto3.client("sagemaker", region_name="us-east-1")
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    report = {
        "multiclass_classification_metrics": {
            "accuracy": {"value": 0.9667, "standard_deviation": "NaN"},
            "f1_macro": {"value": 0.9665, "standard_deviation": "NaN"},
            "confusion_matrix": {"setosa": {"setosa": 10}},
        },
        "quality_gate": {"metric": "accuracy", "min_accuracy": 0.9, "value": 0.9667, "passed": True},
    }
    s3.put_object(Bucket=BUCKET, Key="training/c1/output/evaluation.json", Body=json.dumps(report).encode())
    return client


def test_approve_shows_metrics_and_records_the_approver(sm: Any, capsys: pytest.CaptureFixture[str]) -> None:
    arn = ext.register_package(sm, GROUP, bucket=BUCKET, commit="c1")
    assert approve.main(["--model_package_arn", arn, "--description", "beats v0 on holdout"]) == 0
    out = capsys.readouterr().out
    assert "accuracy       0.9667" in out and "f1_macro       0.9665" in out and "commit         c1" in out
    package = sm.describe_model_package(ModelPackageName=arn)
    assert package["ModelApprovalStatus"] == "Approved"
    assert package["ApprovalDescription"] == f"approved by {CALLER}: beats v0 on holdout"
    assert package["CustomerMetadataProperties"]["approved_by"] == CALLER
    assert package["CustomerMetadataProperties"]["commit"] == "c1"  # provenance kept
    assert out.strip().endswith(f"Approved: approved by {CALLER}: beats v0 on holdout")


def test_reject_needs_a_reason_and_records_it(sm: Any, capsys: pytest.CaptureFixture[str]) -> None:
    arn = ext.register_package(sm, GROUP, bucket=BUCKET, commit="c1")
    assert approve.main(["--model_package_arn", arn, "--reject"]) == 2
    assert "--reject needs --reason" in capsys.readouterr().err
    assert approve.main(["--model_package_arn", arn, "--reject", "--reason", "f1 too low on versicolor"]) == 0
    package = sm.describe_model_package(ModelPackageName=arn)
    assert package["ModelApprovalStatus"] == "Rejected"
    assert package["ApprovalDescription"] == f"rejected by {CALLER}: f1 too low on versicolor"


def test_refuses_a_decided_package_unless_forced(sm: Any, capsys: pytest.CaptureFixture[str]) -> None:
    arn = ext.register_package(sm, GROUP, bucket=BUCKET, commit="c1")
    assert approve.main(["--model_package_arn", arn, "--reject", "--reason", "no"]) == 0
    assert approve.main(["--model_package_arn", arn]) == 1
    assert "version 1 is Rejected, not PendingManualApproval; pass --force to set it to Approved anyway" in (
        capsys.readouterr().err
    )
    assert sm.describe_model_package(ModelPackageName=arn)["ModelApprovalStatus"] == "Rejected"
    assert approve.main(["--model_package_arn", arn, "--force"]) == 0
    assert sm.describe_model_package(ModelPackageName=arn)["ModelApprovalStatus"] == "Approved"


def test_missing_package_is_a_clear_error(sm: Any, capsys: pytest.CaptureFixture[str]) -> None:
    arn = ext.register_package(sm, GROUP, bucket=BUCKET, commit="c1")
    missing = arn[: arn.rindex("/")] + "/42"
    assert approve.main(["--model_package_arn", missing]) == 1
    assert capsys.readouterr().err.strip() == f"approve: model package {missing} does not exist"
    assert approve.main(["--model_package_arn", "not-an-arn"]) == 1
    assert "'not-an-arn' is not a model version (like 3) or a model package ARN" in capsys.readouterr().err


def test_backend_lists_versions_with_metrics_and_resolves_numbers(sm: Any) -> None:
    ext.register_package(sm, GROUP, bucket=BUCKET, commit="c1")
    ext.register_package(sm, GROUP, bucket=BUCKET, commit="c2")  # its evaluation.json is missing
    backend = AwsBackend(AwsSettings.from_env(group=GROUP))
    models = backend.list_models()
    assert [(m.version, m.status, m.source_commit) for m in models] == [
        (1, "PendingManualApproval", "c1"),
        (2, "PendingManualApproval", "c2"),
    ]
    assert models[0].metrics["accuracy"] == 0.9667
    assert models[0].metrics["quality_gate"]["passed"] is True
    assert (
        models[1]
        .metrics["metrics_error"]
        .startswith(f"cannot read s3://{BUCKET}/training/c2/output/evaluation.json")
    )
    assert backend.approve("2").status == "Approved"
    assert backend.get_model("v2").approver == CALLER
    with pytest.raises(PlatformError, match="model group iris-models has no version 9"):
        backend.get_model("9")
    with pytest.raises(PlatformError, match="a rejection needs a reason"):
        backend.reject("1", reason=" ")
