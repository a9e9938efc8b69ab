"""ArtifactStore: the image repository and the artifact bucket, owned once, used by build and endpoint.

The build pushes the one train/serve image and writes training data, model artifacts and evaluations;
the endpoint pulls that image and reads the model. This component owns both stores and their
safety settings (immutable scanned images, a lifecycle that keeps every registered version's image;
a private, encrypted, versioned, TLS-only bucket); the others take it and are granted on it.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict

import pulumi
import pulumi_aws as aws

from components.iam import policy_document
from workloads.serve.deployer.settings_table import Aws
from workloads.train import steps

# An image the register step tags with this prefix is kept by the ECR lifecycle policy.
REGISTERED_IMAGE_TAG_PREFIX = steps.REGISTERED_IMAGE_TAG_PREFIX
# "Keep up to this many": in effect all (ECR's countNumber is an integer; the rule only protects).
KEEP_REGISTERED_IMAGES = 100000


class ArtifactStoreArgs(TypedDict):
    ecr_repository_name: pulumi.Input[str]
    """ECR repository for the one train/serve image."""
    ecr_max_image_count: NotRequired[pulumi.Input[int]]
    """Images kept besides those of registered model versions (which are never expired)."""
    artifact_noncurrent_days: NotRequired[pulumi.Input[int]]
    """Days an overwritten or deleted artifact version is kept."""
    kms_key_arn: NotRequired[str]
    """Customer-managed KMS key for bucket and images; empty = AWS-managed encryption."""
    force_destroy: NotRequired[bool]
    """Let `pulumi destroy` delete a non-empty bucket and repository (dev stacks)."""
    moved_from: NotRequired[pulumi.Input[str]]
    """URN of the component that owned these stores before (an alias, so an update moves them
    instead of replacing them)."""


class ArtifactStore(pulumi.ComponentResource):
    """ECR repository + lifecycle policy, artifact bucket + its controls."""

    ecr_repository_url: pulumi.Output[str]
    ecr_repository_arn: pulumi.Output[str]
    artifact_bucket: pulumi.Output[str]
    artifact_bucket_arn: pulumi.Output[str]

    def __init__(
        self, name: str, args: ArtifactStoreArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mlops:index:ArtifactStore", name, None, opts)
        self._name = name
        self._args = args
        self._kms_key_arn = args.get("kms_key_arn") or Aws.kms_key_arn.default
        self._force_destroy = bool(args.get("force_destroy", Aws.force_destroy.default))
        moved_from = args.get("moved_from")
        self._moved_aliases: list[pulumi.Input[str] | pulumi.Alias] | None = (
            [pulumi.Alias(parent=moved_from)] if moved_from else None
        )
        repository = self._create_ecr_repository()
        bucket = self._create_artifact_bucket()
        self.ecr_repository_url = repository.repository_url
        self.ecr_repository_arn = repository.arn
        self.artifact_bucket = bucket.bucket
        self.artifact_bucket_arn = bucket.arn
        self.register_outputs(
            {
                "ecr_repository_url": self.ecr_repository_url,
                "ecr_repository_arn": self.ecr_repository_arn,
                "artifact_bucket": self.artifact_bucket,
                "artifact_bucket_arn": self.artifact_bucket_arn,
            }
        )

    def _opts(self, depends_on: list[pulumi.Resource] | None = None) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=self, depends_on=depends_on, aliases=self._moved_aliases)

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
        max_images = pulumi.Output.from_input(
            self._args.get("ecr_max_image_count", Aws.ecr_max_image_count.default)
        )
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
                            noncurrent_days=self._args.get(
                                "artifact_noncurrent_days", Aws.artifact_noncurrent_days.default
                            )
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
