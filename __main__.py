"""The MLOps platform, one stack per environment: `pulumi up -s dev` (config in platform/Pulumi.<env>.yaml).

git push -> BuildPipeline trains and registers a model -> a person approves it -> ModelRegistryGroup's
rule starts the BlueGreenEndpoint deployer -> InferenceApi answers POST /predict.
"""

import pulumi

from components.artifact_store import ArtifactStore, ArtifactStoreArgs
from components.blue_green_endpoint import BlueGreenEndpoint, BlueGreenEndpointArgs
from components.build_pipeline import BuildPipeline, BuildPipelineArgs
from components.inference_api import InferenceApi, InferenceApiArgs
from components.ml_repo import MlRepo, MlRepoArgs
from components.model_registry_group import ModelRegistryGroup
from components.settings import PlatformSettings

stack = pulumi.get_stack()
cfg = PlatformSettings.load(pulumi.Config(), stack)
prefix = cfg.name_prefix

# Each component gets what the program wires (names, other components, derived values) and, through
# cfg.feed, every stack setting the settings table sends to its Args (workloads/serve/deployer/
# settings_table.py: a row's `args`).
repo_args: MlRepoArgs = {"name": cfg.repo_name}
repo = MlRepo(prefix, cfg.feed("MlRepo", repo_args))

# The image repository and artifact bucket, shared by the build (writes) and the endpoint (reads). They
# were BuildPipeline's children before: the alias moves them instead of replacing them.
artifact_args: ArtifactStoreArgs = {
    "ecr_repository_name": cfg.ecr_repository_name,
    "moved_from": f"urn:pulumi:{stack}::{pulumi.get_project()}::mlops:index:BuildPipeline::{prefix}",
}
artifacts = ArtifactStore(prefix, cfg.feed("ArtifactStore", artifact_args))

build_args: BuildPipelineArgs = {
    "project_name": cfg.project_name,
    "pipeline_name": cfg.pipeline_name,
    "repo": repo,
    "artifacts": artifacts,
    "model_package_group_name": cfg.group_name,
}
build = BuildPipeline(prefix, cfg.feed("BuildPipeline", build_args))

# The group's name is fixed by config, so the deployer can be built before the group (whose
# approval rule needs the deployer's ARN) without a cycle.
endpoint_args: BlueGreenEndpointArgs = {
    "endpoint_name": cfg.endpoint_name,
    "model_package_group_name": cfg.group_name,
    "artifacts": artifacts,
    "deployer_function_name": f"{prefix}-deployer",
    "delete_model_packages_on_destroy": cfg.force_destroy,
}
endpoint = BlueGreenEndpoint(prefix, cfg.feed("BlueGreenEndpoint", endpoint_args))

registry = ModelRegistryGroup(
    prefix,
    {
        "group_name": cfg.group_name,
        "deployer_function_arn": endpoint.deployer_function_arn,
        "delete_versions_on_destroy": cfg.force_destroy,
        "deployer_resources": endpoint.deployer_resources,
    },
)

api_args: InferenceApiArgs = {
    "endpoint_name": endpoint.endpoint_name,
    "api_name": f"{prefix}-inference",
    "stage_name": stack,
    "function_name": f"{prefix}-api",
    "table_name": cfg.table_name,
    "deletion_protection": not cfg.force_destroy,
}
api = InferenceApi(prefix, cfg.feed("InferenceApi", api_args))

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
