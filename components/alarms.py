"""The platform's "something happened once" alarms, written once: any datapoint >= 1 in a minute fires.

Used for the deployer's DeploymentsFailed, its failed-invocation queue and the API's RecordsNotStored.
No data is not a failure (treat_missing_data notBreaching); the SNS topic, when one is configured, is told.
"""

from __future__ import annotations

import pulumi
import pulumi_aws as aws


def occurrence_alarm(
    resource_name: str,
    *,
    name: pulumi.Input[str],
    description: str,
    namespace: str,
    metric_name: str,
    dimensions: dict[str, pulumi.Input[str]],
    statistic: str = "Sum",
    topic_arn: pulumi.Input[str] | None = None,
    opts: pulumi.ResourceOptions | None = None,
) -> aws.cloudwatch.MetricAlarm:
    return aws.cloudwatch.MetricAlarm(
        resource_name,
        aws.cloudwatch.MetricAlarmArgs(
            name=name,
            alarm_description=description,
            namespace=namespace,
            metric_name=metric_name,
            dimensions=dimensions,
            statistic=statistic,
            period=60,
            evaluation_periods=1,
            threshold=1,
            comparison_operator="GreaterThanOrEqualToThreshold",
            treat_missing_data="notBreaching",
            alarm_actions=[topic_arn] if topic_arn else None,
        ),
        opts=opts,
    )
