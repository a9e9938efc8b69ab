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
from workloads.train import steps

BUILDSPEC_PATH = "workloads/train/buildspec.yml"
SOURCE_ARTIFACT = "source"
# Training jobs log here and publish metrics in this namespace; SageMaker names both.
TRAINING_LOG_GROUP = "/aws/sagemaker/TrainingJobs"
TRAINING_METRIC_NAMESPACE = "/aws/sagemaker/TrainingJobs"
# An image the register step tags with this prefix is kept by the ECR lifecycle policy.
REGISTERED_IMAGE_TAG_PREFIX = steps.REGISTERED_IMAGE_TAG_PREFIX
# "Keep up to this many": in effect all (ECR's countNumber is an integer; the rule only protects).
KEEP_REGISTERED_IMAGES = 100000


class BuildPipelineArgs(TypedDict):
    project_name: pulumi.Input[str]
    """CodeBuild project name; also the name of its log group (the seed's `aws logs` command)."""
    pipeline_name: pulumi.Input[str]
    ecr_repository_name: pulumi.Input[str]
    """ECR repository for the one train/serve image."""
    model_package_group_name: pulumi.Input[str]
    """The Model Registry group the build registers models in (the only group it may write)."""
    source_action_provider: str
    """CodePipeline source provider: "CodeCommit" or "CodeStarSourceConnection" (MlRepo.source_action_provider)."""
    source_action_configuration: pulumi.Input[dict[str, str]]
    """Configuration of the pipeline's source action (MlRepo.source_action_configuration)."""
    source_pipeline_statements: list[Statement]
    """IAM statements the pipeline role needs to read the source (MlRepo.pipeline_source_statements())."""
    source_build_statements: list[Statement]
    """IAM statements CodeBuild needs to clone the source itself (MlRepo.build_source_statements())."""
    codebuild_source_type: str
    """CODECOMMIT, GITHUB, GITLAB or BITBUCKET (MlRepo.codebuild_source_type)."""
    codebuild_source_location: pulumi.Input[str]
    """The clone URL (MlRepo.clone_url)."""
    codebuild_source_auth_resource: NotRequired[pulumi.Input[str] | None]
    """Connection ARN CodeBuild clones external repositories through."""
    push_event_pattern: NotRequired[pulumi.Input[str] | None]
    """EventBridge pattern of a push (CodeCommit); None when the source action detects pushes itself."""
    source_branch: NotRequired[pulumi.Input[str]]
    """Branch a by-hand build checks out (default "main")."""
    training_instance_type: NotRequired[pulumi.Input[str]]
    """SageMaker training instance type (default ml.m5.large)."""
    training_data_path: NotRequired[pulumi.Input[str]]
    """Training CSV path inside the repository (default data/iris.csv)."""
    quality_gate_min_accuracy: NotRequired[pulumi.Input[float]]
    """A model below this test accuracy is not registered (default 0.9)."""
    build_compute_type: NotRequired[pulumi.Input[str]]
    build_image: NotRequired[pulumi.Input[str]]
    build_timeout_minutes: NotRequired[pulumi.Input[int]]
    log_retention_days: NotRequired[pulumi.Input[int]]
    ecr_max_image_count: NotRequired[pulumi.Input[int]]
    """Images kept in ECR; older ones expire (serving endpoints keep their own copy of the image)."""
    artifact_noncurrent_days: NotRequired[pulumi.Input[int]]
    """Days an overwritten or deleted artifact version is kept."""
    kms_key_arn: NotRequired[str]
    """Customer-managed KMS key for bucket, image and build; empty = AWS-managed encryption."""
    force_destroy: NotRequired[bool]
    """Let `pulumi destroy` delete a non-empty bucket and repository (dev stacks)."""


