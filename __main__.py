"""The MLOps platform, one stack per environment: `pulumi up -s dev` (config in platform/Pulumi.<env>.yaml).

git push -> BuildPipeline trains and registers a model -> a person approves it -> ModelRegistryGroup's
rule starts the BlueGreenEndpoint deployer -> InferenceApi answers POST /predict.
"""

import pulumi

from components.artifact_store import ArtifactStore
from components.blue_green_endpoint import BlueGreenEndpoint
from components.build_pipeline import BuildPipeline
from components.inference_api import InferenceApi
from components.ml_repo import MlRepo
from components.model_registry_group import ModelRegistryGroup
from components.settings import PlatformSettings

stack = pulumi.get_stack()
cfg = PlatformSettings.load(pulumi.Config(), stack)
prefix = cfg.name_prefix

repo = MlRepo(
    prefix,
    {
        "name": cfg.repo_name,
        "kind": cfg.source_repo_kind,
        "branch": cfg.source_branch,
        "connection_arn": cfg.connection_arn,
        "kms_key_arn": cfg.kms_key_arn,
    },
)

# The image repository and artifact bucket, shared by the build (writes) and the endpoint (reads). They
# were BuildPipeline's children before: the alias moves them instead of replacing them.
artifacts = ArtifactStore(
    prefix,
    {
        "ecr_repository_name": cfg.ecr_repository_name,
        "ecr_max_image_count": cfg.ecr_max_image_count,
        "artifact_noncurrent_days": cfg.artifact_noncurrent_days,
        "kms_key_arn": cfg.kms_key_arn,
        "force_destroy": cfg.force_destroy,
        "moved_from": f"urn:pulumi:{stack}::{pulumi.get_project()}::mlops:index:BuildPipeline::{prefix}",
    },
)

build = BuildPipeline(
    prefix,
    {
        "project_name": cfg.project_name,
        "pipeline_name": cfg.pipeline_name,
        "repo": repo,
        "artifacts": artifacts,
        "model_package_group_name": cfg.group_name,
        "training_instance_type": cfg.training_instance_type,
        "training_data_path": cfg.training_data_path,
        "quality_gate_min_accuracy": cfg.quality_gate_min_accuracy,
        "build_compute_type": cfg.build_compute_type,
        "build_image": cfg.build_image,
        "build_timeout_minutes": cfg.build_timeout_minutes,
        "log_retention_days": cfg.log_retention_days,
        "kms_key_arn": cfg.kms_key_arn,
    },
)

# The group's name is fixed by config, so the deployer can be built before the group (whose
# approval rule needs the deployer's ARN) without a cycle.
endpoint = BlueGreenEndpoint(
    prefix,
    {
        "endpoint_name": cfg.endpoint_name,
        "model_package_group_name": cfg.group_name,
        "artifacts": artifacts,
        "deployer_function_name": f"{prefix}-deployer",
        "instance_type": cfg.endpoint_instance_type,
        "initial_instance_count": cfg.endpoint_initial_instance_count,
        "traffic_step_percent": cfg.traffic_step_percent,
        "traffic_wait_seconds": cfg.traffic_wait_seconds,
        "termination_wait_seconds": cfg.termination_wait_seconds,
        "maximum_execution_timeout_seconds": cfg.maximum_execution_timeout_seconds,
        "alarm_5xx_threshold": cfg.alarm_5xx_threshold,
        "alarm_latency_threshold_ms": cfg.alarm_latency_threshold_ms,
        "alarm_evaluation_periods": cfg.alarm_evaluation_periods,
        "alarm_4xx_margin": cfg.alarm_4xx_margin,
        "alarm_4xx_min_requests": cfg.alarm_4xx_min_requests,
        "data_capture": cfg.data_capture,
        "autoscaling_min_capacity": cfg.autoscaling_min_capacity,
        "autoscaling_max_capacity": cfg.autoscaling_max_capacity,
        "autoscaling_target_invocations": cfg.autoscaling_target_invocations,
        "log_retention_days": cfg.log_retention_days,
        "alarm_topic_arn": cfg.alarm_topic_arn,
        "kms_key_arn": cfg.kms_key_arn,
        "delete_model_packages_on_destroy": cfg.force_destroy,
    },
)

registry = ModelRegistryGroup(
    prefix,
    {
        "group_name": cfg.group_name,
        "deployer_function_arn": endpoint.deployer_function_arn,
        "delete_versions_on_destroy": cfg.force_destroy,
        "deployer_resources": endpoint.deployer_resources,
    },
)

api = InferenceApi(
    prefix,
    {
        "endpoint_name": endpoint.endpoint_name,
        "api_name": f"{prefix}-inference",
        "stage_name": stack,
        "function_name": f"{prefix}-api",
        "table_name": cfg.table_name,
        "throttle_rate_limit": cfg.api_throttle_rate_limit,
        "throttle_burst_limit": cfg.api_throttle_burst_limit,
        "quota_limit": cfg.api_quota_limit,
        "quota_period": cfg.api_quota_period,
        "max_body_bytes": cfg.api_max_body_bytes,
        "record_ttl_days": cfg.record_ttl_days,
        "log_retention_days": cfg.log_retention_days,
        "deletion_protection": not cfg.force_destroy,
        "manage_account_logging_role": cfg.manage_api_gateway_account,
        "alarm_topic_arn": cfg.alarm_topic_arn,
        "kms_key_arn": cfg.kms_key_arn,
    },
)

pulumi.export("api_url", api.api_url)
pulumi.export("api_key", api.api_key)
pulumi.export("repo_clone_url", repo.clone_url)
pulumi.export("model_package_group_name", registry.group_name)
pulumi.export("endpoint_name", endpoint.endpoint_name)
pulumi.export("build_project_name", build.project_name)
pulumi.export("build_log_group_name", build.log_group_name)
pulumi.export("pipeline_name", build.pipeline_name)
pulumi.export("artifact_bucket", artifacts.artifact_bucket)
pulumi.export("ecr_repository_url", artifacts.ecr_repository_url)
pulumi.export("table_name", api.table_name)
pulumi.export("deployer_function_name", endpoint.deployer_function_name)
pulumi.export("execution_role_arn", endpoint.execution_role_arn)
pulumi.export("training_role_arn", build.training_role_arn)
pulumi.export("rollback_alarm_names", endpoint.rollback_alarm_names)
# By-hand tools (mlops --target aws --stack, deploy.py) talk to the stack's region, not the shell's.
pulumi.export("region", endpoint.region)
