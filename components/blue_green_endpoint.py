"""BlueGreenEndpoint: everything around the SageMaker endpoint except the endpoint itself.

Ownership split: the endpoint, its endpoint configs, models and autoscaling target exist only after
the first approval, so the deployer Lambda creates and updates them (blue/green, LINEAR traffic
shifting, auto-rollback on the alarms made here). Pulumi never declares the endpoint, so `pulumi up`
never fights a deployment. What Pulumi owns: the deployer and its role, the SageMaker execution
role, the rollback alarms, the data-capture location, the endpoint-state rule, and a lifecycle
invocation that makes the deployer tear its resources down on `pulumi destroy`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NotRequired, TypedDict

import pulumi
import pulumi_aws as aws

from components.alarms import occurrence_alarm
from components.artifact_store import ArtifactStore
from components.event_delivery import deliver_to_lambda
from components.iam import (
    Statement,
    allow,
    assume_role_policy,
    aws_context,
    deny_insecure_transport,
    ecr_pull_statements,
    kms_statements,
    log_group_arn,
    log_writer_statement,
    metric_writer_statement,
    pass_role_statement,
    policy_document,
)
from components.settings import settings_environment
from workloads.serve.deployer import fleet_alarms
from workloads.serve.deployer.settings_table import DEPLOYER, Aws, Shared

DEPLOYER_CODE_DIR = Path(__file__).resolve().parents[1] / "workloads" / "serve" / "deployer"
DEPLOYER_HANDLER = "handler.handler"
# The deployer always names the production variant this (workloads/serve/deployer/deployer.py).
VARIANT_NAME = "AllTraffic"
ENDPOINT_EVENT_DETAIL_TYPE = "SageMaker Endpoint State Change"
DEPLOYER_METRIC_NAMESPACE = "MLOps/Deployer"
ENDPOINT_METRIC_NAMESPACE = "/aws/sagemaker/Endpoints"
AUTOSCALING_SERVICE = "sagemaker.application-autoscaling.amazonaws.com"
AUTOSCALING_ROLE = "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint"
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
# The deployer tags the scalable target it registers with this key = the endpoint name, and every later
# autoscaling call is granted only on targets carrying it (workloads/serve/deployer/deployer.py).
ENDPOINT_TAG_KEY = "mlops:endpoint"
ROLLBACK_ALARM_SUFFIXES = ("-invocation-5xx", "-model-latency", "-4xx-vs-blue")
# The rollback alarm the deployer re-points at each deployment's two fleets (fleet_alarms).
FLEET_ALARM_SUFFIX = "-4xx-vs-blue"


class BlueGreenEndpointArgs(TypedDict):
    """The settings among these take the settings table's defaults (workloads/serve/deployer/settings_table.py;
    the README config table shows them under their stack keys)."""

    endpoint_name: pulumi.Input[str]
    """SageMaker endpoint the deployer creates (lower case, at most ~40 characters: model names append a suffix)."""
    model_package_group_name: pulumi.Input[str]
    """The group whose approved packages are deployed."""
    artifacts: ArtifactStore
    """The serving image's repository (the execution role may pull from it only) and the bucket of
    model artifacts (read) and data capture (write, under data-capture/)."""
    deployer_function_name: pulumi.Input[str]
    instance_type: NotRequired[pulumi.Input[str]]
    """Endpoint instance type."""
    initial_instance_count: NotRequired[pulumi.Input[int]]
    """Instances of a new endpoint (2 or more: a LINEAR step moves at least one whole instance)."""
    traffic_step_percent: NotRequired[pulumi.Input[int]]
    """LINEAR blue/green: share of the fleet shifted per step, 10-50, whole instances."""
    traffic_wait_seconds: NotRequired[pulumi.Input[int]]
    """LINEAR blue/green: wait between steps while the alarms watch."""
    termination_wait_seconds: NotRequired[pulumi.Input[int]]
    maximum_execution_timeout_seconds: NotRequired[pulumi.Input[int]]
    alarm_5xx_threshold: NotRequired[pulumi.Input[float]]
    """Invocation5XXErrors per minute at or above which the deployment rolls back."""
    alarm_latency_threshold_ms: NotRequired[pulumi.Input[float]]
    """Average ModelLatency in milliseconds above which the deployment rolls back."""
    alarm_evaluation_periods: NotRequired[pulumi.Input[int]]
    """Consecutive one-minute periods that must breach."""
    alarm_4xx_margin: NotRequired[pulumi.Input[float]]
    """The 4xx comparison: roll back when the green fleet's 4xx rate exceeds the blue fleet's, in the
    same minute, by more than this fraction (0.05 = 5 percentage points)."""
    alarm_4xx_min_requests: NotRequired[pulumi.Input[int]]
    """The 4xx comparison counts a minute only when each fleet answered at least this many requests
    in it."""
    data_capture: NotRequired[bool]
    """Capture requests and responses to s3://<bucket>/data-capture/<endpoint>/."""
    autoscaling_min_capacity: NotRequired[pulumi.Input[int]]
    autoscaling_max_capacity: NotRequired[pulumi.Input[int]]
    """0 = no autoscaling."""
    autoscaling_target_invocations: NotRequired[pulumi.Input[float]]
    """Target invocations per instance per minute."""
    log_retention_days: NotRequired[pulumi.Input[int]]
    alarm_topic_arn: NotRequired[pulumi.Input[str]]
    """SNS topic told when a deployment fails; empty = none."""
    kms_key_arn: NotRequired[str]
    """Customer-managed key for endpoint volumes and data capture; empty = AWS-managed."""
    code_dir: NotRequired[str]
    """Directory of the deployer's code (default workloads/serve/deployer)."""
    delete_model_packages_on_destroy: NotRequired[bool]
    """Let the deployer delete the group's versions on `pulumi destroy` (ModelRegistryGroup's
    delete_versions_on_destroy); off by default."""


