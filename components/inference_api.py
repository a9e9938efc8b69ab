"""InferenceApi: POST /predict -> Lambda -> SageMaker endpoint, every request and answer stored.

REST API (API Gateway v1) rather than an HTTP API because it has API keys and usage plans (per-key
throttling and quotas) built in. The Lambda may invoke exactly one endpoint and write exactly one
table; a record it cannot store is logged whole and counted (RecordsNotStored), and alarmed on here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NotRequired, TypedDict

import pulumi
import pulumi_aws as aws

from components.alarms import occurrence_alarm
from components.iam import (
    Statement,
    allow,
    assume_role_policy,
    aws_context,
    kms_statements,
    log_writer_statement,
    policy_document,
)
from components.settings import settings_environment
from workloads.serve.deployer.settings_table import API, Aws

API_LAMBDA_CODE_DIR = Path(__file__).resolve().parents[1] / "workloads" / "serve" / "api_lambda"
API_LAMBDA_HANDLER = "handler.handler"
RECORDS_METRIC_NAMESPACE = "MLOps/InferenceApi"
PREDICT_PATH = "predict"

# One JSON line per request: who called, what came back, how long it took.
ACCESS_LOG_FORMAT = json.dumps(
    {
        "requestId": "$context.requestId",
        "apiKeyId": "$context.identity.apiKeyId",
        "sourceIp": "$context.identity.sourceIp",
        "userAgent": "$context.identity.userAgent",
        "requestTime": "$context.requestTime",
        "httpMethod": "$context.httpMethod",
        "resourcePath": "$context.resourcePath",
        "status": "$context.status",
        "responseLength": "$context.responseLength",
        "integrationLatency": "$context.integration.latency",
        "responseLatency": "$context.responseLatency",
        "errorMessage": "$context.error.message",
    },
    separators=(",", ":"),
)


class InferenceApiArgs(TypedDict):
    """The settings among these take the settings table's defaults (workloads/serve/deployer/settings_table.py;
    the README config table shows them under their stack keys)."""

    endpoint_name: pulumi.Input[str]
    """The SageMaker endpoint answered from (created by the deployer; the API answers 503 until then)."""
    api_name: pulumi.Input[str]
    stage_name: pulumi.Input[str]
    """API stage, one per environment (dev, staging, prod)."""
    function_name: pulumi.Input[str]
    table_name: pulumi.Input[str]
    """DynamoDB table of request records."""
    throttle_rate_limit: NotRequired[pulumi.Input[float]]
    """Steady requests per second per API key."""
    throttle_burst_limit: NotRequired[pulumi.Input[int]]
    """Burst of requests per API key."""
    quota_limit: NotRequired[pulumi.Input[int]]
    """Requests per key per quota period."""
    quota_period: NotRequired[pulumi.Input[str]]
    """DAY, WEEK or MONTH."""
    max_body_bytes: NotRequired[pulumi.Input[int]]
    """Larger request bodies are answered 413."""
    record_ttl_days: NotRequired[pulumi.Input[int]]
    """Days a request record is kept; 0 = forever."""
    log_retention_days: NotRequired[pulumi.Input[int]]
    deletion_protection: NotRequired[pulumi.Input[bool]]
    """Protect the records table from deletion (production)."""
    manage_account_logging_role: NotRequired[bool]
    """Set API Gateway's account-wide CloudWatch role (needed once per account and region)."""
    alarm_topic_arn: NotRequired[pulumi.Input[str]]
    """SNS topic told when records cannot be stored; empty = none."""
    kms_key_arn: NotRequired[str]
    """Customer-managed key for the table; empty = AWS-managed."""
    code_dir: NotRequired[str]
    """Directory of the API Lambda's code (default workloads/serve/api_lambda)."""


