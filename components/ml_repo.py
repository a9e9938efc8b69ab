"""MlRepo: the git repository a push to which trains a model.

An existing GitHub / GitLab / Bitbucket repository, reached through an AWS CodeConnections connection
(created here in PENDING state unless an existing one is passed; a person completes the OAuth
handshake once in the console), is the default because it works in every account. CodeCommit, the
seed's choice, still works where the account already has it: AWS closed it to new customers in July 2024.
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

import pulumi
import pulumi_aws as aws

from components.iam import Statement, allow
from workloads.serve.deployer.settings_table import Aws

RepoKind = Literal["codecommit", "github", "gitlab", "bitbucket"]
REPO_KINDS: tuple[str, ...] = Aws.source_repo_kind.choices
CONNECTION_NAME_MAX = 32
CONNECTION_SUFFIX = "-source"

# CodeConnections provider types and the clone URL host for each external kind.
_PROVIDER_TYPES = {"github": "GitHub", "gitlab": "GitLab", "bitbucket": "Bitbucket"}
_HOSTS = {"github": "github.com", "gitlab": "gitlab.com", "bitbucket": "bitbucket.org"}
# CodeBuild's source type for a project that clones the repository itself (`start-build` by hand).
_CODEBUILD_SOURCE_TYPES = {
    "codecommit": "CODECOMMIT",
    "github": "GITHUB",
    "gitlab": "GITLAB",
    "bitbucket": "BITBUCKET",
}


class MlRepoArgs(TypedDict):
    name: pulumi.Input[str]
    """CodeCommit: the repository name to create. Others: the existing repository as "owner/repo"."""
    kind: NotRequired[str]
    """One of github (default), gitlab, bitbucket, codecommit."""
    branch: NotRequired[pulumi.Input[str]]
    """The branch whose pushes start the pipeline (default "main")."""
    connection_arn: NotRequired[pulumi.Input[str]]
    """External kinds only: an existing CodeConnections connection ARN; empty = create one."""
    kms_key_arn: NotRequired[pulumi.Input[str]]
    """CodeCommit only: customer-managed key for the repository; empty = AWS-managed."""


class MlRepo(pulumi.ComponentResource):
    """The source repository and what a pipeline's source stage needs to read it."""

    clone_url: pulumi.Output[str]
    """HTTPS clone URL (`git remote add origin <it>`)."""
    kind: str
    branch: pulumi.Output[str]
    repository_name: pulumi.Output[str]
    """CodeCommit repository name, or "owner/repo" for external repositories."""
    repository_arn: pulumi.Output[str]
    """The CodeCommit repository ARN, or the connection ARN for external repositories."""
    source_action_provider: str
    """CodePipeline source action provider: "CodeCommit" or "CodeStarSourceConnection"."""
    source_action_configuration: pulumi.Output[dict[str, str]]
    codebuild_source_type: str
    codebuild_source_auth_resource: pulumi.Output[str] | None
    """Connection ARN CodeBuild authenticates with when it clones an external repository."""
    push_event_pattern: pulumi.Output[str] | None
    """EventBridge pattern of a push to the branch (CodeCommit); None when the connection detects pushes."""

    def __init__(self, name: str, args: MlRepoArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlops:index:MlRepo", name, None, opts)
        kind = args.get("kind") or Aws.source_repo_kind.default
        if kind not in REPO_KINDS:
            raise ValueError(f"MlRepo {name}: kind {kind!r} is not one of {', '.join(REPO_KINDS)}")
        self.kind = kind
        self.branch = pulumi.Output.from_input(args.get("branch") or Aws.source_branch.default)
        self.codebuild_source_type = _CODEBUILD_SOURCE_TYPES[kind]
        if kind == "codecommit":
            self._create_codecommit(name, args)
        else:
            self._create_connection(name, args, kind)
        self.register_outputs(
            {
                "clone_url": self.clone_url,
                "repository_name": self.repository_name,
                "repository_arn": self.repository_arn,
                "branch": self.branch,
            }
        )

    def _create_codecommit(self, name: str, args: MlRepoArgs) -> None:
        repo = aws.codecommit.Repository(
            f"{name}-repository",
            aws.codecommit.RepositoryArgs(
                repository_name=args["name"],
                description="Training code and data; a push to the pipeline branch trains a model.",
                kms_key_id=args.get("kms_key_arn") or None,
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.clone_url = repo.clone_url_http
        self.repository_name = repo.repository_name
        self.repository_arn = repo.arn
        self.source_action_provider = "CodeCommit"
        # Pushes arrive through EventBridge (PollForSourceChanges=false): polling is deprecated and slow.
        self.source_action_configuration = pulumi.Output.all(repo.repository_name, self.branch).apply(
            lambda a: {
                "RepositoryName": a[0],
                "BranchName": a[1],
                "PollForSourceChanges": "false",
                "OutputArtifactFormat": "CODE_ZIP",
            }
        )
        self.codebuild_source_auth_resource = None
        self.push_event_pattern = pulumi.Output.json_dumps(
            {
                "source": ["aws.codecommit"],
                "detail-type": ["CodeCommit Repository State Change"],
                "resources": [repo.arn],
                "detail": {
                    "event": ["referenceCreated", "referenceUpdated"],
                    "referenceType": ["branch"],
                    "referenceName": [self.branch],
                },
            }
        )

    def _create_connection(self, name: str, args: MlRepoArgs, kind: str) -> None:
        existing = args.get("connection_arn")
        if existing:
            connection_arn = pulumi.Output.from_input(existing)
        else:
            connection = aws.codeconnections.Connection(
                f"{name}-connection",
                # ConnectionName takes at most 32 characters; an auto-name (<name>-connection-<7>) would
                # not fit a long prefix.
                aws.codeconnections.ConnectionArgs(
                    name=f"{name[: CONNECTION_NAME_MAX - len(CONNECTION_SUFFIX)]}{CONNECTION_SUFFIX}",
                    provider_type=_PROVIDER_TYPES[kind],
                ),
                opts=pulumi.ResourceOptions(parent=self),
            )
            connection_arn = connection.arn
        full_name = pulumi.Output.from_input(args["name"])
        self.clone_url = pulumi.Output.concat("https://", _HOSTS[kind], "/", full_name, ".git")
        self.repository_name = full_name
        self.repository_arn = connection_arn
        self.source_action_provider = "CodeStarSourceConnection"
        # DetectChanges: the connection's webhook starts the pipeline on a push to the branch.
        self.source_action_configuration = pulumi.Output.all(connection_arn, full_name, self.branch).apply(
            lambda a: {
                "ConnectionArn": a[0],
                "FullRepositoryId": a[1],
                "BranchName": a[2],
                "DetectChanges": "true",
                "OutputArtifactFormat": "CODE_ZIP",
            }
        )
        self.codebuild_source_auth_resource = connection_arn
        self.push_event_pattern = None

    def pipeline_source_statements(self) -> list[Statement]:
        """What the pipeline role needs for the source stage, on this repository only."""
        if self.kind == "codecommit":
            return [
                allow(
                    "ReadSourceRepository",
                    [
                        "codecommit:CancelUploadArchive",
                        "codecommit:GetBranch",
                        "codecommit:GetCommit",
                        "codecommit:GetUploadArchiveStatus",
                        "codecommit:UploadArchive",
                    ],
                    [self.repository_arn],
                )
            ]
        # Connections made before 2024 have codestar-connections ARNs and are authorised under that prefix.
        return [
            allow(
                "UseSourceConnection",
                ["codeconnections:UseConnection", "codestar-connections:UseConnection"],
                [self.repository_arn],
            )
        ]

    def build_source_statements(self) -> list[Statement]:
        """What CodeBuild needs to clone the repository itself (a build started by hand)."""
        if self.kind == "codecommit":
            return [allow("CloneSourceRepository", ["codecommit:GitPull"], [self.repository_arn])]
        return [
            allow(
                "CloneThroughConnection",
                # CodeBuild's guide for connection sources: GetConnectionToken and GetConnection.
                [
                    "codeconnections:GetConnection",
                    "codeconnections:GetConnectionToken",
                    "codeconnections:UseConnection",
                    "codestar-connections:GetConnection",
                    "codestar-connections:GetConnectionToken",
                    "codestar-connections:UseConnection",
                ],
                [self.repository_arn],
            )
        ]
