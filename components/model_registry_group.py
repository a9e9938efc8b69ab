"""ModelRegistryGroup: the SageMaker model package group, and the approval -> deployer wiring.

Approving a package (approve.py / `mlops approve`) makes SageMaker emit a "SageMaker Model Package
State Change" event; the rule here forwards exactly the approvals of this group to the deployer
Lambda. Delivery is retried, and an event that still cannot be delivered lands in an encrypted SQS
dead-letter queue instead of being lost.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict

import pulumi
import pulumi_aws as aws

from components.event_delivery import DLQ_RETENTION_SECONDS, deliver_to_lambda
from components.iam import aws_context

PACKAGE_EVENT_DETAIL_TYPE = "SageMaker Model Package State Change"
APPROVED = "Approved"
# workloads/serve/deployer/deployer.py REGISTRY_TEARDOWN.
REGISTRY_TEARDOWN = "model-registry-teardown"


class ModelRegistryGroupArgs(TypedDict):
    group_name: pulumi.Input[str]
    """Model package group name (lower case: SageMaker ARNs lower-case names)."""
    deployer_function_arn: pulumi.Input[str]
    """The Lambda that deploys an approved package (BlueGreenEndpoint.deployer_function_arn)."""
    description: NotRequired[pulumi.Input[str]]
    max_event_age_seconds: NotRequired[pulumi.Input[int]]
    """How long EventBridge keeps retrying delivery (default 3600)."""
    max_retry_attempts: NotRequired[pulumi.Input[int]]
    """Delivery retries before the event goes to the dead-letter queue (default 8)."""
    dlq_retention_seconds: NotRequired[pulumi.Input[int]]
    """How long undelivered approvals stay in the dead-letter queue (default 14 days)."""
    deployer_resources: NotRequired[list[pulumi.Resource]]
    """The deployer's function and grants (BlueGreenEndpoint.deployer_resources): the versions'
    teardown runs through them, so they are deleted after it."""
    delete_versions_on_destroy: NotRequired[bool]
    """`pulumi destroy` deletes the group's versions, then the group (SageMaker refuses to delete a group
    that has versions; the deployer deletes them). Off (default): the group and its versions are kept
    on destroy, as a registry of record should be."""


class ModelRegistryGroup(pulumi.ComponentResource):
    """Model package group + EventBridge rule on its approvals -> deployer, with retry and DLQ."""

    group_name: pulumi.Output[str]
    group_arn: pulumi.Output[str]
    rule_arn: pulumi.Output[str]
    dead_letter_queue_url: pulumi.Output[str]
    dead_letter_queue_arn: pulumi.Output[str]

    def __init__(
        self, name: str, args: ModelRegistryGroupArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mlops:index:ModelRegistryGroup", name, None, opts)
        self._name = name
        self._args = args
        self._delete_versions = bool(args.get("delete_versions_on_destroy", False))
        group = aws.sagemaker.ModelPackageGroup(
            f"{name}-group",
            aws.sagemaker.ModelPackageGroupArgs(
                model_package_group_name=args["group_name"],
                model_package_group_description=args.get(
                    "description", "Models trained by the pipeline; approval deploys one."
                ),
            ),
            opts=pulumi.ResourceOptions(parent=self, retain_on_delete=not self._delete_versions),
        )
        self.group_name = group.model_package_group_name
        self.group_arn = group.arn
        rule = self._create_rule()
        self.rule_arn = rule.arn
        queue = self._deliver_to_deployer(rule)
        self.dead_letter_queue_url = queue.url
        self.dead_letter_queue_arn = queue.arn
        if self._delete_versions:
            self._create_versions_teardown(group)
        self.register_outputs(
            {
                "group_name": self.group_name,
                "group_arn": self.group_arn,
                "rule_arn": self.rule_arn,
                "dead_letter_queue_url": self.dead_letter_queue_url,
            }
        )

    def _create_rule(self) -> aws.cloudwatch.EventRule:
        return aws.cloudwatch.EventRule(
            f"{self._name}-approved-rule",
            aws.cloudwatch.EventRuleArgs(
                description="A model package of this group was approved: deploy it",
                event_pattern=pulumi.Output.json_dumps(
                    {
                        "source": ["aws.sagemaker"],
                        "detail-type": [PACKAGE_EVENT_DETAIL_TYPE],
                        "detail": {
                            "ModelPackageGroupName": [self.group_name],
                            "ModelApprovalStatus": [APPROVED],
                        },
                    }
                ),
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _deliver_to_deployer(self, rule: aws.cloudwatch.EventRule) -> aws.sqs.Queue:
        args = self._args
        return deliver_to_lambda(
            self,
            self._name,
            "approved",
            rule=rule,
            function_arn=args["deployer_function_arn"],
            account_id=aws_context(self).account_id,
            max_event_age_seconds=args.get("max_event_age_seconds", 3600),
            max_retry_attempts=args.get("max_retry_attempts", 8),
            dlq_retention_seconds=args.get("dlq_retention_seconds", DLQ_RETENTION_SECONDS),
        )

    def _create_versions_teardown(self, group: aws.sagemaker.ModelPackageGroup) -> None:
        # Deleted on `pulumi destroy` before the group (it depends on it), which invokes the deployer
        # with {"tf": {"action": "delete"}, "purpose": ...}: the deployer deletes every version, and
        # only then is the group deleted. The deployer's role is granted DeleteModelPackage on this
        # group when BlueGreenEndpoint's delete_model_packages_on_destroy is on.
        aws.lambda_.Invocation(
            f"{self._name}-versions-teardown",
            aws.lambda_.InvocationArgs(
                function_name=self._args["deployer_function_arn"],
                lifecycle_scope="CRUD",
                input=pulumi.Output.json_dumps({"purpose": REGISTRY_TEARDOWN, "group_name": self.group_name}),
            ),
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[group, *self._args.get("deployer_resources", [])]
            ),
        )
