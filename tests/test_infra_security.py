"""Security properties of every stack file's program, checked on what the program would send to AWS."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pulumi_mocks import (
    ACCOUNT,
    REPO_ROOT,
    STACKS,
    ProgramRun,
    Registered,
    boto3_actions,
    program_run,
)

from components.iam import METRIC_NAMESPACE_CONDITION_KEY, RESOURCE_STAR_EXCEPTIONS

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# Permissions a role needs beyond the boto3 calls of its code, each for a reason outside that code.
LAMBDA_RUNTIME_EXTRAS = {
    "logs:CreateLogStream": "the Lambda runtime writes the function's log",
    "logs:PutLogEvents": "the Lambda runtime writes the function's log",
}
DEPLOYER_EXTRAS = {
    **LAMBDA_RUNTIME_EXTRAS,
    "iam:PassRole": "CreateModel hands SageMaker the execution role",
    "iam:CreateServiceLinkedRole": "the first RegisterScalableTarget creates Application Auto Scaling's role",
    # Finding 6: SageMaker's autoscaling prerequisites, checked by Application Auto Scaling on the caller.
    "sagemaker:UpdateEndpointWeightsAndCapacities": "Application Auto Scaling changes the variant's capacity",
    "cloudwatch:PutMetricAlarm": "target tracking creates its alarms with the caller's rights",
    "cloudwatch:DescribeAlarms": "target tracking and the UpdateEndpoint auto-rollback read their alarms",
    "cloudwatch:DeleteAlarms": "target tracking deletes its alarms when the policy goes",
    "application-autoscaling:TagResource": "RegisterScalableTarget with Tags (a dependent action)",
    "sqs:SendMessage": "Lambda's on-failure destination sends failed invocations with the function's role",
}
# Calls the code makes that a stack grants only when a setting allows them.
GRANTED_ONLY_WHEN = {
    "sagemaker:DeleteModelPackage": ("forceDestroy", "true"),
}
CODEBUILD_EXTRAS = {
    "logs:CreateLogStream": "CodeBuild writes the build log",
    "logs:PutLogEvents": "CodeBuild writes the build log",
    "ecr:GetAuthorizationToken": "buildspec: aws ecr get-login-password",
    "ecr:BatchCheckLayerAvailability": "buildspec: docker push",
    "ecr:InitiateLayerUpload": "buildspec: docker push",
    "ecr:UploadLayerPart": "buildspec: docker push",
    "ecr:CompleteLayerUpload": "buildspec: docker push",
    "ecr:PutImage": "buildspec: docker push",
    "ecr:BatchGetImage": "buildspec: docker build reuses layers already in the repository",
    "ecr:GetDownloadUrlForLayer": "buildspec: docker build reuses layers already in the repository",
    "s3:GetObjectVersion": "CodeBuild reads the pipeline's versioned source artifact",
    "s3:GetBucketLocation": "CodeBuild locates the pipeline's artifact bucket",
    "s3:ListBucket": "a missing object is a 404, not a 403, so the steps can report it",
    "sagemaker:AddTags": "CreateTrainingJob with Tags is authorised as AddTags too",
    "iam:PassRole": "CreateTrainingJob hands SageMaker the training role",
    "codecommit:GitPull": "a build started by hand clones the repository (CodeCommit)",
    "codeconnections:GetConnection": "a build started by hand clones the repository (connection)",
    "codestar-connections:GetConnection": "the same, under the service's older prefix",
    "codeconnections:GetConnectionToken": "a build started by hand clones the repository (connection)",
    "codeconnections:UseConnection": "a build started by hand clones the repository (connection)",
    "codestar-connections:GetConnectionToken": "the same, under the service's older prefix",
    "codestar-connections:UseConnection": "the same, under the service's older prefix",
}


@pytest.fixture(params=STACKS)
def run(request: pytest.FixtureRequest) -> ProgramRun:
    return program_run(request.param)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _allow_statements(run: ProgramRun) -> list[tuple[Registered, dict[str, Any]]]:
    return [
        (r, st)
        for r, key, doc in run.policies()
        if key == "policy"
        for st in doc["Statement"]
        if st["Effect"] == "Allow" and "Principal" not in st
    ]


def _role_actions(run: ProgramRun, policy_suffix: str) -> set[str]:
    policy = run.one("aws:iam/rolePolicy:RolePolicy", policy_suffix)
    doc = json.loads(policy.inputs["policy"])
    return {a for st in doc["Statement"] if st["Effect"] == "Allow" for a in _as_list(st["Action"])}


def test_the_program_declares_identity_policies(run: ProgramRun) -> None:
    # Guards the tests below against passing on an empty list.
    assert len(_allow_statements(run)) >= 30


def test_no_statement_allows_every_action_or_a_whole_service(run: ProgramRun) -> None:
    for r, st in _allow_statements(run):
        for action in _as_list(st["Action"]):
            assert "*" not in action, f"{r.where()}: statement {st['Sid']} allows {action}"


def test_resource_star_only_for_listed_actions_with_a_reason(run: ProgramRun) -> None:
    for r, st in _allow_statements(run):
        if "*" in _as_list(st["Resource"]):
            unlisted = set(_as_list(st["Action"])) - set(RESOURCE_STAR_EXCEPTIONS)
            assert not unlisted, f"{r.where()}: {st['Sid']} grants {sorted(unlisted)} on Resource *"
            if "cloudwatch:PutMetricData" in st["Action"]:
                namespaces = st["Condition"]["StringEquals"][METRIC_NAMESPACE_CONDITION_KEY]
                assert namespaces and "*" not in "".join(namespaces), r.where()
    assert all(len(reason) > 30 for reason in RESOURCE_STAR_EXCEPTIONS.values())


def test_every_resource_arn_is_in_this_account(run: ProgramRun) -> None:
    for r, st in _allow_statements(run):
        for arn in _as_list(st["Resource"]):
            if arn == "*" or arn.startswith("arn:aws:s3:::"):
                continue
            assert arn.split(":")[4] == ACCOUNT, f"{r.where()}: {st['Sid']} names {arn} outside the account"


def test_pass_role_names_one_role_and_one_service(run: ProgramRun) -> None:
    passes = [(r, st) for r, st in _allow_statements(run) if "iam:PassRole" in st["Action"]]
    assert len(passes) == 2, [r.where() for r, _ in passes]  # CodeBuild -> training, deployer -> hosting
    for r, st in passes:
        assert st["Action"] == ["iam:PassRole"], r.where()
        (role,) = st["Resource"]
        assert role.startswith(f"arn:aws:iam::{ACCOUNT}:role/") and "*" not in role, r.where()
        assert st["Condition"] == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}


def test_codebuild_registers_and_trains_only_in_this_group(run: ProgramRun) -> None:
    group = run.exports["model_package_group_name"]
    doc = json.loads(run.one("aws:iam/rolePolicy:RolePolicy", "-codebuild-policy").inputs["policy"])
    by_sid = {st["Sid"]: st for st in doc["Statement"]}
    prefix = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:"
    assert by_sid["RegisterInThisGroupOnly"]["Resource"] == [
        f"{prefix}model-package/{group}/*",
        f"{prefix}model-package-group/{group}",
    ]
    assert by_sid["RunTrainingJobs"]["Resource"] == [f"{prefix}training-job/{group[:34]}-*"]
    assert by_sid["PassExecutionRole"]["Resource"] == [run.exports["training_role_arn"]]


def test_trust_policies_name_one_service_in_this_account(run: ProgramRun) -> None:
    trusts = [(r, doc) for r, key, doc in run.policies() if key == "assumeRolePolicy"]
    roles = run.of_type("aws:iam/role:Role")
    assert len(trusts) == len(roles) >= 7
    for r, doc in trusts:
        (st,) = doc["Statement"]
        assert st["Action"] == ["sts:AssumeRole"], r.where()
        assert list(st["Principal"]) == ["Service"], r.where()
        if st["Principal"]["Service"] == "apigateway.amazonaws.com":
            # Finding 9: API Gateway is not documented to send aws:SourceAccount when it assumes its
            # account-wide CloudWatch role; a condition on it would make UpdateAccount fail.
            assert "Condition" not in st, r.where()
        else:
            assert st["Condition"] == {"StringEquals": {"aws:SourceAccount": ACCOUNT}}, r.where()
    assert {st["Principal"]["Service"] for _, doc in trusts for st in doc["Statement"]} >= {
        "apigateway.amazonaws.com",
        "sagemaker.amazonaws.com",
        "lambda.amazonaws.com",
    }


def test_every_bucket_blocks_public_access_encrypts_versions_and_denies_plain_http(run: ProgramRun) -> None:
    buckets = run.of_type("aws:s3/bucket:Bucket")
    assert buckets
    for bucket in buckets:
        name = bucket.outputs["bucket"]

        def for_bucket(typ: str, name: str = name) -> Registered:
            (found,) = [r for r in run.of_type(typ) if r.inputs["bucket"] == name]
            return found

        block = for_bucket("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")
        for flag in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"):
            assert block.inputs[flag] is True, f"{block.where()}: {flag}"
        sse = for_bucket(
            "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
        )
        (rule,) = sse.inputs["rules"]
        assert rule["applyServerSideEncryptionByDefault"]["sseAlgorithm"] in ("AES256", "aws:kms"), (
            sse.where()
        )
        versioning = for_bucket("aws:s3/bucketVersioning:BucketVersioning")
        assert versioning.inputs["versioningConfiguration"] == {"status": "Enabled"}, versioning.where()
        policy = json.loads(for_bucket("aws:s3/bucketPolicy:BucketPolicy").inputs["policy"])
        deny = [st for st in policy["Statement"] if st["Effect"] == "Deny"]
        assert deny == [
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": ["s3:*"],
                "Resource": [bucket.outputs["arn"], f"{bucket.outputs['arn']}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ], bucket.where()
        ownership = for_bucket("aws:s3/bucketOwnershipControls:BucketOwnershipControls")
        assert ownership.inputs["rule"] == {"objectOwnership": "BucketOwnerEnforced"}, ownership.where()


def test_every_api_method_requires_a_key(run: ProgramRun) -> None:
    methods = run.of_type("aws:apigateway/method:Method")
    assert methods
    for method in methods:
        assert method.inputs["apiKeyRequired"] is True, method.where()
    assert run.of_type("aws:apigateway/usagePlanKey:UsagePlanKey")


def test_ecr_scans_on_push_with_immutable_encrypted_tags(run: ProgramRun) -> None:
    (repo,) = run.of_type("aws:ecr/repository:Repository")
    assert repo.inputs["imageScanningConfiguration"] == {"scanOnPush": True}, repo.where()
    assert repo.inputs["imageTagMutability"] == "IMMUTABLE", repo.where()
    assert repo.inputs["encryptionConfigurations"][0]["encryptionType"] in ("AES256", "KMS"), repo.where()
    (lifecycle,) = run.of_type("aws:ecr/lifecyclePolicy:LifecyclePolicy")
    rules = json.loads(lifecycle.inputs["policy"])["rules"]
    assert rules[-1]["selection"]["countNumber"] == float(run.setting("ecrMaxImageCount")), lifecycle.where()


def test_every_log_group_has_this_stacks_retention(run: ProgramRun) -> None:
    groups = run.of_type("aws:cloudwatch/logGroup:LogGroup")
    assert len(groups) == 5  # build, endpoint, deployer, API Lambda, API access logs
    for group in groups:
        assert group.inputs["retentionInDays"] == float(run.setting("logRetentionDays")), group.where()


def test_queues_and_table_are_encrypted(run: ProgramRun) -> None:
    queues = run.of_type("aws:sqs/queue:Queue")
    assert len(queues) == 3  # approvals DLQ, endpoint-state DLQ, deployer failures
    policies = run.of_type("aws:sqs/queuePolicy:QueuePolicy")
    for queue in queues:
        assert queue.inputs["sqsManagedSseEnabled"] is True, queue.where()
        (policy,) = [p for p in policies if p.inputs["queueUrl"] == queue.outputs["url"]]
        statements = json.loads(policy.inputs["policy"])["Statement"]
        assert {
            "Sid": "DenyInsecureTransport",
            "Effect": "Deny",
            "Principal": "*",
            "Action": ["sqs:*"],
            "Resource": [queue.outputs["arn"]],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        } in statements, policy.where()
        for st in statements:
            if st["Effect"] == "Allow":
                # Only EventBridge, for one rule of this account, may send.
                assert st["Principal"] == {"Service": "events.amazonaws.com"}, policy.where()
                assert set(st["Condition"]) == {"ArnEquals", "StringEquals"}, policy.where()
                assert st["Condition"]["StringEquals"] == {"aws:SourceAccount": ACCOUNT}, policy.where()
    (table,) = run.of_type("aws:dynamodb/table:Table")
    assert table.inputs["serverSideEncryption"]["enabled"] is True, table.where()


def _code_dir(fn: Registered) -> Path:
    (inner,) = fn.inputs["code"].assets.values()
    return Path(inner.path)


@pytest.mark.parametrize(
    ("function_suffix", "policy_suffix", "extras"),
    [
        ("-deployer", "-deployer-policy", DEPLOYER_EXTRAS),
        ("-function", "-function-policy", LAMBDA_RUNTIME_EXTRAS),
    ],
)
def test_each_lambda_has_exactly_the_permissions_its_code_uses(
    run: ProgramRun, function_suffix: str, policy_suffix: str, extras: dict[str, str]
) -> None:
    fn = run.one("aws:lambda/function:Function", function_suffix)
    code_dir = _code_dir(fn)
    assert code_dir.is_dir(), f"{fn.where()}: code directory {code_dir} does not exist"
    used = boto3_actions([code_dir])
    assert used, f"{fn.where()}: found no boto3 calls in {code_dir}"
    granted = _role_actions(run, policy_suffix)
    for action, (key, value) in GRANTED_ONLY_WHEN.items():
        if action in used and run.setting(key) != value:
            assert action not in granted, f"{fn.where()}: {action} granted without {key}={value}"
            used.discard(action)
    assert used - granted == set(), f"{fn.where()}: code calls {sorted(used - granted)} without permission"
    unused = granted - used - set(extras)
    assert unused == set(), f"{fn.where()}: grants {sorted(unused)} its code never calls"


def test_codebuild_role_covers_the_build_steps_and_nothing_unexplained(run: ProgramRun) -> None:
    used = boto3_actions([REPO_ROOT / "workloads" / "train" / "steps.py"])
    assert used, "found no boto3 calls in workloads/train/steps.py"
    granted = _role_actions(run, "-codebuild-policy")
    assert used - granted == set(), f"build steps call {sorted(used - granted)} without permission"
    assert granted - used - set(CODEBUILD_EXTRAS) == set()


def test_boto3_action_reader_sees_calls_attributes_and_strings(tmp_path: Path) -> None:
    (tmp_path / "handler.py").write_text(
        "import boto3\n"
        "def handler(event, context):\n"
        "    sm = boto3.client('sagemaker')\n"
        "    sm.describe_endpoint(EndpointName='x')\n"
        "    cleanup = sm.delete_model\n"
        "    pages = sm.get_paginator('list_models')\n"
        "    return getattr(sm, 'list_endpoint_configs')\n"
        "def _client(name):\n"
        "    return boto3.client(name)\n"
        "def store():\n"
        "    _client('dynamodb').put_item(TableName='t', Item={})\n"
        "    clients = {n: boto3.client(n) for n in ('s3', 'logs')}\n"
        "    clients['s3'].head_object(Bucket='b', Key='k')\n"
        "    clients['logs'].filter_log_events(logGroupName='g')\n"
    )
    assert boto3_actions([tmp_path]) == {
        "sagemaker:DescribeEndpoint",
        "sagemaker:DeleteModel",
        "sagemaker:ListModels",
        "sagemaker:ListEndpointConfigs",
        "dynamodb:PutItem",
        "s3:GetObject",
        "logs:FilterLogEvents",
    }
