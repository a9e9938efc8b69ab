"""BuildPipeline: git push -> CodePipeline -> CodeBuild builds the image and runs a SageMaker training job.

The CodeBuild project runs `workloads/train/buildspec.yml`, which builds and pushes the training image,
starts the training job and registers the model in the group, pending manual approval. The project
also clones the repository itself, so the seed's `aws codebuild start-build --project-name <name>` works
outside the pipeline; CodePipeline overrides the source with its own artifact.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict

import pulumi
import pulumi_aws as aws

from components.artifact_store import ArtifactStore
from components.iam import (
    Statement,
    allow,
    assume_role_policy,
    aws_context,
    ecr_pull_statements,
    kms_statements,
    log_group_arn,
    log_writer_statement,
    metric_writer_statement,
    pass_role_statement,
    policy_document,
)
from components.ml_repo import MlRepo
from components.settings import settings_environment
from workloads.serve.deployer.settings_table import BUILD, Aws
from workloads.train import steps

BUILDSPEC_PATH = "workloads/train/buildspec.yml"
SOURCE_ARTIFACT = "source"
# Training jobs log here and publish metrics in this namespace; SageMaker names both.
TRAINING_LOG_GROUP = "/aws/sagemaker/TrainingJobs"
TRAINING_METRIC_NAMESPACE = "/aws/sagemaker/TrainingJobs"


class BuildPipelineArgs(TypedDict):
    """The settings among these take the settings table's defaults (workloads/serve/deployer/settings_table.py;
    the README config table shows them under their stack keys)."""

    project_name: pulumi.Input[str]
    """CodeBuild project name; also the name of its log group (the seed's `aws logs` command)."""
    pipeline_name: pulumi.Input[str]
    repo: MlRepo
    """The source repository (its pipeline source action, CodeBuild source and the IAM both need)."""
    artifacts: ArtifactStore
    """The image repository and artifact bucket the build writes (shared with the endpoint)."""
    model_package_group_name: pulumi.Input[str]
    """The Model Registry group the build registers models in (the only group it may write)."""
    training_instance_type: NotRequired[pulumi.Input[str]]
    """SageMaker training instance type."""
    model_group: NotRequired[pulumi.Input[str]]
    """The mlops.toml `[model] group` this stack serves: a build of another group fails before training."""
    training_data_path: NotRequired[pulumi.Input[str]]
    """No longer chooses the data (the commit's mlops.toml does); the build says it ignores it."""
    quality_gate_min_accuracy: NotRequired[pulumi.Input[float]]
    """A classification model below this holdout accuracy is not registered."""
    build_compute_type: NotRequired[pulumi.Input[str]]
    build_image: NotRequired[pulumi.Input[str]]
    build_timeout_minutes: NotRequired[pulumi.Input[int]]
    log_retention_days: NotRequired[pulumi.Input[int]]
    kms_key_arn: NotRequired[str]
    """Customer-managed KMS key for bucket, image and build; empty = AWS-managed encryption."""


class BuildPipeline(pulumi.ComponentResource):
    """Training role, CodeBuild project and the CodePipeline around them, on a repo and an ArtifactStore."""

    ecr_repository_url: pulumi.Output[str]
    ecr_repository_arn: pulumi.Output[str]
    artifact_bucket: pulumi.Output[str]
    artifact_bucket_arn: pulumi.Output[str]
    project_name: pulumi.Output[str]
    log_group_name: pulumi.Output[str]
    pipeline_name: pulumi.Output[str]
    training_role_arn: pulumi.Output[str]
    """The SageMaker execution role training jobs run as (the CodeBuild env's SAGEMAKER_ROLE_ARN)."""

    def __init__(
        self, name: str, args: BuildPipelineArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mlops:index:BuildPipeline", name, None, opts)
        self._name = name
        self._args = args
        self._ctx = aws_context(self)
        self._kms_key_arn = args.get("kms_key_arn") or Aws.kms_key_arn.default
        self._repo = args["repo"]
        artifacts = args["artifacts"]
        self.ecr_repository_url = artifacts.ecr_repository_url
        self.ecr_repository_arn = artifacts.ecr_repository_arn
        self.artifact_bucket = artifacts.artifact_bucket
        self.artifact_bucket_arn = artifacts.artifact_bucket_arn

        training_role = self._create_training_role()
        self.training_role_arn = training_role.arn
        log_group = aws.cloudwatch.LogGroup(
            f"{name}-build-logs",
            aws.cloudwatch.LogGroupArgs(
                name=args["project_name"],
                retention_in_days=args.get("log_retention_days", Aws.log_retention_days.default),
                kms_key_id=self._kms_key_arn or None,
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.log_group_name = log_group.name
        project = self._create_project(log_group, training_role)
        self.project_name = project.name
        pipeline = self._create_pipeline(project)
        self.pipeline_name = pipeline.name
        push_pattern = self._repo.push_event_pattern
        if push_pattern is not None:
            self._create_push_trigger(pipeline, push_pattern)

        self.register_outputs(
            {
                "ecr_repository_url": self.ecr_repository_url,
                "artifact_bucket": self.artifact_bucket,
                "project_name": self.project_name,
                "log_group_name": self.log_group_name,
                "pipeline_name": self.pipeline_name,
                "training_role_arn": self.training_role_arn,
            }
        )

    def _opts(self, depends_on: list[pulumi.Resource] | None = None) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=self, depends_on=depends_on)

    def _bucket_statements(self, sid: str, *, write: bool) -> list[Statement]:
        bucket_arn = self.artifact_bucket_arn
        actions = ["s3:GetObject", "s3:GetObjectVersion"]
        if write:
            actions.append("s3:PutObject")
        return [
            allow(f"{sid}Objects", actions, [pulumi.Output.concat(bucket_arn, "/*")]),
            allow(f"{sid}Bucket", ["s3:GetBucketLocation", "s3:ListBucket"], [bucket_arn]),
        ]

    def _create_training_role(self) -> aws.iam.Role:
        ctx = self._ctx
        role = aws.iam.Role(
            f"{self._name}-training-role",
            aws.iam.RoleArgs(
                description="SageMaker training jobs started by the build",
                assume_role_policy=assume_role_policy("sagemaker.amazonaws.com", ctx),
            ),
            opts=self._opts(),
        )
        group_arn = log_group_arn(ctx, TRAINING_LOG_GROUP)
        streams = ctx.arn("logs", f"log-group:{TRAINING_LOG_GROUP}:log-stream:*")
        statements: list[Statement] = [
            *ecr_pull_statements(self.ecr_repository_arn),
            # Read training data, write the model artifact (SageMaker uploads model.tar.gz itself).
            *self._bucket_statements("Artifacts", write=True),
            # SageMaker creates the group with the first job of the account and describes its streams.
            allow("TrainingLogGroup", ["logs:CreateLogGroup", "logs:DescribeLogStreams"], [group_arn]),
            allow("WriteTrainingLogs", ["logs:CreateLogStream", "logs:PutLogEvents"], [streams]),
            metric_writer_statement("TrainingMetrics", [TRAINING_METRIC_NAMESPACE]),
            *kms_statements(self._kms_key_arn, encrypt=True),
        ]
        aws.iam.RolePolicy(
            f"{self._name}-training-policy",
            aws.iam.RolePolicyArgs(role=role.id, policy=policy_document(statements)),
            opts=self._opts(),
        )
        return role

    def _create_project(
        self, log_group: aws.cloudwatch.LogGroup, training_role: aws.iam.Role
    ) -> aws.codebuild.Project:
        ctx = self._ctx
        args = self._args
        group_name = pulumi.Output.from_input(args["model_package_group_name"])
        role = aws.iam.Role(
            f"{self._name}-codebuild-role",
            aws.iam.RoleArgs(
                description="CodeBuild: build the image, train, register in one model package group",
                assume_role_policy=assume_role_policy("codebuild.amazonaws.com", ctx),
            ),
            opts=self._opts(),
        )
        # workloads/train/steps.py names jobs "<group[:JOB_GROUP_CHARS]>-<commit>-<time>-<random>".
        training_jobs = ctx.arn(
            "sagemaker", group_name.apply(lambda g: f"training-job/{steps.job_name_prefix(g)}-*")
        )
        packages = ctx.arn("sagemaker", pulumi.Output.concat("model-package/", group_name, "/*"))
        group_arn = ctx.arn("sagemaker", pulumi.Output.concat("model-package-group/", group_name))
        training_logs = log_group_arn(ctx, TRAINING_LOG_GROUP)
        statements: list[Statement] = [
            log_writer_statement("WriteBuildLogs", [log_group.arn]),
            allow("EcrLogin", ["ecr:GetAuthorizationToken"], "*"),
            allow(
                "EcrPushThisRepository",
                [
                    "ecr:BatchCheckLayerAvailability",
                    "ecr:BatchGetImage",
                    "ecr:CompleteLayerUpload",
                    "ecr:DescribeImages",
                    "ecr:GetDownloadUrlForLayer",
                    "ecr:InitiateLayerUpload",
                    "ecr:PutImage",
                    "ecr:UploadLayerPart",
                ],
                [self.ecr_repository_arn],
            ),
            *self._bucket_statements("PipelineArtifacts", write=True),
            allow(
                "RunTrainingJobs",
                ["sagemaker:AddTags", "sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob"],
                [training_jobs],
            ),
            allow("RegisterInThisGroupOnly", ["sagemaker:CreateModelPackage"], [packages, group_arn]),
            allow("FollowTrainingLogs", ["logs:FilterLogEvents"], [training_logs]),
            pass_role_statement(training_role.arn, "sagemaker.amazonaws.com"),
            *self._repo.build_source_statements(),
            *kms_statements(self._kms_key_arn, encrypt=True),
        ]
        policy = aws.iam.RolePolicy(
            f"{self._name}-codebuild-policy",
            aws.iam.RolePolicyArgs(role=role.id, policy=policy_document(statements)),
            opts=self._opts(),
        )
        auth_resource = self._repo.codebuild_source_auth_resource
        # What Pulumi wires, then every setting the table gives the build (settings_table.BUILD).
        env = {
            "MODEL_PACKAGE_GROUP_NAME": group_name,
            "ECR_REPOSITORY_URI": self.ecr_repository_url,
            "SAGEMAKER_ROLE_ARN": training_role.arn,
            "ARTIFACT_BUCKET": self.artifact_bucket,
            **settings_environment(args, "BuildPipeline", BUILD),
        }
        return aws.codebuild.Project(
            f"{self._name}-project",
            aws.codebuild.ProjectArgs(
                name=args["project_name"],
                description="Builds the training image, trains on SageMaker, registers the model",
                service_role=role.arn,
                build_timeout=args.get("build_timeout_minutes", Aws.build_timeout_minutes.default),
                encryption_key=self._kms_key_arn or None,
                source=aws.codebuild.ProjectSourceArgs(
                    type=self._repo.codebuild_source_type,
                    location=self._repo.clone_url,
                    buildspec=BUILDSPEC_PATH,
                    git_clone_depth=1,
                    auth=aws.codebuild.ProjectSourceAuthArgs(type="CODECONNECTIONS", resource=auth_resource)
                    if auth_resource is not None
                    else None,
                ),
                source_version=pulumi.Output.concat("refs/heads/", self._repo.branch),
                artifacts=aws.codebuild.ProjectArtifactsArgs(type="NO_ARTIFACTS"),
                environment=aws.codebuild.ProjectEnvironmentArgs(
                    compute_type=args.get("build_compute_type", Aws.build_compute_type.default),
                    image=args.get("build_image", Aws.build_image.default),
                    type="LINUX_CONTAINER",
                    image_pull_credentials_type="CODEBUILD",
                    # docker build needs the Docker daemon, which only privileged mode provides.
                    privileged_mode=True,
                    environment_variables=[
                        aws.codebuild.ProjectEnvironmentEnvironmentVariableArgs(
                            name=k, value=v, type="PLAINTEXT"
                        )
                        for k, v in env.items()
                    ],
                ),
                logs_config=aws.codebuild.ProjectLogsConfigArgs(
                    cloudwatch_logs=aws.codebuild.ProjectLogsConfigCloudwatchLogsArgs(
                        group_name=log_group.name, status="ENABLED"
                    ),
                ),
            ),
            # The role's policy must be in place before CodeBuild validates the project's access.
            opts=self._opts(depends_on=[policy]),
        )

    def _create_pipeline(self, project: aws.codebuild.Project) -> aws.codepipeline.Pipeline:
        args = self._args
        role = aws.iam.Role(
            f"{self._name}-pipeline-role",
            aws.iam.RoleArgs(
                description="CodePipeline: read the source, start the training build",
                assume_role_policy=assume_role_policy("codepipeline.amazonaws.com", self._ctx),
            ),
            opts=self._opts(),
        )
        statements: list[Statement] = [
            *self._repo.pipeline_source_statements(),
            allow(
                "PipelineArtifacts",
                ["s3:GetObject", "s3:GetObjectVersion", "s3:PutObject"],
                [pulumi.Output.concat(self.artifact_bucket_arn, "/*")],
            ),
            allow(
                "PipelineArtifactBucket",
                ["s3:GetBucketVersioning", "s3:ListBucket"],
                [self.artifact_bucket_arn],
            ),
            allow("StartTrainingBuild", ["codebuild:BatchGetBuilds", "codebuild:StartBuild"], [project.arn]),
            *kms_statements(self._kms_key_arn, encrypt=True),
        ]
        policy = aws.iam.RolePolicy(
            f"{self._name}-pipeline-policy",
            aws.iam.RolePolicyArgs(role=role.id, policy=policy_document(statements)),
            opts=self._opts(),
        )
        kms = self._kms_key_arn
        return aws.codepipeline.Pipeline(
            f"{self._name}-pipeline",
            aws.codepipeline.PipelineArgs(
                name=args["pipeline_name"],
                role_arn=role.arn,
                pipeline_type="V2",
                # A newer push supersedes a queued one: training the latest commit is what matters.
                execution_mode="SUPERSEDED",
                artifact_stores=[
                    aws.codepipeline.PipelineArtifactStoreArgs(
                        location=self.artifact_bucket,
                        type="S3",
                        encryption_key=aws.codepipeline.PipelineArtifactStoreEncryptionKeyArgs(
                            id=kms, type="KMS"
                        )
                        if kms
                        else None,
                    )
                ],
                stages=[
                    aws.codepipeline.PipelineStageArgs(
                        name="Source",
                        actions=[
                            aws.codepipeline.PipelineStageActionArgs(
                                name="Source",
                                category="Source",
                                owner="AWS",
                                provider=self._repo.source_action_provider,
                                version="1",
                                output_artifacts=[SOURCE_ARTIFACT],
                                configuration=self._repo.source_action_configuration,
                            )
                        ],
                    ),
                    aws.codepipeline.PipelineStageArgs(
                        name="TrainAndRegister",
                        actions=[
                            aws.codepipeline.PipelineStageActionArgs(
                                name="BuildTrainRegister",
                                category="Build",
                                owner="AWS",
                                provider="CodeBuild",
                                version="1",
                                input_artifacts=[SOURCE_ARTIFACT],
                                configuration={"ProjectName": project.name},
                            )
                        ],
                    ),
                ],
            ),
            opts=self._opts(depends_on=[policy]),
        )

    def _create_push_trigger(self, pipeline: aws.codepipeline.Pipeline, pattern: pulumi.Input[str]) -> None:
        role = aws.iam.Role(
            f"{self._name}-push-trigger-role",
            aws.iam.RoleArgs(
                description="EventBridge: start the pipeline on a push",
                assume_role_policy=assume_role_policy("events.amazonaws.com", self._ctx),
            ),
            opts=self._opts(),
        )
        aws.iam.RolePolicy(
            f"{self._name}-push-trigger-policy",
            aws.iam.RolePolicyArgs(
                role=role.id,
                policy=policy_document(
                    [allow("StartThisPipeline", ["codepipeline:StartPipelineExecution"], [pipeline.arn])]
                ),
            ),
            opts=self._opts(),
        )
        rule = aws.cloudwatch.EventRule(
            f"{self._name}-push-rule",
            aws.cloudwatch.EventRuleArgs(description="A push to the training branch", event_pattern=pattern),
            opts=self._opts(),
        )
        aws.cloudwatch.EventTarget(
            f"{self._name}-push-target",
            aws.cloudwatch.EventTargetArgs(rule=rule.name, arn=pipeline.arn, role_arn=role.arn),
            opts=self._opts(),
        )
