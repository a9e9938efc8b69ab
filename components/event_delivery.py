"""EventBridge rule -> Lambda, delivered with retries and an encrypted dead-letter queue: written once.

Both the approval rule (ModelRegistryGroup) and the endpoint-state rule (BlueGreenEndpoint) hand their
events to the deployer this way. Children are named `<name>-<role>-invoke|dlq|dlq-policy|target` and
parented to the component that calls this.
"""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from components.iam import deny_insecure_transport, policy_document

DLQ_RETENTION_SECONDS = 14 * 24 * 3600


def deliver_to_lambda(
    parent: pulumi.Resource,
    name: str,
    role: str,
    *,
    rule: aws.cloudwatch.EventRule,
    function_arn: pulumi.Input[str],
    account_id: pulumi.Input[str],
    max_event_age_seconds: pulumi.Input[int] = 3600,
    max_retry_attempts: pulumi.Input[int] = 8,
    dlq_retention_seconds: pulumi.Input[int] = DLQ_RETENTION_SECONDS,
) -> aws.sqs.Queue:
    """Target `rule` at the function; an event still undeliverable after the retries goes to the
    returned queue (only this rule of this account may send to it, over TLS only)."""
    opts = pulumi.ResourceOptions(parent=parent)
    permission = aws.lambda_.Permission(
        f"{name}-{role}-invoke",
        aws.lambda_.PermissionArgs(
            action="lambda:InvokeFunction",
            function=function_arn,
            principal="events.amazonaws.com",
            source_arn=rule.arn,
        ),
        opts=opts,
    )
    queue = aws.sqs.Queue(
        f"{name}-{role}-dlq",
        aws.sqs.QueueArgs(sqs_managed_sse_enabled=True, message_retention_seconds=dlq_retention_seconds),
        opts=opts,
    )
    aws.sqs.QueuePolicy(
        f"{name}-{role}-dlq-policy",
        aws.sqs.QueuePolicyArgs(
            queue_url=queue.url,
            policy=policy_document(
                [
                    {
                        "Sid": "UndeliveredEventsFromThisRule",
                        "Effect": "Allow",
                        "Principal": {"Service": "events.amazonaws.com"},
                        "Action": ["sqs:SendMessage"],
                        "Resource": [queue.arn],
                        "Condition": {
                            "ArnEquals": {"aws:SourceArn": rule.arn},
                            "StringEquals": {"aws:SourceAccount": account_id},
                        },
                    },
                    deny_insecure_transport(queue.arn),
                ]
            ),
        ),
        opts=opts,
    )
    aws.cloudwatch.EventTarget(
        f"{name}-{role}-target",
        aws.cloudwatch.EventTargetArgs(
            rule=rule.name,
            arn=function_arn,
            retry_policy=aws.cloudwatch.EventTargetRetryPolicyArgs(
                maximum_event_age_in_seconds=max_event_age_seconds, maximum_retry_attempts=max_retry_attempts
            ),
            dead_letter_config=aws.cloudwatch.EventTargetDeadLetterConfigArgs(arn=queue.arn),
        ),
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[permission]),
    )
    return queue
