"""Rollback alarms that tell the green fleet from the blue one: the 4xx comparison of a blue/green shift.

During a blue/green update SageMaker publishes the endpoint's invocation metrics (AWS/SageMaker:
Invocations, Invocation4XXErrors, ...) with the dimensions EndpointName, VariantName and also
EndpointConfigName once the new fleet takes traffic (SageMaker's "Auto-Rollback Configuration and
Monitoring" guide, "Monitor model latency on the new fleet"). Both fleets keep the variant name
(AllTraffic), so EndpointConfigName is the only way to tell them apart; and a config is named per
deployment (`<endpoint>-v<version>-<hash>`), which the stack cannot know in advance.

So the stack (components/blue_green_endpoint.py) declares the alarm with these queries pointed at no
fleet (UNSET_CONFIG: no data, not breaching), and the deployer, right before each UpdateEndpoint,
points every rollback alarm whose queries carry the ids below at that deployment's two configs
(`retarget`), keeping the rest of the alarm (threshold = the margin, periods) as the stack set it.

The comparison: per minute, green's 4xx rate minus blue's, where both fleets answered at least
`min_requests` requests in that minute (LINEAR routing splits the same callers' traffic between them by
weight, so both see the same mix); otherwise 0. The alarm fires when it is above the margin for the
evaluation periods. Standard library only: the deployer Lambda's zip and the Pulumi program share it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

NAMESPACE = "AWS/SageMaker"
CONFIG_DIMENSION = "EndpointConfigName"
GREEN = "green_"
BLUE = "blue_"
UNSET_CONFIG = "none"  # the at-rest value: no fleet has it, so the queries find no data
RESULT_ID = "green_minus_blue_4xx_rate"


def comparison_queries(
    endpoint: Any,
    variant: str,
    min_requests: Any,
    *,
    period: int = 60,
    blue: Any = UNSET_CONFIG,
    green: Any = UNSET_CONFIG,
) -> list[dict[str, Any]]:
    """PutMetricAlarm's Metrics (MetricDataQuery, boto3's shape) for the 4xx comparison."""

    def stat(query_id: str, metric: str, config: Any) -> dict[str, Any]:
        return {
            "Id": query_id,
            "MetricStat": {
                "Metric": {
                    "Namespace": NAMESPACE,
                    "MetricName": metric,
                    "Dimensions": [
                        {"Name": "EndpointName", "Value": endpoint},
                        {"Name": "VariantName", "Value": variant},
                        {"Name": CONFIG_DIMENSION, "Value": config},
                    ],
                },
                "Period": period,
                "Stat": "Sum",
            },
            "ReturnData": False,
        }

    return [
        stat(f"{GREEN}4xx", "Invocation4XXErrors", green),
        stat(f"{GREEN}requests", "Invocations", green),
        stat(f"{BLUE}4xx", "Invocation4XXErrors", blue),
        stat(f"{BLUE}requests", "Invocations", blue),
        {
            "Id": RESULT_ID,
            "Expression": comparison_expression(min_requests),
            "Label": "green 4xx rate minus blue 4xx rate (both fleets with enough requests)",
            "ReturnData": True,
        },
    ]


def comparison_expression(min_requests: Any) -> str:
    n = f"{GREEN}requests"
    b = f"{BLUE}requests"
    return f"IF({n} >= {min_requests} AND {b} >= {min_requests}, {GREEN}4xx / {n} - {BLUE}4xx / {b}, 0)"


def _fleet(query: Mapping[str, Any]) -> str | None:
    query_id = str(query.get("Id", ""))
    if "MetricStat" not in query:
        return None
    return "green" if query_id.startswith(GREEN) else "blue" if query_id.startswith(BLUE) else None


def is_fleet_aware(queries: Sequence[Mapping[str, Any]]) -> bool:
    """Whether an alarm's queries name a fleet (ids green_*/blue_* with an EndpointConfigName)."""
    return any(
        _fleet(q) is not None
        and any(d.get("Name") == CONFIG_DIMENSION for d in q["MetricStat"]["Metric"].get("Dimensions", []))
        for q in queries
    )


def retarget(queries: Sequence[Mapping[str, Any]], blue: str, green: str) -> list[dict[str, Any]]:
    """The queries with each fleet's EndpointConfigName set to that fleet's config."""
    out = []
    for query in queries:
        copied = copy.deepcopy(dict(query))
        fleet = _fleet(copied)
        if fleet is not None:
            for dim in copied["MetricStat"]["Metric"].get("Dimensions", []):
                if dim.get("Name") == CONFIG_DIMENSION:
                    dim["Value"] = green if fleet == "green" else blue
        out.append(copied)
    return out


# What PutMetricAlarm takes back from DescribeAlarms' MetricAlarm when the deployer re-points an alarm
# (botocore's cloudwatch model: the members both shapes share, the metric queries apart).
ALARM_FIELDS = (
    "AlarmName",
    "AlarmDescription",
    "ActionsEnabled",
    "OKActions",
    "AlarmActions",
    "InsufficientDataActions",
    "EvaluationPeriods",
    "DatapointsToAlarm",
    "Threshold",
    "ComparisonOperator",
    "TreatMissingData",
    "EvaluateLowSampleCountPercentile",
    "ThresholdMetricId",
)
