"""IAM helpers shared by the components, and the one list of actions allowed on Resource "*".

Policies are built as Python dicts and serialised with pulumi.Output.json_dumps, because almost
every statement names an ARN that is only known once another resource exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

Statement = dict[str, Any]

# Actions that AWS only authorises on Resource "*" (the Service Authorization Reference lists no
# resource type for them), with why the platform needs each. A statement may use Resource "*" only
# for actions named here; tests/test_infra_security.py enforces it on every stack.
RESOURCE_STAR_EXCEPTIONS: dict[str, str] = {
    "ecr:GetAuthorizationToken": (
        "Docker login to ECR; the token is registry-wide, so the action has no resource type. "
        "Pulls and pushes themselves are scoped to the one repository."
    ),
    "cloudwatch:PutMetricData": (
        "CloudWatch metrics have no ARN; every grant carries a cloudwatch:namespace condition instead."
    ),
    "sagemaker:ListModelPackages": (
        "SageMaker List* actions (except ListTags) have no resource type; the deployer passes its group name."
    ),
    "sagemaker:ListEndpoints": (
        "SageMaker List* actions have no resource type; the deployer must see which configs any endpoint uses "
        "before it deletes one."
    ),
    "sagemaker:ListEndpointConfigs": (
        "SageMaker List* actions have no resource type; the deployer filters by its endpoint-name prefix and tags."
    ),
    "sagemaker:ListModels": (
        "SageMaker List* actions have no resource type; the deployer filters by its endpoint-name prefix and tags."
    ),
    "application-autoscaling:DescribeScalableTargets": (
        "Describe calls of Application Auto Scaling have no resource type."
    ),
    "application-autoscaling:RegisterScalableTarget": (
        "A scalable target's ARN carries a random id assigned at registration, so it cannot be named "
        "beforehand; the grant is narrowed by conditions to SageMaker variant instance counts registered "
        "with this endpoint's mlops:endpoint tag. Later calls address the target by that tag."
    ),
    "application-autoscaling:TagResource": (
        "Authorised together with RegisterScalableTarget when it passes Tags (a dependent action in the "
        "Service Authorization Reference), before the target's random ARN exists; narrowed to requests "
        "carrying this endpoint's mlops:endpoint tag."
    ),
}

# Condition that every Resource "*" grant of cloudwatch:PutMetricData must carry.
METRIC_NAMESPACE_CONDITION_KEY = "cloudwatch:namespace"


@dataclass(frozen=True)
class AwsContext:
    """Partition, region and account of the provider a component deploys with."""

    partition: pulumi.Output[str]
    region: pulumi.Output[str]
    account_id: pulumi.Output[str]

    def arn(self, service: str, resource: pulumi.Input[str], *, regional: bool = True) -> pulumi.Output[str]:
        """arn:<partition>:<service>:<region>:<account>:<resource> (IAM and S3 ARNs differ: see below)."""
        region: pulumi.Input[str] = self.region if regional else ""
        return pulumi.Output.concat(
            "arn:", self.partition, ":", service, ":", region, ":", self.account_id, ":", resource
        )

    def s3_arn(self, resource: pulumi.Input[str]) -> pulumi.Output[str]:
        # S3 ARNs carry neither region nor account.
        return pulumi.Output.concat("arn:", self.partition, ":s3:::", resource)


def aws_context(parent: pulumi.Resource) -> AwsContext:
    """Look up partition/region/account through the parent's provider (so an explicit provider wins)."""
    opts = pulumi.InvokeOutputOptions(parent=parent)
    identity = aws.get_caller_identity_output(opts=opts)
    region = aws.get_region_output(opts=opts)
    partition = aws.get_partition_output(opts=opts)
    return AwsContext(
        partition=partition.partition,
        region=region.region.apply(lambda r: r or ""),
        account_id=identity.account_id,
    )


def policy_document(statements: list[Statement]) -> pulumi.Output[str]:
    """A policy document from statements whose values may be Outputs."""
    return pulumi.Output.json_dumps({"Version": "2012-10-17", "Statement": statements})


def allow(
    sid: str,
    actions: list[str],
    resources: Sequence[pulumi.Input[str]] | str,
    condition: dict[str, Any] | None = None,
) -> Statement:
    statement: Statement = {
        "Sid": sid,
        "Effect": "Allow",
        "Action": sorted(actions),
        "Resource": resources if isinstance(resources, str) else list(resources),
    }
    if condition:
        statement["Condition"] = condition
    return statement