class BlueGreenEndpoint(pulumi.ComponentResource):
    """Deployer Lambda, execution role, rollback alarms and lifecycle hooks of one SageMaker endpoint."""

    endpoint_name: pulumi.Output[str]
    deployer_function_arn: pulumi.Output[str]
    deployer_function_name: pulumi.Output[str]
    execution_role_arn: pulumi.Output[str]
    rollback_alarm_names: pulumi.Output[list[str]]
    data_capture_s3_uri: pulumi.Output[str]

    def __init__(
        self, name: str, args: BlueGreenEndpointArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mlops:index:BlueGreenEndpoint", name, None, opts)
        self._name = name
        self._args = args
        self._ctx = aws_context(self)
        self._kms_key_arn = args.get("kms_key_arn") or Aws.kms_key_arn.default
        self.endpoint_name = pulumi.Output.from_input(args["endpoint_name"])
        self.region: pulumi.Output[str] = self._ctx.region
        """The region the endpoint and its deployer live in."""
        self.data_capture_s3_uri = (
            pulumi.Output.concat(
                "s3://", args["artifacts"].artifact_bucket, "/data-capture/", self.endpoint_name
            )
            if args.get("data_capture", Aws.data_capture.default)
            else pulumi.Output.from_input("")
        )

        execution_role, execution_policy = self._create_execution_role()
        self.execution_role_arn = execution_role.arn
        alarms = self._create_rollback_alarms()
        self.rollback_alarm_names = pulumi.Output.all(*[a.name for a in alarms])
        self._failures = self._create_failure_queue()
        function, deployer_policy = self._create_deployer(execution_role)
        self.deployer_function_arn = function.arn
        self.deployer_function_name = function.name
        self.deployer_resources: list[pulumi.Resource] = [function, deployer_policy]
        self._create_endpoint_state_rule(function)
        self._create_deployer_alarm()
        self._create_failure_destination(function, deployer_policy)
        self._create_teardown_hook(function, [deployer_policy, execution_policy, execution_role])

        self.register_outputs(
            {
                "endpoint_name": self.endpoint_name,
                "deployer_function_arn": self.deployer_function_arn,
                "execution_role_arn": self.execution_role_arn,
                "rollback_alarm_names": self.rollback_alarm_names,
                "data_capture_s3_uri": self.data_capture_s3_uri,
            }
        )

    def _opts(self, depends_on: list[pulumi.Resource] | None = None) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=self, depends_on=depends_on)

    def _rollback_alarm_names(self) -> list[pulumi.Output[str]]:
        # Named here once: the alarms, the deployer's ROLLBACK_ALARM_NAMES and the grants to read them.
        return [pulumi.Output.concat(self.endpoint_name, suffix) for suffix in ROLLBACK_ALARM_SUFFIXES]

    def _rollback_alarm_arns(self) -> list[pulumi.Output[str]]:
        return [
            self._ctx.arn("cloudwatch", pulumi.Output.concat("alarm:", n))
            for n in self._rollback_alarm_names()
        ]

    def _sagemaker_arn(self, kind: str, suffix: str = "") -> pulumi.Output[str]:
        return self._ctx.arn("sagemaker", pulumi.Output.concat(kind, "/", self.endpoint_name, suffix))

    def _create_execution_role(self) -> tuple[aws.iam.Role, aws.iam.RolePolicy]:
        ctx = self._ctx
        args = self._args
        role = aws.iam.Role(
            f"{self._name}-execution-role",
            aws.iam.RoleArgs(
                description="SageMaker hosting: pull the image, read the model, write data capture",
                assume_role_policy=assume_role_policy("sagemaker.amazonaws.com", ctx),
            ),
            opts=self._opts(),
        )
        # Created here so it has a retention; SageMaker would otherwise create it without one.
        log_group = aws.cloudwatch.LogGroup(
            f"{self._name}-endpoint-logs",
            aws.cloudwatch.LogGroupArgs(
                name=pulumi.Output.concat(ENDPOINT_METRIC_NAMESPACE, "/", self.endpoint_name),
                retention_in_days=args.get("log_retention_days", Aws.log_retention_days.default),
            ),
            opts=self._opts(),
        )
        bucket_arn = pulumi.Output.from_input(args["artifacts"].artifact_bucket_arn)
        statements: list[Statement] = [
            *ecr_pull_statements(args["artifacts"].ecr_repository_arn),
            allow("ReadModelArtifacts", ["s3:GetObject"], [pulumi.Output.concat(bucket_arn, "/*")]),
            allow(
                "WriteDataCapture",
                ["s3:PutObject"],
                [pulumi.Output.concat(bucket_arn, "/data-capture/", self.endpoint_name, "/*")],
            ),
            # The group exists (made above, with a retention); SageMaker may still ask to create it.
            allow(
                "EndpointLogGroup",
                ["logs:CreateLogGroup", "logs:DescribeLogStreams"],
                [log_group_arn(ctx, log_group.name)],
            ),
            log_writer_statement("EndpointLogs", [log_group.arn]),
            metric_writer_statement("EndpointMetrics", [ENDPOINT_METRIC_NAMESPACE]),
            # SageMaker's deployment guardrails read the auto-rollback alarms during a blue/green update
            # ("ensure that your IAM execution role has permission to perform cloudwatch:DescribeAlarms").
            allow("ReadRollbackAlarms", ["cloudwatch:DescribeAlarms"], self._rollback_alarm_arns()),
            *kms_statements(self._kms_key_arn, encrypt=True),
        ]
        policy = aws.iam.RolePolicy(
            f"{self._name}-execution-policy",
            aws.iam.RolePolicyArgs(role=role.id, policy=policy_document(statements)),
            opts=self._opts(),
        )
        return role, policy

    def _create_rollback_alarms(self) -> list[aws.cloudwatch.MetricAlarm]:
        args = self._args
        dimensions = {"EndpointName": self.endpoint_name, "VariantName": VARIANT_NAME}
        periods = args.get("alarm_evaluation_periods", Aws.alarm_evaluation_periods.default)
        errors = aws.cloudwatch.MetricAlarm(
            f"{self._name}-5xx-alarm",
            aws.cloudwatch.MetricAlarmArgs(
                name=self._rollback_alarm_names()[0],
                alarm_description="Model containers answer 5XX: roll the blue/green deployment back",
                namespace="AWS/SageMaker",
                metric_name="Invocation5XXErrors",
                dimensions=dimensions,
                statistic="Sum",
                period=60,
                evaluation_periods=periods,
                threshold=args.get("alarm_5xx_threshold", Aws.alarm_5xx_threshold.default),
                comparison_operator="GreaterThanOrEqualToThreshold",
                # No traffic is not a failure; a quiet new fleet must not roll itself back.
                treat_missing_data="notBreaching",
            ),
            opts=self._opts(),
        )
        # ModelLatency is reported in microseconds.
        latency_us = pulumi.Output.from_input(
            args.get("alarm_latency_threshold_ms", Aws.alarm_latency_threshold_ms.default)
        ).apply(lambda ms: float(ms) * 1000.0)
        latency = aws.cloudwatch.MetricAlarm(
            f"{self._name}-latency-alarm",
            aws.cloudwatch.MetricAlarmArgs(
                name=self._rollback_alarm_names()[1],
                alarm_description="Model latency above the threshold: roll the blue/green deployment back",
                namespace="AWS/SageMaker",
                metric_name="ModelLatency",
                dimensions=dimensions,
                statistic="Average",
                period=60,
                evaluation_periods=periods,
                threshold=latency_us,
                comparison_operator="GreaterThanThreshold",
                treat_missing_data="notBreaching",
            ),
            opts=self._opts(),
        )
        # Green's 4xx rate against blue's on the same traffic (LINEAR splits it by weight): a version
        # that turns answers into 400s rolls back. The fleets differ only by EndpointConfigName, which
        # is per deployment, so the queries point at no fleet here and the deployer points them at each
        # deployment's two configs (workloads/serve/deployer/fleet_alarms.py); Pulumi owns the rest.
        queries = fleet_alarms.comparison_queries(
            self.endpoint_name,
            VARIANT_NAME,
            args.get("alarm_4xx_min_requests", Aws.alarm_4xx_min_requests.default),
        )
        comparison = aws.cloudwatch.MetricAlarm(
            f"{self._name}-4xx-comparison-alarm",
            aws.cloudwatch.MetricAlarmArgs(
                name=self._rollback_alarm_names()[2],
                alarm_description=(
                    "The new (green) fleet answers 4xx more often than the old (blue) one on the same "
                    "traffic: roll the blue/green deployment back"
                ),
                metric_queries=[_metric_query(q) for q in queries],
                evaluation_periods=periods,
                threshold=args.get("alarm_4xx_margin", Shared.alarm_4xx_margin.default),
                comparison_operator="GreaterThanThreshold",
                treat_missing_data="notBreaching",
            ),
            # The deployer re-points the queries at every deployment: a `pulumi up` must not undo that.
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["metricQueries"]),
        )
        return [errors, latency, comparison]

    def _deployer_statements(self, execution_role: aws.iam.Role) -> list[Statement]:
        """Exactly the calls workloads/serve/deployer makes (tests/test_infra_security.py compares)."""
        ctx = self._ctx
        group = pulumi.Output.from_input(self._args["model_package_group_name"])
        endpoint_arn = self._sagemaker_arn("endpoint")
        own_configs = self._sagemaker_arn("endpoint-config", "-v*")
        own_models = self._sagemaker_arn("model", "-v*")
        scaling_scope = {
            "application-autoscaling:service-namespace": "sagemaker",
            "application-autoscaling:scalable-dimension": SCALABLE_DIMENSION,
        }
        return [
            allow(
                "ReadApprovedPackages",
                ["sagemaker:DescribeModelPackage"],
                [ctx.arn("sagemaker", pulumi.Output.concat("model-package/", group, "/*"))],
            ),
            allow(
                "ManageOwnEndpoint",
                [
                    "sagemaker:AddTags",
                    "sagemaker:CreateEndpoint",
                    "sagemaker:DeleteEndpoint",
                    "sagemaker:ListTags",
                    "sagemaker:UpdateEndpoint",
                ],
                [endpoint_arn],
            ),
            # CreateEndpoint/UpdateEndpoint also authorise the endpoint config they name.
            allow(
                "ManageOwnConfigsAndModels",
                [
                    "sagemaker:AddTags",
                    "sagemaker:CreateEndpoint",
                    "sagemaker:CreateEndpointConfig",
                    "sagemaker:CreateModel",
                    "sagemaker:DeleteEndpointConfig",
                    "sagemaker:DeleteModel",
                    "sagemaker:ListTags",
                    "sagemaker:UpdateEndpoint",
                ],
                [own_configs, own_models],
            ),
            # Before deleting an unused config the deployer checks no endpoint of the account uses it.
            allow(
                "SeeWhatEndpointsUse",
                ["sagemaker:DescribeEndpoint", "sagemaker:DescribeEndpointConfig"],
                [ctx.arn("sagemaker", "endpoint/*"), ctx.arn("sagemaker", "endpoint-config/*")],
            ),
            allow(
                "ListWithoutResourceTypes",
                [
                    "sagemaker:ListEndpointConfigs",
                    "sagemaker:ListEndpoints",
                    "sagemaker:ListModelPackages",
                    "sagemaker:ListModels",
                ],
                "*",
            ),
            # Application Auto Scaling: a scalable target's ARN is a random id, so registration is
            # granted on "*" narrowed to this endpoint's variant and tag; everything after it only on
            # targets carrying the tag. Describe has no resource type.
            allow("DescribeScalableTargets", ["application-autoscaling:DescribeScalableTargets"], "*"),
            # TagResource is authorised with RegisterScalableTarget's Tags; the SAR gives it only tag
            # condition keys, so it may not carry the namespace/dimension ones.
            allow(
                "TagThisEndpointsScalableTarget",
                ["application-autoscaling:TagResource"],
                "*",
                {"StringEquals": {f"aws:RequestTag/{ENDPOINT_TAG_KEY}": self.endpoint_name}},
            ),
            allow(
                "RegisterThisEndpointsScalableTarget",
                ["application-autoscaling:RegisterScalableTarget"],
                "*",
                {
                    "StringEquals": {
                        **scaling_scope,
                        f"aws:RequestTag/{ENDPOINT_TAG_KEY}": self.endpoint_name,
                    }
                },
            ),
            allow(
                "ScaleThisEndpointOnly",
                [
                    "application-autoscaling:DeregisterScalableTarget",
                    "application-autoscaling:PutScalingPolicy",
                ],
                [ctx.arn("application-autoscaling", "scalable-target/*")],
                {
                    "StringEquals": {
                        **scaling_scope,
                        f"aws:ResourceTag/{ENDPOINT_TAG_KEY}": self.endpoint_name,
                    }
                },
            ),
            # SageMaker's autoscaling prerequisites: Application Auto Scaling checks that the caller may
            # change the variant's capacity and manage the target-tracking alarms it creates for it.
            allow("ChangeVariantCapacity", ["sagemaker:UpdateEndpointWeightsAndCapacities"], [endpoint_arn]),
            allow(
                "TargetTrackingAlarms",
                ["cloudwatch:DeleteAlarms", "cloudwatch:DescribeAlarms", "cloudwatch:PutMetricAlarm"],
                [
                    ctx.arn(
                        "cloudwatch",
                        pulumi.Output.concat(
                            "alarm:TargetTracking-endpoint/", self.endpoint_name, f"/variant/{VARIANT_NAME}-*"
                        ),
                    )
                ],
            ),
            # UpdateEndpoint with AutoRollbackConfiguration: SageMaker reads the alarms it is given; the
            # deployer reads them too, to re-point the 4xx comparison at the deployment's fleets.
            allow("ReadRollbackAlarms", ["cloudwatch:DescribeAlarms"], self._rollback_alarm_arns()),
            # That one alarm only (the 5xx and latency alarms stay as the stack set them).
            allow(
                "PointFleetAlarm",
                ["cloudwatch:PutMetricAlarm", "cloudwatch:SetAlarmState"],
                [
                    self._ctx.arn(
                        "cloudwatch", pulumi.Output.concat("alarm:", self._rollback_alarm_names()[2])
                    )
                ],
            ),
            # The signature gate reads each version's signature.json, published by the build.
            allow(
                "ReadSignatures",
                ["s3:GetObject"],
                [
                    pulumi.Output.concat(
                        self._args["artifacts"].artifact_bucket_arn, "/training/*/signature.json"
                    )
                ],
            ),
            # The first RegisterScalableTarget for SageMaker creates Application Auto Scaling's
            # service-linked role; only that role may be created.
            allow(
                "AutoscalingServiceLinkedRole",
                ["iam:CreateServiceLinkedRole"],
                [
                    pulumi.Output.concat(
                        "arn:",
                        ctx.partition,
                        ":iam::",
                        ctx.account_id,
                        f":role/aws-service-role/{AUTOSCALING_SERVICE}/{AUTOSCALING_ROLE}",
                    )
                ],
                {"StringEquals": {"iam:AWSServiceName": AUTOSCALING_SERVICE}},
            ),
            metric_writer_statement("DeploymentMetrics", [DEPLOYER_METRIC_NAMESPACE]),
            pass_role_statement(execution_role.arn, "sagemaker.amazonaws.com"),
            *(
                [
                    allow(
                        "DeleteVersionsOnDestroy",
                        ["sagemaker:DeleteModelPackage"],
                        [ctx.arn("sagemaker", pulumi.Output.concat("model-package/", group, "/*"))],
                    )
                ]
                if self._args.get("delete_model_packages_on_destroy", False)
                else []
            ),
            *kms_statements(self._kms_key_arn, encrypt=False),
        ]

    def _create_deployer(
        self, execution_role: aws.iam.Role
    ) -> tuple[aws.lambda_.Function, aws.iam.RolePolicy]:
        args = self._args
        ctx = self._ctx
        role = aws.iam.Role(
            f"{self._name}-deployer-role",
            aws.iam.RoleArgs(
                description="Deployer Lambda: blue/green deployments of approved models",
                assume_role_policy=assume_role_policy("lambda.amazonaws.com", ctx),
            ),
            opts=self._opts(),
        )
        function_name = pulumi.Output.from_input(args["deployer_function_name"])
        log_group = aws.cloudwatch.LogGroup(
            f"{self._name}-deployer-logs",
            aws.cloudwatch.LogGroupArgs(
                name=pulumi.Output.concat("/aws/lambda/", function_name),
                retention_in_days=args.get("log_retention_days", Aws.log_retention_days.default),
            ),
            opts=self._opts(),
        )
        policy = aws.iam.RolePolicy(
            f"{self._name}-deployer-policy",
            aws.iam.RolePolicyArgs(
                role=role.id,
                policy=policy_document(
                    [
                        log_writer_statement("WriteOwnLogs", [log_group.arn]),
                        # Lambda's on-failure destination sends with the function's role.
                        allow("ReportFailedInvocations", ["sqs:SendMessage"], [self._failures.arn]),
                        *self._deployer_statements(execution_role),
                    ]
                ),
            ),
            opts=self._opts(),
        )

        # What Pulumi wires, then every setting the table gives the deployer (settings_table.DEPLOYER).
        environment: dict[str, pulumi.Input[str]] = {
            "MODEL_PACKAGE_GROUP_NAME": args["model_package_group_name"],
            "ENDPOINT_NAME": self.endpoint_name,
            "EXECUTION_ROLE_ARN": execution_role.arn,
            "ROLLBACK_ALARM_NAMES": self.rollback_alarm_names.apply(",".join),
            "DATA_CAPTURE_S3_URI": self.data_capture_s3_uri,
            **settings_environment(args, "BlueGreenEndpoint", DEPLOYER),
        }
        code_dir = args.get("code_dir") or str(DEPLOYER_CODE_DIR)
        function = aws.lambda_.Function(
            f"{self._name}-deployer",
            aws.lambda_.FunctionArgs(
                name=function_name,
                description="Deploys approved models blue/green; tears its endpoint down on destroy",
                role=role.arn,
                runtime="python3.12",
                handler=DEPLOYER_HANDLER,
                code=pulumi.AssetArchive({".": pulumi.FileArchive(code_dir)}),
                # Teardown waits for the endpoint to be deleted; Lambda's maximum.
                timeout=900,
                memory_size=256,
                environment=aws.lambda_.FunctionEnvironmentArgs(variables=environment),
                logging_config=aws.lambda_.FunctionLoggingConfigArgs(
                    log_format="Text", log_group=log_group.name
                ),
            ),
            opts=self._opts(depends_on=[policy, log_group]),
        )
        return function, policy

    def _create_endpoint_state_rule(self, function: aws.lambda_.Function) -> None:
        rule = aws.cloudwatch.EventRule(
            f"{self._name}-endpoint-state-rule",
            aws.cloudwatch.EventRuleArgs(
                description="The endpoint changed state: verify the deployment, clean up",
                event_pattern=pulumi.Output.json_dumps(
                    {
                        "source": ["aws.sagemaker"],
                        "detail-type": [ENDPOINT_EVENT_DETAIL_TYPE],
                        "detail": {"EndpointName": [self.endpoint_name]},
                    }
                ),
            ),
            opts=self._opts(),
        )
        deliver_to_lambda(
            self,
            self._name,
            "endpoint-state",
            rule=rule,
            function_arn=function.arn,
            account_id=self._ctx.account_id,
        )

    def _create_failure_queue(self) -> aws.sqs.Queue:
        """Where an invocation of the deployer that still fails after Lambda's retries is kept, whole."""
        queue = aws.sqs.Queue(
            f"{self._name}-deployer-failures",
            aws.sqs.QueueArgs(sqs_managed_sse_enabled=True, message_retention_seconds=14 * 24 * 3600),
            opts=self._opts(),
        )
        aws.sqs.QueuePolicy(
            f"{self._name}-deployer-failures-policy",
            aws.sqs.QueuePolicyArgs(
                queue_url=queue.url, policy=policy_document([deny_insecure_transport(queue.arn)])
            ),
            opts=self._opts(),
        )
        return queue

    def _create_failure_destination(self, function: aws.lambda_.Function, policy: aws.iam.RolePolicy) -> None:
        # EventBridge's dead-letter queues only see events Lambda refused to accept; an invocation that
        # was accepted and then raised is retried by Lambda and, failing again, lands here and alarms.
        aws.lambda_.FunctionEventInvokeConfig(
            f"{self._name}-deployer-async",
            aws.lambda_.FunctionEventInvokeConfigArgs(
                function_name=function.name,
                maximum_retry_attempts=2,
                maximum_event_age_in_seconds=3600,
                destination_config=aws.lambda_.FunctionEventInvokeConfigDestinationConfigArgs(
                    on_failure=aws.lambda_.FunctionEventInvokeConfigDestinationConfigOnFailureArgs(
                        destination=self._failures.arn
                    )
                ),
            ),
            opts=self._opts(depends_on=[policy]),
        )
        occurrence_alarm(
            f"{self._name}-deployer-failures-alarm",
            name=pulumi.Output.concat(self.endpoint_name, "-deployer-failures"),
            description="A deployer invocation failed after retries; the event is in the queue",
            namespace="AWS/SQS",
            metric_name="ApproximateNumberOfMessagesVisible",
            dimensions={"QueueName": self._failures.name},
            statistic="Maximum",
            topic_arn=self._args.get("alarm_topic_arn"),
            opts=self._opts(),
        )

    def _create_deployer_alarm(self) -> None:
        occurrence_alarm(
            f"{self._name}-deployments-failed-alarm",
            name=pulumi.Output.concat(self.endpoint_name, "-deployments-failed"),
            description=(
                "A deployment failed or was rolled back (the endpoint serves the previous model), "
                "or its autoscaling could not be registered"
            ),
            namespace=DEPLOYER_METRIC_NAMESPACE,
            metric_name="DeploymentsFailed",
            dimensions={"Endpoint": self.endpoint_name},
            topic_arn=self._args.get("alarm_topic_arn"),
            opts=self._opts(),
        )

    def _create_teardown_hook(self, function: aws.lambda_.Function, keep: list[pulumi.Resource]) -> None:
        # On `pulumi destroy` this is deleted first (it depends on the function and the roles), and
        # deleting it invokes the deployer with {"tf": {"action": "delete"}}: the endpoint, configs,
        # models and scaling target the deployer made go before the deployer and its permissions do.
        aws.lambda_.Invocation(
            f"{self._name}-teardown-hook",
            aws.lambda_.InvocationArgs(
                function_name=function.name,
                lifecycle_scope="CRUD",
                input=pulumi.Output.json_dumps(
                    {"endpoint_name": self.endpoint_name, "purpose": "pulumi-lifecycle"}
                ),
            ),
            opts=self._opts(depends_on=[function, *keep]),
        )


def _metric_query(query: dict[str, Any]) -> aws.cloudwatch.MetricAlarmMetricQueryArgs:
    """A fleet_alarms query (boto3's MetricDataQuery shape) as the Pulumi resource takes it."""
    stat = query.get("MetricStat")
    metric = None
    if stat is not None:
        metric = aws.cloudwatch.MetricAlarmMetricQueryMetricArgs(
            namespace=stat["Metric"]["Namespace"],
            metric_name=stat["Metric"]["MetricName"],
            dimensions={d["Name"]: d["Value"] for d in stat["Metric"]["Dimensions"]},
            period=stat["Period"],
            stat=stat["Stat"],
        )
    return aws.cloudwatch.MetricAlarmMetricQueryArgs(
        id=query["Id"],
        metric=metric,
        expression=query.get("Expression"),
        label=query.get("Label"),
        return_data=query.get("ReturnData", False),
    )
