"""The AWS adapter of mlops.backend.Backend: plain boto3 against SageMaker, CodeBuild and CloudWatch Logs.

It reuses the code the platform itself runs: training is workloads.train.run_job/steps (the build's
steps), deployment is the deployer Lambda's code (workloads.serve.deployer), so a by-hand action
behaves exactly like the automated one.

Settings come from one thing, the stack: `mlops --target aws --stack dev` (or MLOPS_STACK) reads
`pulumi stack output --json --show-secrets`, MLOPS_STACK_OUTPUTS=<file> reads that JSON saved earlier.
The outputs name the group, endpoint, API, build project and deployer function; deployment settings
are then the deployer Lambda's own environment and training settings the CodeBuild project's, read
from AWS, so a by-hand action sends exactly what the automatic one does. Without a stack, the env
vars of docs/contracts.md are used as they are (MODEL_PACKAGE_GROUP_NAME, ENDPOINT_NAME, ...).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlops.backend import (
    APPROVED,
    REJECTED,
    ApprovalOutlook,
    BuildRecord,
    DeploymentRecord,
    DeploymentStatus,
    EndpointStatus,
    ModelVersion,
    PlatformError,
    Progress,
    RequestFilter,
    RequestRecord,
    TrainResult,
    VariantStatus,
    predict_approval,
)
from workloads.serve import deploy as deploy_script
from workloads.serve.deployer import deployer as dp
from workloads.serve.deployer import lifecycle, signatures
from workloads.train import registry, run_job, steps

_VERSION_IN_NAME = re.compile(r"-v(\d+)-[0-9a-f]{8}$")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _error_message(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Message", exc))


# Stack outputs (__main__.py's exports) -> the names the adapter and the reused scripts read.
STACK_OUTPUT_ENV = {
    "model_package_group_name": "MODEL_PACKAGE_GROUP_NAME",
    "endpoint_name": "ENDPOINT_NAME",
    "api_url": "MLOPS_API_URL",
    "api_key": "MLOPS_API_KEY",
    "build_project_name": "BUILD_PROJECT_NAME",
    "deployer_function_name": "DEPLOYER_FUNCTION_NAME",
    "artifact_bucket": "ARTIFACT_BUCKET",
    "ecr_repository_url": "ECR_REPOSITORY_URI",
    "training_role_arn": "SAGEMAKER_ROLE_ARN",
    "execution_role_arn": "EXECUTION_ROLE_ARN",
    "table_name": "TABLE_NAME",
    # The stack's region, for every client: the shell's default region may be another one.
    "region": "AWS_REGION",
}
# CodeBuild project env vars a by-hand training run takes from the stack's project.
BUILD_SETTINGS = (
    "MODEL_PACKAGE_GROUP_NAME",
    "ECR_REPOSITORY_URI",
    "SAGEMAKER_ROLE_ARN",
    "ARTIFACT_BUCKET",
    "TRAINING_INSTANCE_TYPE",
    "TRAINING_DATA_PATH",
    "QUALITY_GATE_MIN_ACCURACY",
    "KMS_KEY_ARN",
)


def find_project_root(start: Path | None = None) -> Path | None:
    """The nearest directory holding Pulumi.yaml, from `start` (default: the working directory) up."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "Pulumi.yaml").is_file():
            return folder
    return None


def stack_outputs(
    stack: str | None = None,
    path: str | None = None,
    *,
    run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run,
) -> dict[str, Any]:
    """A stack's outputs: from a saved `pulumi stack output --json --show-secrets` file, or by running it."""
    if path:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise PlatformError(f"cannot read stack outputs from {path}: {exc}") from None
    else:
        if not stack:
            raise PlatformError("name a stack: --stack <name> or MLOPS_STACK (or MLOPS_STACK_OUTPUTS=<file>)")
        root = find_project_root()
        command = ["pulumi", "stack", "output", "--json", "--show-secrets", "--stack", stack]
        try:
            done = run(command, cwd=root, capture_output=True, text=True, timeout=120, check=False)
        except FileNotFoundError:
            raise PlatformError(
                "the Pulumi CLI is not on PATH; install it, or save the outputs elsewhere with "
                "`pulumi stack output --json --show-secrets > outputs.json` and set MLOPS_STACK_OUTPUTS"
            ) from None
        except subprocess.TimeoutExpired:
            raise PlatformError(f"`{' '.join(command)}` did not answer within 120 s") from None
        if done.returncode != 0:
            why = (done.stderr or done.stdout).strip().splitlines()
            raise PlatformError(
                f"`{' '.join(command)}` failed in {root or Path.cwd()}: {why[-1] if why else done.returncode}"
            )
        try:
            data = json.loads(done.stdout)
        except ValueError:
            raise PlatformError(f"`{' '.join(command)}` printed no JSON") from None
    if not isinstance(data, dict) or "endpoint_name" not in data:
        raise PlatformError(
            f"stack outputs {'in ' + path if path else 'of ' + str(stack)} have no endpoint_name; "
            "are they this platform's (`pulumi stack output --json --show-secrets`)?"
        )
    return data


def stack_environment(outputs: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, str]:
    """`env` with every setting the stack's outputs name replaced by the stack's value."""
    merged = {k: v for k, v in env.items() if k not in STACK_OUTPUT_ENV.values()}
    if isinstance(outputs.get("region"), str) and outputs["region"]:
        merged["AWS_DEFAULT_REGION"] = outputs["region"]
    for output, name in STACK_OUTPUT_ENV.items():
        value = outputs.get(output)
        if isinstance(value, str) and value:
            merged[name] = value
    return merged


# `mlops requests` without an id scans the records table; beyond this it asks for a narrower search.
REQUEST_SCAN_ITEMS = 20_000


def _request_record(item: dict[str, Any]) -> RequestRecord:
    """A record as the API Lambda stored it (handler.dynamodb_item), back in plain values."""
    import gzip

    from boto3.dynamodb.types import TypeDeserializer  # boto3's own reading of DynamoDB's typed form

    plain = {key: TypeDeserializer().deserialize(value) for key, value in item.items()}
    for key in ("input", "output"):
        packed = plain.pop(f"{key}_gzip", None)
        if packed is not None:  # an item that would pass 400 KB is stored compressed
            plain[key] = gzip.decompress(bytes(packed)).decode("utf-8")
    caller = plain.get("caller")
    return RequestRecord(
        request_id=str(plain["request_id"]),
        created_at=str(plain.get("created_at", "")),
        status_code=int(plain.get("status_code", 0)),
        model_version=None if plain.get("model_version") is None else str(plain["model_version"]),
        latency_ms=float(plain.get("latency_ms", 0)),
        input=str(plain.get("input", "")),
        output=str(plain.get("output", "")),
        caller=dict(caller) if isinstance(caller, dict) else {},
    )


@dataclass(frozen=True)
class AwsSettings:
    group: str
    endpoint: str = ""
    region: str | None = None
    api_url: str = ""
    api_key: str = ""
    build_project: str = ""
    env: Mapping[str, str] = field(default_factory=dict)  # the rest, for training and deployer settings

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> AwsSettings:
        env = dict(os.environ if env is None else env)
        values: dict[str, Any] = {
            "group": env.get("MODEL_PACKAGE_GROUP_NAME", ""),
            "endpoint": env.get("ENDPOINT_NAME", ""),
            "region": env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
            "api_url": env.get("MLOPS_API_URL", ""),
            "api_key": env.get("MLOPS_API_KEY", ""),
            "build_project": env.get("BUILD_PROJECT_NAME", ""),
            "env": env,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @classmethod
    def from_stack(
        cls, outputs: Mapping[str, Any], env: Mapping[str, str] | None = None, **overrides: Any
    ) -> AwsSettings:
        """Settings from a stack's outputs (the one thing a user names), the rest of `env` kept."""
        return cls.from_env(stack_environment(outputs, dict(os.environ if env is None else env)), **overrides)


class AwsBackend:
    """mlops.backend.Backend on AWS."""

    name = "aws"

    def __init__(
        self,
        settings: AwsSettings | None = None,
        *,
        clients: Mapping[str, Any] | None = None,
        poll_seconds: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings or AwsSettings.from_env()
        self._clients: dict[str, Any] = dict(clients or {})
        self._deployer_env: dict[str, str] | None = None
        self.poll_seconds = poll_seconds
        self.sleep = sleep

    @classmethod
    def from_env(cls, stack: str | None = None) -> AwsBackend:
        """The stack named here, by MLOPS_STACK or by MLOPS_STACK_OUTPUTS; else the env vars alone."""
        stack = stack or os.environ.get("MLOPS_STACK") or None
        path = os.environ.get("MLOPS_STACK_OUTPUTS") or None
        if stack and path:
            raise PlatformError(
                f"both a stack ({stack}) and MLOPS_STACK_OUTPUTS ({path}) name the platform; "
                "unset one, so the command cannot act on another stack than meant"
            )
        if stack or path:
            return cls(AwsSettings.from_stack(stack_outputs(stack, path)))
        return cls(AwsSettings.from_env())

    def client(self, service: str) -> Any:
        if service not in self._clients:
            import boto3
            from botocore.config import Config

            retry = Config(retries={"mode": "standard", "max_attempts": 8})
            self._clients[service] = boto3.client(service, region_name=self.settings.region, config=retry)
        return self._clients[service]

    def _need(self, **values: str) -> None:
        missing = [name for name, value in values.items() if not value]
        if missing:
            raise PlatformError(
                f"{', '.join(missing)} is not known: name the stack (--stack <name> or MLOPS_STACK), "
                "whose outputs name it"
            )

    # --- registry -------------------------------------------------------------------------------

    def _summaries(self, status: str | None = None) -> list[dict[str, Any]]:
        self._need(MODEL_PACKAGE_GROUP_NAME=self.settings.group)
        sm = self.client("sagemaker")
        found: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"ModelPackageGroupName": self.settings.group, "MaxResults": 100}
        if status:
            kwargs["ModelApprovalStatus"] = status
        while True:
            try:
                page = sm.list_model_packages(**kwargs)
            except Exception as exc:
                raise PlatformError(
                    f"cannot list model group {self.settings.group}: {_error_message(exc)}"
                ) from None
            found.extend(page.get("ModelPackageSummaryList", []))
            if not page.get("NextToken"):
                return sorted(found, key=lambda p: int(p["ModelPackageVersion"]))
            kwargs["NextToken"] = page["NextToken"]

    def _arn(self, ref: str) -> str:
        try:
            found = lifecycle.parse_version_ref(ref)
        except lifecycle.LifecycleError as exc:
            raise PlatformError(str(exc)) from None
        if found.arn:
            return found.arn
        for summary in self._summaries():
            if int(summary["ModelPackageVersion"]) == found.version:
                return str(summary["ModelPackageArn"])
        raise PlatformError(f"model group {self.settings.group} has no version {found.version}")

    def _describe(self, arn: str) -> dict[str, Any]:
        try:
            return registry.describe(self.client("sagemaker"), arn)
        except registry.RegistryError as exc:
            raise PlatformError(str(exc)) from None

    def _metrics(self, package: Mapping[str, Any]) -> dict[str, Any]:
        return registry.metrics(self.client("s3"), package)

    def _model_version(self, package: Mapping[str, Any], *, with_metrics: bool = True) -> ModelVersion:
        props = package.get("CustomerMetadataProperties") or {}
        hyper = dict(
            item.split("=", 1) for item in str(props.get("hyperparameters", "")).split() if "=" in item
        )
        container = (package.get("InferenceSpecification", {}).get("Containers") or [{}])[0]
        created = package.get("CreationTime")
        return ModelVersion(
            group=str(package.get("ModelPackageGroupName", self.settings.group)),
            version=int(package["ModelPackageVersion"]),
            arn=str(package["ModelPackageArn"]),
            status=str(package.get("ModelApprovalStatus", "")),
            created_at=created.isoformat() if isinstance(created, datetime) else str(created or ""),
            metrics=self._metrics(package) if with_metrics else {},
            approver=props.get("approved_by") or props.get("rejected_by"),
            description=package.get("ApprovalDescription"),
            source_commit=props.get("commit") or package.get("MetadataProperties", {}).get("CommitId"),
            data_location=props.get("data_location"),
            image_uri=container.get("Image"),
            signature_change_allowed=signatures.allowed(package),
            signature=signatures.recorded(package, self.client("s3")) if with_metrics else None,
            estimator=props.get("estimator") or None,
            hyperparameters=hyper,
        )

    def list_models(self) -> list[ModelVersion]:
        return [self.get_model(s["ModelPackageArn"]) for s in self._summaries()]

    def get_model(self, ref: str) -> ModelVersion:
        return self._model_version(self._describe(self._arn(ref)))

    def _decide(self, ref: str, status: str, text: str, force: bool, allow: bool = False) -> ModelVersion:
        arn = self._arn(ref)
        gate = None
        if status == APPROVED and self.settings.endpoint:
            # Up front, against what the endpoint serves: the deployer would refuse the event anyway.
            gate = registry.signature_check(
                self.client("sagemaker"),
                self.client("s3"),
                self._describe(arn),
                self.settings.endpoint,
                allow=allow,
            )
        try:
            package = registry.decide(
                self.client("sagemaker"),
                self.client("sts"),
                arn,
                status,
                text,
                force=force,
                allow_signature_change=allow,
                gate=gate,
            )
        except registry.RegistryError as exc:
            raise PlatformError(str(exc)) from None
        return self._model_version(package)

    def approve(
        self, ref: str, *, description: str = "", force: bool = False, allow_signature_change: bool = False
    ) -> ModelVersion:
        return self._decide(ref, APPROVED, description, force, allow_signature_change)

    def reject(self, ref: str, *, reason: str, force: bool = False) -> ModelVersion:
        return self._decide(ref, REJECTED, reason, force)

    # --- training -------------------------------------------------------------------------------

    def train(
        self,
        *,
        data_location: str | None = None,
        instance_type: str | None = None,
        wait: bool = True,
        progress: Progress | None = None,
    ) -> TrainResult:
        env = self.build_environment()
        try:
            settings = steps.TrainingSettings.from_env(
                env, group=self.settings.group or None, instance_type=instance_type
            )
            if not settings.image_uri and env.get("ECR_REPOSITORY_URI"):
                settings = replace(
                    settings, image_uri=run_job.newest_image(self.client("ecr"), env["ECR_REPOSITORY_URI"])
                )
            commit = "manual-" + datetime.now(UTC).strftime("%Y%m%d%H%M%S")
            if not data_location:
                settings.require("bucket")
                local = Path(env.get("TRAINING_DATA_PATH") or "data/iris.csv")
                data_location = steps.upload_data(
                    self.client("s3"), local, settings.bucket, commit, kms_key_arn=settings.kms_key_arn
                )
            log = (lambda m: progress(m, None)) if progress else (lambda m: None)
            result = run_job.run(
                {n: self.client(n) for n in ("s3", "sagemaker", "logs", "ecr")},
                settings,
                data_location,
                commit=commit,
                wait=wait,
                log=log,
                poll_seconds=self.poll_seconds,
            )
        except steps.StepError as exc:
            raise PlatformError(str(exc)) from None
        model = self.get_model(result.package_arn) if result.package_arn else None
        return TrainResult(result.job_name, result.status, model, dict(result.metrics), result.failure_reason)

    # --- deployment -----------------------------------------------------------------------------

    def deployer_environment(self) -> dict[str, str]:
        """The deployer's settings: its Lambda's environment when the stack names the function.

        Read once per backend: `status --watch` polls the endpoint, not the function's configuration."""
        if self._deployer_env is None:
            self._deployer_env = self._read_deployer_environment()
        return dict(self._deployer_env)

    def _read_deployer_environment(self) -> dict[str, str]:
        env = dict(self.settings.env)
        try:
            env = deploy_script.by_hand_environment(
                env, env.get("DEPLOYER_FUNCTION_NAME"), self.client("lambda")
            )
        except dp.DeployError as exc:
            raise PlatformError(str(exc)) from None
        env["MODEL_PACKAGE_GROUP_NAME"] = self.settings.group or env.get("MODEL_PACKAGE_GROUP_NAME", "")
        env["ENDPOINT_NAME"] = self.settings.endpoint or env.get("ENDPOINT_NAME", "")
        return env

    def build_environment(self) -> dict[str, str]:
        """Training settings: the CodeBuild project's environment when the stack names the project."""
        env = dict(self.settings.env)
        project = self.settings.build_project
        if not project:
            return env
        try:
            found = self.client("codebuild").batch_get_projects(names=[project]).get("projects", [])
        except Exception as exc:
            raise PlatformError(f"cannot read build project {project}: {_error_message(exc)}") from None
        if not found:
            raise PlatformError(f"build project {project} does not exist (BUILD_PROJECT_NAME)")
        variables = {
            v["name"]: v["value"] for v in found[0].get("environment", {}).get("environmentVariables", [])
        }
        env.update({k: variables[k] for k in BUILD_SETTINGS if k in variables})
        return env

    def deployer(self) -> dp.Deployer:
        env = self.deployer_environment()
        try:
            config = dp.DeployerConfig.from_env(env)
        except dp.DeployError as exc:
            raise PlatformError(str(exc)) from None
        return dp.Deployer(
            config,
            sagemaker=self.client("sagemaker"),
            autoscaling=self.client("application-autoscaling"),
            cloudwatch=self.client("cloudwatch"),
            s3=self.client("s3"),
            log=lambda m: None,
            in_lambda=False,
        )

    def deploy(
        self,
        ref: str | None = None,
        *,
        rollback: bool = False,
        wait: bool = True,
        progress: Progress | None = None,
        allow_signature_change: bool = False,
    ) -> DeploymentStatus:
        deployer = self.deployer()
        arn: str | None = None
        if not rollback:
            if ref is None:
                approved = self._summaries(APPROVED)
                if not approved:
                    raise PlatformError(
                        f"model group {self.settings.group} has no approved version to deploy"
                    )
                arn = str(approved[-1]["ModelPackageArn"])
            else:
                arn = self._arn(ref)
        try:
            result = deploy_script.deploy_by_hand(
                deployer,
                arn,
                rollback=rollback,
                wait=wait,
                progress=progress,
                poll_seconds=self.poll_seconds,
                allow_signature_change=allow_signature_change,
            )
        except dp.DeployError as exc:
            raise PlatformError(str(exc)) from None
        return DeploymentStatus(
            target_version=result.version or 0,
            status=result.status,
            started_at=result.started_at or _now(),
            finished_at=result.finished_at,
            message=result.message,
            from_version=result.from_version,
        )

    def status(self) -> EndpointStatus:
        self._need(ENDPOINT_NAME=self.settings.endpoint)
        deployer = self.deployer()
        state = deployer.endpoint_state()
        if state.status == "Absent":
            return EndpointStatus(self.settings.endpoint, "Absent")
        desc = state.description
        rows: list[tuple[str, str | None, dict[str, Any], str]] = []
        for v in desc.get("ProductionVariants", []):
            rows.append(
                (
                    str(v.get("VariantName")),
                    state.config_name,
                    v,
                    "blue" if desc.get("PendingDeploymentSummary") else "live",
                )
            )
        pending = desc.get("PendingDeploymentSummary") or {}
        for v in pending.get("ProductionVariants", []):
            rows.append((f"{v.get('VariantName')} (green)", pending.get("EndpointConfigName"), v, "green"))
        total = sum(float(v.get("CurrentWeight") or 0) for _, _, v, _ in rows) or 1.0
        variants = []
        for name, config, v, role in rows:
            match = _VERSION_IN_NAME.search(config or "")
            steps_text = "; ".join(str(s.get("Status")) for s in v.get("VariantStatus", []))
            variants.append(
                VariantStatus(
                    name=name,
                    model_version=int(match.group(1)) if match else None,
                    weight=float(v.get("CurrentWeight") or 0) / total,
                    instances=v.get("CurrentInstanceCount"),
                    health=steps_text or (state.status if role != "green" else "unknown"),
                )
            )
        recorded = deployer.recorded(state)
        last = None
        if recorded.version is not None:
            last = DeploymentStatus(
                target_version=recorded.version,
                status=recorded.status,
                started_at=recorded.started_at or "",
                finished_at=recorded.finished_at,
                message=recorded.message,
                from_version=recorded.from_version,
            )
        return EndpointStatus(
            name=state.name,
            status=state.status,
            variants=variants,
            serving_version=state.version_tag(dp.TAG_SERVING),
            last_deployment=last,
            queued_version=state.version_tag(dp.TAG_PENDING),
            notes=self._refusal_notes(state),
        )

    @staticmethod
    def _refusal_notes(state: dp.EndpointState) -> list[str]:
        """The approval the deployer refused for a breaking signature change, until it is deployed."""
        refused = state.version_tag(dp.TAG_REFUSED)
        if refused is None:
            return []
        changes = tuple(c.strip() for c in state.tags.get(dp.TAG_REFUSAL, "").split(";") if c.strip())
        check = lifecycle.SignatureCheck(refused, state.version_tag(dp.TAG_SERVING), changes or ("unknown",))
        return [check.refusal()]

    def endpoint_view(self) -> lifecycle.EndpointView:
        """The endpoint as the deployer Lambda sees it (its tags), for the same lifecycle rules."""
        self._need(ENDPOINT_NAME=self.settings.endpoint)
        deployer = self.deployer()
        return deployer.view(deployer.endpoint_state())

    def approval_outlook(self, version: int) -> ApprovalOutlook:
        # EventBridge delivers the approval to the deployer Lambda, which applies this same rule.
        return predict_approval(self.endpoint_view(), version)

    # --- history ----------------------------------------------------------------------------------

    def _build_record(self, build: Mapping[str, Any], versions: Mapping[str, int]) -> BuildRecord:
        commit = build.get("resolvedSourceVersion") or build.get("sourceVersion")
        failed = [
            f"{p.get('phaseType')}: {'; '.join(str(c.get('message')) for c in p.get('contexts') or [])}"
            for p in build.get("phases") or []
            if p.get("phaseStatus") in ("FAILED", "FAULT", "TIMED_OUT", "STOPPED")
        ]
        started, ended = build.get("startTime"), build.get("endTime")
        return BuildRecord(
            id=str(build["id"]),
            commit=str(commit) if commit else None,
            status=str(build.get("buildStatus")),
            created_at=started.isoformat() if isinstance(started, datetime) else None,
            finished_at=ended.isoformat() if isinstance(ended, datetime) else None,
            reason="; ".join(failed) or None,
            model_version=versions.get(str(commit)) if commit else None,
        )

    def _commit_versions(self) -> dict[str, int]:
        """Commit -> the newest version registered from it (a build's "version it made")."""
        return {m.source_commit: m.version for m in self.list_models() if m.source_commit}

    def builds(self) -> list[BuildRecord]:
        """The build project's builds, oldest first (CodeBuild lists the newest 100 per page; one page)."""
        self._need(BUILD_PROJECT_NAME=self.settings.build_project)
        cb = self.client("codebuild")
        try:
            ids = cb.list_builds_for_project(
                projectName=self.settings.build_project, sortOrder="DESCENDING"
            ).get("ids", [])
            found = cb.batch_get_builds(ids=ids).get("builds", []) if ids else []
        except Exception as exc:
            raise PlatformError(
                f"cannot list the builds of project {self.settings.build_project}: {_error_message(exc)}"
            ) from None
        versions = self._commit_versions()
        return sorted((self._build_record(b, versions) for b in found), key=lambda b: b.created_at or "")

    def build(self, ref: str | None = None) -> BuildRecord:
        if ref and ":" not in ref:  # a training job, as `mlops logs <job>` takes
            try:
                job = self.client("sagemaker").describe_training_job(TrainingJobName=ref)
            except Exception as exc:
                raise PlatformError(f"no build or training job {ref!r}: {_error_message(exc)}") from None
            started = job.get("TrainingStartTime") or job.get("CreationTime")
            return BuildRecord(
                id=ref,
                commit=None,
                status=str(job.get("TrainingJobStatus")),
                created_at=started.isoformat() if isinstance(started, datetime) else None,
                reason=job.get("FailureReason"),
            )
        # One build: the version it made is looked up by `mlops builds`, not here (a registry listing
        # per `mlops logs` would cost a call per version).
        return self._build_record(self._codebuild_build(ref), {})

    def deployments(self) -> list[DeploymentRecord]:
        raise PlatformError(
            "the AWS deployer keeps no deployment history: the endpoint's tags hold only the last "
            "deployment (`mlops --target aws status`) and the served/rolled-back versions (`mlops models`)"
        )

    # --- the request records (DynamoDB, written by the API Lambda) ---------------------------------

    def _table(self) -> str:
        table = self.settings.env.get("TABLE_NAME", "")
        self._need(TABLE_NAME=table)
        return table

    def request(self, request_id: str) -> RequestRecord:
        table = self._table()
        try:
            found = self.client("dynamodb").get_item(
                TableName=table, Key={"request_id": {"S": request_id}}, ConsistentRead=True
            )
        except Exception as exc:  # botocore's ClientError and connection errors alike
            raise PlatformError(
                f"cannot read request {request_id} from {table}: {_error_message(exc)}"
            ) from None
        if "Item" not in found:
            raise PlatformError(f"no stored request has id {request_id!r} in {table} (see `mlops requests`)")
        return _request_record(found["Item"])

    def requests(self, where: RequestFilter) -> list[RequestRecord]:
        """Recent requests, newest first. The table is keyed by request id only (what the API needs
        to store fast), so this is a Scan with the filter applied by DynamoDB: it reads at most
        REQUEST_SCAN_ITEMS items, and says so when it stopped before the end of the table."""
        table = self._table()
        conditions, values = [], {}
        if where.version is not None:
            conditions.append("model_version = :v")
            values[":v"] = {"S": where.version}
        if where.status is not None:
            if where.status < 10:  # a class: 4 means 400..499
                conditions.append("status_code BETWEEN :lo AND :hi")
                values[":lo"], values[":hi"] = (
                    {"N": str(where.status * 100)},
                    {"N": str(where.status * 100 + 99)},
                )
            else:
                conditions.append("status_code = :s")
                values[":s"] = {"N": str(where.status)}
        if where.since is not None:
            conditions.append("created_at >= :since")
            values[":since"] = {"S": where.since}
        if where.until is not None:
            conditions.append("created_at <= :until")
            values[":until"] = {"S": where.until}
        kwargs: dict[str, Any] = {"TableName": table}
        if conditions:
            kwargs["FilterExpression"] = " AND ".join(conditions)
            kwargs["ExpressionAttributeValues"] = values
        found: list[RequestRecord] = []
        scanned = 0
        try:
            while True:
                page = self.client("dynamodb").scan(**kwargs)
                scanned += int(page.get("ScannedCount", 0))
                found.extend(_request_record(item) for item in page.get("Items", []))
                if "LastEvaluatedKey" not in page:
                    break
                if scanned >= REQUEST_SCAN_ITEMS:
                    raise PlatformError(
                        f"{table} holds more than {REQUEST_SCAN_ITEMS:,} records; narrow the search "
                        "(--since/--until, --version, --status) or read one by id (`mlops requests <id>`)"
                    )
                kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        except PlatformError:
            raise
        except Exception as exc:
            raise PlatformError(f"cannot read the requests in {table}: {_error_message(exc)}") from None
        found.sort(key=lambda r: r.created_at, reverse=True)
        return found[: where.limit]

    def teardown(self) -> list[str]:
        env = self.deployer_environment()
        # Teardown needs no role; DeployerConfig insists on one for deploying.
        env.setdefault("EXECUTION_ROLE_ARN", "unused-by-teardown")
        env.pop("DEPLOYER_FUNCTION_NAME", None)  # already read
        settings = replace(self.settings, env=env)
        try:
            return (
                AwsBackend(settings, clients=self._clients)
                .deployer()
                .teardown(poll_seconds=self.poll_seconds)
            )
        except dp.DeployError as exc:
            raise PlatformError(str(exc)) from None

    # --- predictions and logs -------------------------------------------------------------------

    def predict(self, payload: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps(payload).encode()
        if self.settings.api_url:
            url = self.settings.api_url.rstrip("/")
            # The stack's api_url output is the whole route; an older setting named the stage only.
            request = urllib.request.Request(
                url if url.endswith("/predict") else url + "/predict",
                data=body,
                headers={"Content-Type": "application/json", "x-api-key": self.settings.api_key},
                method="POST",
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    return dict(json.loads(response.read()))
            except urllib.error.HTTPError as exc:
                try:
                    detail = json.loads(exc.read()).get("error", "")
                except (ValueError, AttributeError):
                    detail = ""
                raise PlatformError(f"the API answered {exc.code}: {detail or exc.reason}") from None
            except urllib.error.URLError as exc:
                raise PlatformError(f"cannot reach {self.settings.api_url}: {exc.reason}") from None
        self._need(ENDPOINT_NAME=self.settings.endpoint)
        try:
            response = self.client("sagemaker-runtime").invoke_endpoint(
                EndpointName=self.settings.endpoint,
                ContentType="application/json",
                Accept="application/json",
                Body=body,
            )
            return dict(json.loads(response["Body"].read()))
        except Exception as exc:
            raise PlatformError(
                f"endpoint {self.settings.endpoint} answered: {_error_message(exc)}"
            ) from None

    def _codebuild_build(self, build_id: str | None) -> dict[str, Any]:
        """One CodeBuild build as batch_get_builds describes it: `build_id`, or the project's newest."""
        cb = self.client("codebuild")
        if build_id is None:
            self._need(BUILD_PROJECT_NAME=self.settings.build_project)
            try:
                ids = cb.list_builds_for_project(
                    projectName=self.settings.build_project, sortOrder="DESCENDING"
                ).get("ids", [])
            except Exception as exc:
                raise PlatformError(
                    f"cannot list the builds of project {self.settings.build_project}: {_error_message(exc)}"
                ) from None
            if not ids:
                raise PlatformError(f"build project {self.settings.build_project} has no builds yet")
            build_id = str(ids[0])
        try:
            found = cb.batch_get_builds(ids=[build_id]).get("builds", [])
        except Exception as exc:
            raise PlatformError(f"cannot read build {build_id}: {_error_message(exc)}") from None
        if not found:
            raise PlatformError(f"no build {build_id}")
        return dict(found[0])

    def _build_log(self, build_id: str | None) -> tuple[str, str, str, str]:
        build = self._codebuild_build(build_id)
        found_id = str(build.get("id") or build_id)
        logs = build.get("logs", {})
        if not logs.get("groupName") or not logs.get("streamName"):
            raise PlatformError(f"build {found_id} has no CloudWatch log yet")
        return found_id, str(logs["groupName"]), str(logs["streamName"]), str(build.get("buildStatus"))

    def logs(self, ref: str | None = None, *, follow: bool = False, limit: int = 100) -> Iterator[str]:
        """A build's log (default: the latest build; ids look like project:uuid) or a training job's."""
        if ref and ":" not in ref:
            return self._training_logs(ref, follow=follow, limit=limit)
        return self._build_logs(ref, follow=follow, limit=limit)

    def _training_logs(self, job: str, *, follow: bool, limit: int) -> Iterator[str]:
        sm = self.client("sagemaker")
        try:
            sm.describe_training_job(TrainingJobName=job)
        except Exception as exc:
            raise PlatformError(f"no build or training job {job!r}: {_error_message(exc)}") from None
        tail = steps.TrainingLogTail(self.client("logs"), job)
        yield from tail.lines()[-limit:]
        while (
            follow
            and sm.describe_training_job(TrainingJobName=job)["TrainingJobStatus"] not in steps.TERMINAL
        ):
            self.sleep(self.poll_seconds)
            yield from tail.lines()
        if follow:
            yield from tail.lines()

    def _build_logs(self, ref: str | None, *, follow: bool, limit: int) -> Iterator[str]:
        build_id, group, stream, status = self._build_log(ref)
        cwl = self.client("logs")
        kwargs: dict[str, Any] = {"logGroupName": group, "logStreamName": stream, "startFromHead": True}
        lines: list[str] = []
        first = True
        while True:
            try:
                page = cwl.get_log_events(**kwargs)
            except Exception as exc:
                # The stream is missing before the build starts logging, or after the group's retention.
                raise PlatformError(
                    f"cannot read the log of build {build_id} (log group {group}, stream {stream}): "
                    f"{_error_message(exc)}"
                ) from None
            batch = [str(e["message"]).rstrip("\n") for e in page.get("events", [])]
            if first:
                lines.extend(batch)
            else:
                yield from batch
            token = page.get("nextForwardToken")
            done_reading = not batch or token == kwargs.get("nextToken")
            kwargs["nextToken"] = token
            if done_reading:
                if first:
                    yield from lines[-limit:]
                    first = False
                if not follow or status != "IN_PROGRESS":
                    return
                self.sleep(self.poll_seconds)
                status = self._build_log(build_id)[3]