class InferenceApi(pulumi.ComponentResource):
    """REST API with key + usage plan, the inference Lambda, and its records table."""

    api_url: pulumi.Output[str]
    """The stage's invoke URL + "/predict"."""
    api_key: pulumi.Output[str]
    """The API key value (secret)."""
    api_key_id: pulumi.Output[str]
    rest_api_id: pulumi.Output[str]
    stage_name: pulumi.Output[str]
    function_name: pulumi.Output[str]
    table_name: pulumi.Output[str]

    def __init__(self, name: str, args: InferenceApiArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlops:index:InferenceApi", name, None, opts)
        self._name = name
        self._args = args
        self._ctx = aws_context(self)
        self._kms_key_arn = args.get("kms_key_arn") or Aws.kms_key_arn.default
        self._endpoint_name = pulumi.Output.from_input(args["endpoint_name"])

        table = self._create_table()
        self.table_name = table.name
        function = self._create_function(table)
        self.function_name = function.name
        rest_api, stage = self._create_api(function)
        self.rest_api_id = rest_api.id
        self.stage_name = stage.stage_name
        self.api_url = pulumi.Output.concat(stage.invoke_url, "/", PREDICT_PATH)
        key = self._create_usage_plan(rest_api, stage)
        self.api_key_id = key.id
        self.api_key = pulumi.Output.secret(key.value)
        self._create_records_alarm()

        self.register_outputs(
            {
                "api_url": self.api_url,
                "api_key": self.api_key,
                "api_key_id": self.api_key_id,
                "function_name": self.function_name,
                "table_name": self.table_name,
            }
        )

    def _opts(self, depends_on: list[pulumi.Resource] | None = None) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=self, depends_on=depends_on)

    def _create_table(self) -> aws.dynamodb.Table:
        kms = self._kms_key_arn
        return aws.dynamodb.Table(
            f"{self._name}-records",
            aws.dynamodb.TableArgs(
                name=self._args["table_name"],
                billing_mode="PAY_PER_REQUEST",
                hash_key="request_id",
                attributes=[aws.dynamodb.TableAttributeArgs(name="request_id", type="S")],
                server_side_encryption=aws.dynamodb.TableServerSideEncryptionArgs(
                    enabled=True, kms_key_arn=kms or None
                ),
                point_in_time_recovery=aws.dynamodb.TablePointInTimeRecoveryArgs(enabled=True),
                ttl=aws.dynamodb.TableTtlArgs(attribute_name="expires_at", enabled=True),
                deletion_protection_enabled=self._args.get("deletion_protection", False),
            ),
            opts=self._opts(),
        )

    def _function_statements(self, table: aws.dynamodb.Table) -> list[Statement]:
        """Exactly the calls workloads/serve/api_lambda makes (tests/test_infra_security.py compares)."""
        endpoint_arn = self._ctx.arn("sagemaker", pulumi.Output.concat("endpoint/", self._endpoint_name))
        return [
            allow("InvokeThisEndpoint", ["sagemaker:InvokeEndpoint"], [endpoint_arn]),
            allow("StoreRecordsInThisTable", ["dynamodb:PutItem"], [table.arn]),
            *kms_statements(self._kms_key_arn, encrypt=True),
        ]

    def _create_function(self, table: aws.dynamodb.Table) -> aws.lambda_.Function:
        args = self._args
        role = aws.iam.Role(
            f"{self._name}-function-role",
            aws.iam.RoleArgs(
                description="Inference API Lambda: invoke one endpoint, store records in one table",
                assume_role_policy=assume_role_policy("lambda.amazonaws.com", self._ctx),
            ),
            opts=self._opts(),
        )
        function_name = pulumi.Output.from_input(args["function_name"])
        log_group = aws.cloudwatch.LogGroup(
            f"{self._name}-function-logs",
            aws.cloudwatch.LogGroupArgs(
                name=pulumi.Output.concat("/aws/lambda/", function_name),
                retention_in_days=args.get("log_retention_days", Aws.log_retention_days.default),
            ),
            opts=self._opts(),
        )
        policy = aws.iam.RolePolicy(
            f"{self._name}-function-policy",
            aws.iam.RolePolicyArgs(
                role=role.id,
                policy=policy_document(
                    [log_writer_statement("WriteOwnLogs", [log_group.arn]), *self._function_statements(table)]
                ),
            ),
            opts=self._opts(),
        )
        code_dir = args.get("code_dir") or str(API_LAMBDA_CODE_DIR)
        return aws.lambda_.Function(
            f"{self._name}-function",
            aws.lambda_.FunctionArgs(
                name=function_name,
                description="POST /predict: validate, invoke the endpoint, store request and answer",
                role=role.arn,
                runtime="python3.12",
                handler=API_LAMBDA_HANDLER,
                code=pulumi.AssetArchive({".": pulumi.FileArchive(code_dir)}),
                # API Gateway gives up after 29 s; a longer Lambda would only work for nobody.
                timeout=29,
                memory_size=512,
                environment=aws.lambda_.FunctionEnvironmentArgs(
                    # What Pulumi wires, then every setting the table gives the API Lambda.
                    variables={
                        "ENDPOINT_NAME": self._endpoint_name,
                        "TABLE_NAME": table.name,
                        **settings_environment(args, "InferenceApi", API),
                    }
                ),
                logging_config=aws.lambda_.FunctionLoggingConfigArgs(
                    log_format="Text", log_group=log_group.name
                ),
            ),
            opts=self._opts(depends_on=[policy, log_group]),
        )

    def _create_account_logging_role(self) -> aws.apigateway.Account:
        # The setting is one per account and region, shared by every API (and stack) there: the last
        # `pulumi up` points it at its own role. So the role, its policy and the setting are retained on
        # `pulumi destroy`: destroying one stack must not take away the role the others log through.
        # (`pulumi destroy` leaves this one role behind; the README says how to remove it.)
        keep = pulumi.ResourceOptions(parent=self, retain_on_delete=True)
        role = aws.iam.Role(
            f"{self._name}-apigw-logging-role",
            aws.iam.RoleArgs(
                description="API Gateway (account-wide): write access and execution logs",
                assume_role_policy=assume_role_policy("apigateway.amazonaws.com", self._ctx),
            ),
            opts=keep,
        )
        policy = aws.iam.RolePolicy(
            f"{self._name}-apigw-logging-policy",
            aws.iam.RolePolicyArgs(
                role=role.id,
                policy=policy_document(
                    [
                        # API Gateway writes each API's execution logs to a group it names and creates;
                        # the role is account-wide, so it is scoped to log groups of this account/region.
                        allow(
                            "WriteApiGatewayLogs",
                            [
                                "logs:CreateLogGroup",
                                "logs:CreateLogStream",
                                "logs:DescribeLogGroups",
                                "logs:DescribeLogStreams",
                                "logs:PutLogEvents",
                            ],
                            [self._ctx.arn("logs", "log-group:*")],
                        )
                    ]
                ),
            ),
            opts=keep,
        )
        return aws.apigateway.Account(
            f"{self._name}-apigw-account",
            aws.apigateway.AccountArgs(cloudwatch_role_arn=role.arn),
            opts=pulumi.ResourceOptions.merge(keep, pulumi.ResourceOptions(depends_on=[policy])),
        )

    def _create_api(
        self, function: aws.lambda_.Function
    ) -> tuple[aws.apigateway.RestApi, aws.apigateway.Stage]:
        args = self._args
        rest_api = aws.apigateway.RestApi(
            f"{self._name}-rest-api",
            aws.apigateway.RestApiArgs(
                name=args["api_name"],
                description="Model inference: POST /predict",
                api_key_source="HEADER",
                endpoint_configuration=aws.apigateway.RestApiEndpointConfigurationArgs(types="REGIONAL"),
            ),
            opts=self._opts(),
        )
        resource = aws.apigateway.Resource(
            f"{self._name}-predict",
            aws.apigateway.ResourceArgs(
                rest_api=rest_api.id, parent_id=rest_api.root_resource_id, path_part=PREDICT_PATH
            ),
            opts=self._opts(),
        )
        # The route's settings, each named once: they configure the method and integration and are
        # what the deployment's trigger hashes, so a change to any of them is deployed to the stage.
        method_settings: dict[str, pulumi.Input[Any]] = {
            "http_method": "POST",
            "authorization": "NONE",
            # Callers authenticate with x-api-key; the usage plan throttles per key.
            "api_key_required": True,
        }
        integration_settings: dict[str, pulumi.Input[Any]] = {
            "type": "AWS_PROXY",
            "integration_http_method": "POST",
            "uri": function.invoke_arn,
            "timeout_milliseconds": 29000,
        }
        method = aws.apigateway.Method(
            f"{self._name}-predict-post",
            aws.apigateway.MethodArgs(rest_api=rest_api.id, resource_id=resource.id, **method_settings),
            opts=self._opts(),
        )
        integration = aws.apigateway.Integration(
            f"{self._name}-predict-integration",
            aws.apigateway.IntegrationArgs(
                rest_api=rest_api.id,
                resource_id=resource.id,
                http_method=method.http_method,
                **integration_settings,
            ),
            opts=self._opts(),
        )
        aws.lambda_.Permission(
            f"{self._name}-apigw-invoke",
            aws.lambda_.PermissionArgs(
                action="lambda:InvokeFunction",
                function=function.name,
                principal="apigateway.amazonaws.com",
                source_arn=pulumi.Output.concat(rest_api.execution_arn, "/*/POST/", PREDICT_PATH),
            ),
            opts=self._opts(),
        )
        deployment = aws.apigateway.Deployment(
            f"{self._name}-deployment",
            aws.apigateway.DeploymentArgs(
                rest_api=rest_api.id,
                # A new deployment whenever the route, its method or its integration changes in any
                # setting (ids alone would miss, say, api_key_required turned off).
                triggers={
                    "route": pulumi.Output.json_dumps(
                        {
                            "path": PREDICT_PATH,
                            "ids": [resource.id, method.id, integration.id],
                            "method": method_settings,
                            "integration": integration_settings,
                        }
                    )
                },
            ),
            opts=self._opts(depends_on=[method, integration]),
        )
        access_logs = aws.cloudwatch.LogGroup(
            f"{self._name}-access-logs",
            aws.cloudwatch.LogGroupArgs(
                name=pulumi.Output.concat("/aws/apigateway/", args["api_name"], "/", args["stage_name"]),
                retention_in_days=args.get("log_retention_days", Aws.log_retention_days.default),
            ),
            opts=self._opts(),
        )
        stage_deps: list[pulumi.Resource] = [access_logs]
        if args.get("manage_account_logging_role", Aws.manage_api_gateway_account.default):
            stage_deps.append(self._create_account_logging_role())
        stage = aws.apigateway.Stage(
            f"{self._name}-stage",
            aws.apigateway.StageArgs(
                rest_api=rest_api.id,
                deployment=deployment.id,
                stage_name=args["stage_name"],
                access_log_settings=aws.apigateway.StageAccessLogSettingsArgs(
                    destination_arn=access_logs.arn, format=ACCESS_LOG_FORMAT
                ),
            ),
            opts=self._opts(depends_on=stage_deps),
        )
        aws.apigateway.MethodSettings(
            f"{self._name}-stage-settings",
            aws.apigateway.MethodSettingsArgs(
                rest_api=rest_api.id,
                stage_name=stage.stage_name,
                method_path="*/*",
                settings=aws.apigateway.MethodSettingsSettingsArgs(
                    metrics_enabled=True,
                    # Request bodies are stored in the table; full traces in logs would copy them again.
                    data_trace_enabled=False,
                    logging_level="ERROR",
                ),
            ),
            opts=self._opts(),
        )
        return rest_api, stage

    def _create_usage_plan(
        self, rest_api: aws.apigateway.RestApi, stage: aws.apigateway.Stage
    ) -> aws.apigateway.ApiKey:
        args = self._args
        key = aws.apigateway.ApiKey(
            f"{self._name}-key",
            aws.apigateway.ApiKeyArgs(description="Key for POST /predict", enabled=True),
            # The key value is a credential: keep it encrypted in the state file too.
            opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["value"]),
        )
        plan = aws.apigateway.UsagePlan(
            f"{self._name}-usage-plan",
            aws.apigateway.UsagePlanArgs(
                description="Throttle and quota for the inference API",
                api_stages=[aws.apigateway.UsagePlanApiStageArgs(api_id=rest_api.id, stage=stage.stage_name)],
                throttle_settings=aws.apigateway.UsagePlanThrottleSettingsArgs(
                    rate_limit=args.get("throttle_rate_limit", Aws.api_throttle_rate_limit.default),
                    burst_limit=args.get("throttle_burst_limit", Aws.api_throttle_burst_limit.default),
                ),
                quota_settings=aws.apigateway.UsagePlanQuotaSettingsArgs(
                    limit=args.get("quota_limit", Aws.api_quota_limit.default),
                    period=args.get("quota_period", Aws.api_quota_period.default),
                ),
            ),
            opts=self._opts(),
        )
        aws.apigateway.UsagePlanKey(
            f"{self._name}-usage-plan-key",
            aws.apigateway.UsagePlanKeyArgs(key_id=key.id, key_type="API_KEY", usage_plan_id=plan.id),
            opts=self._opts(),
        )
        return key

    def _create_records_alarm(self) -> None:
        occurrence_alarm(
            f"{self._name}-records-not-stored-alarm",
            name=pulumi.Output.concat(self._endpoint_name, "-records-not-stored"),
            description=(
                "Inference records could not be stored; each is in the API Lambda's log as unstored_record"
            ),
            namespace=RECORDS_METRIC_NAMESPACE,
            metric_name="RecordsNotStored",
            dimensions={"Endpoint": self._endpoint_name},
            topic_arn=self._args.get("alarm_topic_arn"),
            opts=self._opts(),
        )