class BuildPipeline(pulumi.ComponentResource):
    """ECR repository, artifact bucket, training role, CodeBuild project and the CodePipeline around them."""

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
        self._kms_key_arn = args.get("kms_key_arn") or ""
        self._force_destroy = bool(args.get("force_destroy", False))

        repository = self._create_ecr_repository()
        bucket = self._create_artifact_bucket()
        self.ecr_repository_url = repository.repository_url
        self.ecr_repository_arn = repository.arn
        self.artifact_bucket = bucket.bucket
        self.artifact_bucket_arn = bucket.arn

        training_role = self._create_training_role()
        self.training_role_arn = training_role.arn
        log_group = aws.cloudwatch.LogGroup(
            f"{name}-build-logs",
            aws.cloudwatch.LogGroupArgs(
                name=args["project_name"],
                retention_in_days=args.get("log_retention_days", 30),
                kms_key_id=self._kms_key_arn or None,
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.log_group_name = log_group.name
        project = self._create_project(log_group, training_role)
        self.project_name = project.name
        pipeline = self._create_pipeline(project)
        self.pipeline_name = pipeline.name
        push_pattern = args.get("push_event_pattern")
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

    def _create_ecr_repository(self) -> aws.ecr.Repository:
        kms = self._kms_key_arn
        repository = aws.ecr.Repository(
            f"{self._name}-images",
            aws.ecr.RepositoryArgs(
                name=self._args["ecr_repository_name"],
                # Immutable tags: a model package names an image by tag, which must never change under it.
                image_tag_mutability="IMMUTABLE",
                image_scanning_configuration=aws.ecr.RepositoryImageScanningConfigurationArgs(
                    scan_on_push=True
                ),
                encryption_configurations=[
                    aws.ecr.RepositoryEncryptionConfigurationArgs(
                        encryption_type="KMS" if kms else "AES256", kms_key=kms or None
                    )
                ],
                force_delete=self._force_destroy,
            ),
            opts=self._opts(),
        )
        max_images = pulumi.Output.from_input(self._args.get("ecr_max_image_count", 30))
        aws.ecr.LifecyclePolicy(
            f"{self._name}-images-lifecycle",
            aws.ecr.LifecyclePolicyArgs(
                repository=repository.name,
                policy=pulumi.Output.json_dumps(
                    {
                        # ECR: "an image that matches the tagging requirements of a higher priority
                        # rule cannot be expired by a rule with a lower priority". Rule 1 selects every
                        # image a model package names (the register step tags it registered-v<N>) and
                        # keeps them all, so the count rule never expires an image a live endpoint,
                        # a scale-out or a rollback still pulls.
                        "rules": [
                            {
                                "rulePriority": 1,
                                "description": "Images of registered model versions: never expired",
                                "selection": {
                                    "tagStatus": "tagged",
                                    "tagPrefixList": [REGISTERED_IMAGE_TAG_PREFIX],
                                    "countType": "imageCountMoreThan",
                                    "countNumber": KEEP_REGISTERED_IMAGES,
                                },
                                "action": {"type": "expire"},
                            },
                            {
                                "rulePriority": 2,
                                "description": "Untagged layers left by failed pushes",
                                "selection": {
                                    "tagStatus": "untagged",
                                    "countType": "sinceImagePushed",
                                    "countUnit": "days",
                                    "countNumber": 1,
                                },
                                "action": {"type": "expire"},
                            },
                            {
                                "rulePriority": 3,
                                "description": "Images no model version uses: keep the newest only",
                                "selection": {
                                    "tagStatus": "any",
                                    "countType": "imageCountMoreThan",
                                    "countNumber": max_images,
                                },
                                "action": {"type": "expire"},
                            },
                        ]
                    }
                ),
            ),
            opts=self._opts(),
        )
        return repository

    def _create_artifact_bucket(self) -> aws.s3.Bucket:
        name = self._name
        kms = self._kms_key_arn
        bucket = aws.s3.Bucket(
            f"{name}-artifacts",
            aws.s3.BucketArgs(force_destroy=self._force_destroy),
            opts=self._opts(),
        )
        public_block = aws.s3.BucketPublicAccessBlock(
            f"{name}-artifacts-public-access",
            aws.s3.BucketPublicAccessBlockArgs(
                bucket=bucket.id,
                block_public_acls=True,
                block_public_policy=True,
                ignore_public_acls=True,
                restrict_public_buckets=True,
            ),
            opts=self._opts(),
        )
        aws.s3.BucketOwnershipControls(
            f"{name}-artifacts-ownership",
            aws.s3.BucketOwnershipControlsArgs(
                bucket=bucket.id,
                rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"),
            ),
            opts=self._opts(),
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-artifacts-encryption",
            aws.s3.BucketServerSideEncryptionConfigurationInitArgs(
                bucket=bucket.id,
                rules=[
                    aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                        apply_server_side_encryption_by_default=aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                            sse_algorithm="aws:kms" if kms else "AES256",
                            kms_master_key_id=kms or None,
                        ),
                        bucket_key_enabled=bool(kms),
                    )
                ],
            ),
            opts=self._opts(),
        )
        # Versioning: a model artifact referenced by a registered model package must stay retrievable.
        aws.s3.BucketVersioning(
            f"{name}-artifacts-versioning",
            aws.s3.BucketVersioningInitArgs(
                bucket=bucket.id,
                versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(status="Enabled"),
            ),
            opts=self._opts(),
        )
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-artifacts-lifecycle",
            aws.s3.BucketLifecycleConfigurationArgs(
                bucket=bucket.id,
                rules=[
                    aws.s3.BucketLifecycleConfigurationRuleArgs(
                        id="expire-old-versions",
                        status="Enabled",
                        filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
                        noncurrent_version_expiration=aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
                            noncurrent_days=self._args.get("artifact_noncurrent_days", 90)
                        ),
                        abort_incomplete_multipart_upload=aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(
                            days_after_initiation=7
                        ),
                    )
                ],
            ),
            opts=self._opts(),
        )
        aws.s3.BucketPolicy(
            f"{name}-artifacts-policy",
            aws.s3.BucketPolicyArgs(
                bucket=bucket.id,
                policy=policy_document(
                    [
                        {
                            "Sid": "DenyInsecureTransport",
                            "Effect": "Deny",
                            "Principal": "*",
                            "Action": ["s3:*"],
                            "Resource": [bucket.arn, pulumi.Output.concat(bucket.arn, "/*")],
                            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                        }
                    ]
                ),
            ),
            # S3 rejects a bucket policy while the public access block is still being applied.
            opts=self._opts(depends_on=[public_block]),
        )
        return bucket

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
            *args["source_build_statements"],
            *kms_statements(self._kms_key_arn, encrypt=True),
        ]
        policy = aws.iam.RolePolicy(
            f"{self._name}-codebuild-policy",
            aws.iam.RolePolicyArgs(role=role.id, policy=policy_document(statements)),
            opts=self._opts(),
        )
        auth_resource = args.get("codebuild_source_auth_resource")
        env = {
            "MODEL_PACKAGE_GROUP_NAME": group_name,
            "ECR_REPOSITORY_URI": self.ecr_repository_url,
            "SAGEMAKER_ROLE_ARN": training_role.arn,
            "ARTIFACT_BUCKET": self.artifact_bucket,
            "TRAINING_INSTANCE_TYPE": args.get("training_instance_type", "ml.m5.large"),
            "TRAINING_DATA_PATH": args.get("training_data_path", "data/iris.csv"),
            "QUALITY_GATE_MIN_ACCURACY": pulumi.Output.from_input(
                args.get("quality_gate_min_accuracy", 0.9)
            ).apply(str),
            "KMS_KEY_ARN": self._kms_key_arn,
        }
        return aws.codebuild.Project(
            f"{self._name}-project",
            aws.codebuild.ProjectArgs(
                name=args["project_name"],
                description="Builds the training image, trains on SageMaker, registers the model",
                service_role=role.arn,
                build_timeout=args.get("build_timeout_minutes", 60),
                encryption_key=self._kms_key_arn or None,
                source=aws.codebuild.ProjectSourceArgs(
                    type=args["codebuild_source_type"],
                    location=args["codebuild_source_location"],
                    buildspec=BUILDSPEC_PATH,
                    git_clone_depth=1,
                    auth=aws.codebuild.ProjectSourceAuthArgs(type="CODECONNECTIONS", resource=auth_resource)
                    if auth_resource is not None
                    else None,
                ),
                source_version=pulumi.Output.concat("refs/heads/", args.get("source_branch", "main")),
                artifacts=aws.codebuild.ProjectArtifactsArgs(type="NO_ARTIFACTS"),
                environment=aws.codebuild.ProjectEnvironmentArgs(
                    compute_type=args.get("build_compute_type", "BUILD_GENERAL1_SMALL"),
                    image=args.get("build_image", "aws/codebuild/standard:7.0"),
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
            *args["source_pipeline_statements"],
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
                                provider=args["source_action_provider"],
                                version="1",
                                output_artifacts=[SOURCE_ARTIFACT],
                                configuration=args["source_action_configuration"],
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