# Services whose role assumption is not documented to carry aws:SourceAccount: a condition on it
# would make AssumeRole fail. API Gateway's account-wide CloudWatch role is assumed by the service for
# every API of the account (UpdateAccount checks it), and its documentation shows a plain trust policy.
NO_SOURCE_ACCOUNT_CONTEXT = {
    "apigateway.amazonaws.com": "API Gateway's CloudWatch Logs role trust policy, as documented, has no "
    "conditions; the role is account-wide and only API Gateway of this account is told its ARN.",
}


def assume_role_policy(service: str, ctx: AwsContext) -> pulumi.Output[str]:
    """Trust policy for one AWS service, limited to this account (confused-deputy protection)
    where the service sends aws:SourceAccount."""
    statement: Statement = {
        "Sid": "AssumedByService",
        "Effect": "Allow",
        "Principal": {"Service": service},
        "Action": ["sts:AssumeRole"],
    }
    if service not in NO_SOURCE_ACCOUNT_CONTEXT:
        statement["Condition"] = {"StringEquals": {"aws:SourceAccount": ctx.account_id}}
    return policy_document([statement])


def log_group_arn(ctx: AwsContext, name: pulumi.Input[str]) -> pulumi.Output[str]:
    """The ARN CloudWatch Logs authorises log-group actions against: `log-group:NAME:*`.

    The Service Authorization Reference shows `log-group:${LogGroupName}`, but CloudWatch Logs
    evaluates the group's ARN with the trailing `:*` (its IAM documentation), so a grant on the bare
    name matches nothing. Log streams are `log-group:NAME:log-stream:NAME`.
    """
    return pulumi.Output.concat(ctx.arn("logs", pulumi.Output.concat("log-group:", name)), ":*")


def log_writer_statement(sid: str, log_group_arns: Sequence[pulumi.Input[str]]) -> Statement:
    """Write to the named log groups only (the groups are created by Pulumi with a retention).

    `log_group_arns` are the groups' own ARNs as Pulumi reports them (`...:log-group:NAME`, with or
    without the trailing `:*`)."""
    streams = [
        pulumi.Output.from_input(arn).apply(lambda a: a.removesuffix(":*") + ":log-stream:*")
        for arn in log_group_arns
    ]
    return allow(sid, ["logs:CreateLogStream", "logs:PutLogEvents"], streams)


def metric_writer_statement(sid: str, namespaces: list[str]) -> Statement:
    return allow(
        sid,
        ["cloudwatch:PutMetricData"],
        "*",
        {"StringEquals": {METRIC_NAMESPACE_CONDITION_KEY: namespaces}},
    )


def ecr_pull_statements(repository_arn: pulumi.Input[str]) -> list[Statement]:
    return [
        allow("EcrLogin", ["ecr:GetAuthorizationToken"], "*"),
        allow(
            "EcrPullThisRepository",
            ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
            [repository_arn],
        ),
    ]


def kms_statements(kms_key_arn: str, *, encrypt: bool) -> list[Statement]:
    """Use of the customer-managed key, when one is configured; AWS-managed keys need no grant."""
    if not kms_key_arn:
        return []
    actions = ["kms:Decrypt", "kms:DescribeKey"]
    if encrypt:
        actions += ["kms:Encrypt", "kms:GenerateDataKey"]
    return [allow("UseConfiguredKmsKey", actions, [kms_key_arn])]


def pass_role_statement(role_arn: pulumi.Input[str], service: str) -> Statement:
    """iam:PassRole for exactly one role and only to the service that must assume it."""
    return allow(
        "PassExecutionRole",
        ["iam:PassRole"],
        [role_arn],
        {"StringEquals": {"iam:PassedToService": service}},
    )


def deny_insecure_transport(resource_arn: pulumi.Input[str], service: str = "sqs") -> Statement:
    """Resource-policy statement refusing any request that is not over TLS."""
    return {
        "Sid": "DenyInsecureTransport",
        "Effect": "Deny",
        "Principal": "*",
        "Action": [f"{service}:*"],
        "Resource": [resource_arn],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }
