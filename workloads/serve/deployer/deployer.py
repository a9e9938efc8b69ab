"""The deployer: puts an approved model package on the SageMaker endpoint with a blue/green LINEAR update.

One code path serves the EventBridge Lambda (`handler.handler`) and the by-hand entry point
(`workloads/serve/deploy.py`). This folder is the Lambda zip: its modules (config, state, lifecycle,
autoscaling, cleanup, this one) import boto3, the standard library and each other only.

How a deployment runs:

1. An approved package (event 1, or by hand) -> create a SageMaker model and endpoint config named
   `<endpoint>-v<version>-<hash>` (the hash covers everything that goes into them, so a duplicate
   event maps to the same names and creating them again is a no-op), then CreateEndpoint when the
   endpoint is absent, else UpdateEndpoint with BlueGreenUpdatePolicy/LINEAR and the rollback alarms.
   The call returns at once: a LINEAR shift can outlast the Lambda's 15 minutes.
2. "SageMaker Endpoint State Change" (event 2) -> `reconcile`: InService on the requested config is
   success; InService on any other config means SageMaker rolled back, which is reported as a failure
   (EMF metric `DeploymentsFailed`). Then autoscaling is (re)registered, unused endpoint configs and
   models this deployer made are deleted, and a version that arrived while the endpoint was busy is
   started.
3. Pulumi's `aws.lambda_.Invocation` with `{"tf": {"action": "delete"}}` (event 3) -> `teardown`.

Deployment state lives on the endpoint as tags (see TAG_*), so any invocation can pick up where another
left off and nothing else needs storage. The production variant is always named VARIANT_NAME: a
blue/green update requires the new config to keep the old variant name.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

try:  # in the Lambda zip the modules sit side by side at the top level
    import fleet_alarms  # type: ignore[import-not-found,unused-ignore]
    import lifecycle  # type: ignore[import-not-found,unused-ignore]
    import signatures  # type: ignore[import-not-found,unused-ignore]
    from cleanup import CleanupMixin  # type: ignore[import-not-found,unused-ignore]
    from config import DeployerConfig  # type: ignore[import-not-found,unused-ignore]
    from state import (
        APPROVED,
        BUSY_STATES,
        CREATE_RETRY_PAUSES,
        ENDPOINT_EVENT,
        FAILED,
        IN_PROGRESS,
        MANAGED_BY,
        METRIC_FAILED,
        METRIC_NAMESPACE,
        PACKAGE_EVENT,
        REGISTRY_TEARDOWN,
        ROLLED_BACK,
        SCALABLE_DIMENSION,
        SKIPPED,
        SUCCEEDED,
        TAG_ACCEPTED,
        TAG_AUTOSCALING_ERROR,
        TAG_ENDPOINT,
        TAG_FAILED,
        TAG_FINISHED,
        TAG_FROM,
        TAG_MANAGED_BY,
        TAG_MESSAGE,
        TAG_PENDING,
        TAG_REFUSAL,
        TAG_REFUSED,
        TAG_ROLLBACK_OF,
        TAG_SERVED,
        TAG_SERVING,
        TAG_STARTED,
        TAG_STATUS,
        TAG_TARGET,
        TAG_TARGET_CONFIG,
        UNACCEPTED_AFTER_SECONDS,
        VARIANT_NAME,
        DeployError,
        EndpointState,
        Log,
        Progress,
        Result,
        _already_exists,
        _code,
        _message,
        _not_found,
        _parse_time,
        default_clients,
        emf_line,
        resource_name,
        tag_value,
        utcnow,
    )  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # imported as workloads.serve.deployer.deployer (tests, deploy.py, the local platform)
    from workloads.serve.deployer import fleet_alarms, lifecycle, signatures
    from workloads.serve.deployer.cleanup import CleanupMixin
    from workloads.serve.deployer.config import DeployerConfig
    from workloads.serve.deployer.state import (
        APPROVED,
        BUSY_STATES,
        CREATE_RETRY_PAUSES,
        ENDPOINT_EVENT,
        FAILED,
        IN_PROGRESS,
        MANAGED_BY,
        METRIC_FAILED,
        METRIC_NAMESPACE,
        PACKAGE_EVENT,
        REGISTRY_TEARDOWN,
        ROLLED_BACK,
        SCALABLE_DIMENSION,
        SKIPPED,
        SUCCEEDED,
        TAG_ACCEPTED,
        TAG_AUTOSCALING_ERROR,
        TAG_ENDPOINT,
        TAG_FAILED,
        TAG_FINISHED,
        TAG_FROM,
        TAG_MANAGED_BY,
        TAG_MESSAGE,
        TAG_PENDING,
        TAG_REFUSAL,
        TAG_REFUSED,
        TAG_ROLLBACK_OF,
        TAG_SERVED,
        TAG_SERVING,
        TAG_STARTED,
        TAG_STATUS,
        TAG_TARGET,
        TAG_TARGET_CONFIG,
        UNACCEPTED_AFTER_SECONDS,
        VARIANT_NAME,
        DeployError,
        EndpointState,
        Log,
        Progress,
        Result,
        _already_exists,
        _code,
        _message,
        _not_found,
        _parse_time,
        default_clients,
        emf_line,
        resource_name,
        tag_value,
        utcnow,
    )

# What this module offers its users (deploy.py, mlops/aws.py, the tests): the deployer and its vocabulary.
__all__ = [
    "APPROVED",
    "BUSY_STATES",
    "CREATE_RETRY_PAUSES",
    "ENDPOINT_EVENT",
    "FAILED",
    "IN_PROGRESS",
    "MANAGED_BY",
    "METRIC_FAILED",
    "METRIC_NAMESPACE",
    "PACKAGE_EVENT",
    "REGISTRY_TEARDOWN",
    "ROLLED_BACK",
    "SCALABLE_DIMENSION",
    "SKIPPED",
    "SUCCEEDED",
    "TAG_ACCEPTED",
    "TAG_AUTOSCALING_ERROR",
    "TAG_ENDPOINT",
    "TAG_FAILED",
    "TAG_FINISHED",
    "TAG_FROM",
    "TAG_MANAGED_BY",
    "TAG_MESSAGE",
    "TAG_PENDING",
    "TAG_REFUSAL",
    "TAG_REFUSED",
    "TAG_ROLLBACK_OF",
    "TAG_SERVED",
    "TAG_SERVING",
    "TAG_STARTED",
    "TAG_STATUS",
    "TAG_TARGET",
    "TAG_TARGET_CONFIG",
    "UNACCEPTED_AFTER_SECONDS",
    "VARIANT_NAME",
    "DeployError",
    "Deployer",
    "DeployerConfig",
    "EndpointState",
    "Log",
    "Progress",
    "Result",
    "default_clients",
    "emf_line",
    "lifecycle",
    "resource_name",
    "signatures",
    "tag_value",
    "utcnow",
]


class Deployer(CleanupMixin):
    def __init__(
        self,
        config: DeployerConfig,
        *,
        sagemaker: Any = None,
        autoscaling: Any = None,
        cloudwatch: Any = None,
        s3: Any = None,
        log: Log | None = None,
        in_lambda: bool | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self.sleep = sleep
        clients = {} if sagemaker and autoscaling and cloudwatch else default_clients()
        self.sm = sagemaker or clients["sagemaker"]
        self.aas = autoscaling or clients["autoscaling"]
        self.cw = cloudwatch or clients["cloudwatch"]
        # Reads a package's whole signature.json (the signature gate); None: the properties only.
        self.s3 = s3 if s3 is not None else clients.get("s3")
        self.log: Log = log or (lambda m: print(m, file=sys.stderr, flush=True))
        # In Lambda the EMF line in the log *is* the metric; by hand there is no log agent, so put it.
        self.in_lambda = bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME")) if in_lambda is None else in_lambda

    # -- events ----------------------------------------------------------------------------------

    def handle(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """Dispatch one Lambda event (see the module docstring); never raises for foreign events."""
        tf = event.get("tf")
        if isinstance(tf, Mapping):
            action = tf.get("action")
            if action == "delete" and event.get("purpose") == REGISTRY_TEARDOWN:
                return {"status": "TornDown", "removed": self.delete_model_packages()}
            if action == "delete":
                removed = self.teardown(wait_seconds=600)
                return {"status": "TornDown", "removed": removed}
            return Result(SKIPPED, f"lifecycle action {action!r} needs nothing").as_dict()
        kind = event.get("detail-type")
        detail = event.get("detail") or {}
        if kind == PACKAGE_EVENT:
            group = detail.get("ModelPackageGroupName")
            if group != self.config.group:
                return Result(SKIPPED, f"event for group {group!r}, not {self.config.group!r}").as_dict()
            status = detail.get("ModelApprovalStatus")
            if status != APPROVED:
                return Result(SKIPPED, f"package status {status!r} is not {APPROVED}").as_dict()
            arn = detail.get("ModelPackageArn")
            if not arn:
                return Result(SKIPPED, "event carries no ModelPackageArn").as_dict()
            return self.deploy(str(arn)).as_dict()
        if kind == ENDPOINT_EVENT:
            name = detail.get("EndpointName")
            if name != self.config.endpoint:
                return Result(SKIPPED, f"event for endpoint {name!r}, not {self.config.endpoint!r}").as_dict()
            return self.reconcile().as_dict()
        return Result(SKIPPED, f"unknown event kind {kind!r}").as_dict()

    # -- reading state ---------------------------------------------------------------------------

    def endpoint_state(self) -> EndpointState:
        name = self.config.endpoint
        try:
            desc = self.sm.describe_endpoint(EndpointName=name)
        except Exception as exc:
            if _not_found(exc):
                return EndpointState(name, "Absent")
            raise
        tags = self._tags(desc["EndpointArn"])
        return EndpointState(name, desc["EndpointStatus"], desc.get("EndpointConfigName"), tags, desc)

    def _tags(self, arn: str) -> dict[str, str]:
        tags: dict[str, str] = {}
        kwargs: dict[str, Any] = {"ResourceArn": arn}
        while True:
            page = self.sm.list_tags(**kwargs)
            for tag in page.get("Tags", []):
                tags[tag["Key"]] = tag["Value"]
            if not page.get("NextToken"):
                return tags
            kwargs["NextToken"] = page["NextToken"]

    def _set_tags(self, state: EndpointState, values: Mapping[str, str | int | None]) -> None:
        tags = [{"Key": k, "Value": tag_value("" if v is None else str(v))} for k, v in values.items()]
        self.sm.add_tags(ResourceArn=state.description["EndpointArn"], Tags=tags)
        state.tags.update({t["Key"]: t["Value"] for t in tags})

    def describe_package(self, arn: str) -> dict[str, Any]:
        try:
            return dict(self.sm.describe_model_package(ModelPackageName=arn))
        except Exception as exc:
            if _not_found(exc):
                raise DeployError(f"model package {arn} does not exist") from None
            raise

    # -- starting a deployment -------------------------------------------------------------------

    def _names(self, package: Mapping[str, Any], container: Mapping[str, Any]) -> tuple[int, str]:
        version = int(package["ModelPackageVersion"])
        c = self.config
        fingerprint = json.dumps(
            [
                package["ModelPackageArn"],
                container.get("Image"),
                container.get("ModelDataUrl"),
                c.role_arn,
                c.instance_type,
                c.data_capture_s3_uri,
                c.kms_key_arn,
                VARIANT_NAME,
            ]
        )
        digest = hashlib.sha256(fingerprint.encode()).hexdigest()
        return version, resource_name(c.endpoint, version, digest)

    def _managed_tags(self, version: int) -> list[dict[str, str]]:
        return [
            {"Key": TAG_MANAGED_BY, "Value": MANAGED_BY},
            {"Key": TAG_ENDPOINT, "Value": self.config.endpoint},
            {"Key": "mlops:model-version", "Value": str(version)},
        ]

    def _create_model(self, name: str, version: int, container: Mapping[str, Any]) -> None:
        try:
            self.sm.create_model(
                ModelName=name,
                PrimaryContainer={
                    "Image": container["Image"],
                    "ModelDataUrl": container["ModelDataUrl"],
                    "Environment": {"MODEL_VERSION": str(version)},
                },
                ExecutionRoleArn=self.config.role_arn,
                # The serving container needs no network: SageMaker fetches the model data for it.
                EnableNetworkIsolation=True,
                Tags=self._managed_tags(version),
            )
            self.log(f"created model {name}")
        except Exception as exc:
            if not _already_exists(exc):
                raise
            self.log(f"model {name} already exists")

    def _create_endpoint_config(self, name: str, version: int, instance_count: int) -> None:
        c = self.config
        kwargs: dict[str, Any] = {
            "EndpointConfigName": name,
            "ProductionVariants": [
                {
                    "VariantName": VARIANT_NAME,
                    "ModelName": name,
                    "InstanceType": c.instance_type,
                    "InitialInstanceCount": instance_count,
                    "InitialVariantWeight": 1.0,
                }
            ],
            "Tags": self._managed_tags(version),
        }
        if c.data_capture_s3_uri:
            capture: dict[str, Any] = {
                "EnableCapture": True,
                "InitialSamplingPercentage": 100,
                "DestinationS3Uri": c.data_capture_s3_uri,
                "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
                "CaptureContentTypeHeader": {
                    "JsonContentTypes": ["application/json"],
                    "CsvContentTypes": ["text/csv"],
                },
            }
            if c.kms_key_arn:
                capture["KmsKeyId"] = c.kms_key_arn
            kwargs["DataCaptureConfig"] = capture
        if c.kms_key_arn:
            kwargs["KmsKeyId"] = c.kms_key_arn
        try:
            self.sm.create_endpoint_config(**kwargs)
            self.log(f"created endpoint config {name}")
        except Exception as exc:
            if not _already_exists(exc):
                raise
            self.log(f"endpoint config {name} already exists")

    def _create_endpoint(self, config_name: str, tags: list[dict[str, str]]) -> None:
        """CreateEndpoint, retried while SageMaker cannot yet see the config just created."""
        for pause in (*CREATE_RETRY_PAUSES, None):
            try:
                self.sm.create_endpoint(
                    EndpointName=self.config.endpoint, EndpointConfigName=config_name, Tags=tags
                )
                return
            except Exception as exc:
                text = _message(exc).lower()
                if _already_exists(exc):
                    self.log(f"endpoint {self.config.endpoint} already exists")
                    return
                unseen = (
                    _code(exc) == "ValidationException"
                    and "endpoint configuration" in text
                    and ("could not find" in text or "does not exist" in text)
                )
                if not unseen or pause is None:
                    raise
                self.log(f"endpoint config {config_name} not visible yet; retrying in {pause:.0f}s")
                self.sleep(pause)

    def _current_variant(self, state: EndpointState) -> dict[str, Any]:
        for variant in state.description.get("ProductionVariants", []):
            if variant.get("VariantName") == VARIANT_NAME:
                return dict(variant)
        return {}

    def deploy(
        self,
        package_arn: str,
        *,
        explicit: bool = False,
        reason: str = "",
        rollback_of: int | None = None,
        allow_signature_change: bool = False,
    ) -> Result:
        """Start deploying an approved package (or skip it, saying why). Returns at once.

        `explicit` (by hand, and --rollback) lets a person deploy any approved version, older ones
        included; events only ever move the endpoint forward. A version whose input signature breaks
        the serving version's callers is refused (an event: Skipped, recorded on the endpoint's tags;
        by hand: DeployError naming the flag) unless `allow_signature_change`, or, for an approval
        event, the approval allowed it.
        """
        package = self.describe_package(package_arn)
        group = package.get("ModelPackageGroupName")
        if group != self.config.group:
            return Result(SKIPPED, f"package {package_arn} is in group {group!r}, not {self.config.group!r}")
        status = package.get("ModelApprovalStatus")
        version = int(package["ModelPackageVersion"])
        if explicit:
            try:
                lifecycle.require_deployable(version, str(status))
            except lifecycle.LifecycleError as exc:
                raise DeployError(str(exc)) from None
        elif status != APPROVED:
            return Result(
                SKIPPED, lifecycle.on_approval(lifecycle.EndpointView(), version, str(status)).reason, version
            )
        containers = package.get("InferenceSpecification", {}).get("Containers", [])
        if not containers or not containers[0].get("ModelDataUrl") or not containers[0].get("Image"):
            raise DeployError(f"package {package_arn} has no container image and model data to deploy")
        container = containers[0]
        version, name = self._names(package, container)
        state = self.endpoint_state()
        if state.tags.get(TAG_STATUS) == IN_PROGRESS and state.status not in (*BUSY_STATES, "Absent"):
            # The recorded deployment has not been verified (its endpoint event may have gone to the
            # dead-letter queue, or its invocation died before UpdateEndpoint): settle it first, so a
            # stale InProgress tag never blocks this deployment.
            self.reconcile()
            state = self.endpoint_state()
        serving = state.version_tag(TAG_SERVING)
        view = self.view(state)

        if state.status == "Failed":
            reason_text = state.description.get("FailureReason", "no reason given")
            raise DeployError(
                f"endpoint {state.name} is Failed ({reason_text}); only deleting it is possible: "
                "run `mlops --target aws teardown` (or `python workloads/serve/deploy.py --teardown`), "
                "then deploy again"
            )
        if state.tags.get(TAG_STATUS) == IN_PROGRESS and state.tags.get(TAG_TARGET_CONFIG) == name:
            return Result(SKIPPED, f"version {version} is already being deployed", version, name)
        if state.status != "Absent" and state.config_name == name:
            return Result(SKIPPED, f"version {version} is already deployed", version, name, serving)
        check = signatures.check(
            self.sm, self.s3, package, serving, allow=allow_signature_change, approval=not explicit
        )
        if explicit:
            # A person may deploy any approved version, older ones included, but not over a running one.
            hint = lifecycle.allow_hint(
                "deploy --rollback" if rollback_of is not None else f"deploy {version}"
            )
            try:
                lifecycle.on_deploy_request(view, version, str(status), signature=check, hint=hint)
            except lifecycle.EndpointBusyError:
                raise DeployError(
                    f"endpoint {state.name} is {state.status}"
                    + (f" (deploying version {view.deploying})" if view.deploying is not None else "")
                    + "; wait for it to finish before deploying again"
                ) from None
            except lifecycle.SignatureChangeError as exc:
                raise DeployError(str(exc)) from None
        else:
            decision = lifecycle.on_approval(view, version, signature=check)
            prefix = f"endpoint is {state.status}; " if view.busy or view.deploying is not None else ""
            if decision.action == lifecycle.QUEUE:
                self._set_tags(state, {TAG_PENDING: version})
            if decision.action == lifecycle.REFUSE:
                # Kept on the endpoint (the AWS deployer keeps no history): `mlops status` shows it.
                # The changes only: a tag holds 256 characters; the whole reason is in the result and log.
                self._set_tags(state, {TAG_REFUSED: version, TAG_REFUSAL: "; ".join(check.changes)})
                self.log(f"approval of version {version} refused: {decision.reason}")
            if decision.action != lifecycle.DEPLOY:
                return Result(SKIPPED, prefix + decision.reason, version)

        current = self._current_variant(state)
        # Keep what autoscaling has chosen: the new fleet starts at the live instance count.
        count = int(current.get("DesiredInstanceCount") or self.config.initial_instance_count)
        self._create_model(name, version, container)
        self._create_endpoint_config(name, version, count)
        started = utcnow()
        message = reason or f"deploying version {version}"
        if check.note():
            message = f"{message}; {check.note()}"
        refused = state.version_tag(TAG_REFUSED)
        state_tags: dict[str, str | int | None] = {
            **({TAG_REFUSED: "", TAG_REFUSAL: ""} if refused is not None and refused <= version else {}),
            TAG_TARGET: version,
            TAG_TARGET_CONFIG: name,
            TAG_STATUS: IN_PROGRESS,
            TAG_FROM: serving if serving is not None else "",
            TAG_STARTED: started,
            TAG_FINISHED: "",
            TAG_MESSAGE: message,
            TAG_PENDING: "",
            TAG_ACCEPTED: "",
            TAG_ROLLBACK_OF: rollback_of if rollback_of is not None else "",
        }
        if state.status == "Absent":
            tags = [
                {"Key": TAG_MANAGED_BY, "Value": MANAGED_BY},
                {"Key": TAG_ENDPOINT, "Value": self.config.endpoint},
            ]
            tags += [
                {"Key": k, "Value": tag_value(str(v if v is not None else ""))} for k, v in state_tags.items()
            ]
            tags = [t for t in tags if t["Key"] != TAG_ACCEPTED]
            tags.append({"Key": TAG_ACCEPTED, "Value": name})
            self._create_endpoint(name, tags)
            self.log(f"creating endpoint {self.config.endpoint} with version {version} ({name})")
        else:
            # Refused before anything changes when the fleet cannot shift LINEAR (fewer than 2).
            deployment_config = self.config.deployment_config(count)
            # Before the tags: if this fails, a retry of the event starts the deployment over.
            self._point_fleet_alarms(blue=str(state.config_name), green=name)
            self._prepare_autoscaling_for(state)
            # Tags first: a retried event then sees this deployment as started, not as a new one.
            self._set_tags(state, state_tags)
            try:
                self.sm.update_endpoint(
                    EndpointName=self.config.endpoint,
                    EndpointConfigName=name,
                    RetainAllVariantProperties=True,
                    # Instance count and weight stay as autoscaling left them; data capture follows the config.
                    ExcludeRetainedVariantProperties=[{"VariantPropertyType": "DataCaptureConfig"}],
                    DeploymentConfig=deployment_config,
                )
            except Exception as exc:
                failed = f"UpdateEndpoint for version {version} failed: {_message(exc)}"
                # TAG_TARGET_CONFIG cleared so that a retry of the same event starts it again.
                self._set_tags(
                    state,
                    {TAG_STATUS: FAILED, TAG_MESSAGE: failed, TAG_TARGET_CONFIG: "", TAG_FINISHED: utcnow()},
                )
                raise
            # Accepted: from here on an endpoint back on the old config means SageMaker rolled back.
            self._set_tags(state, {TAG_ACCEPTED: name})
            step = deployment_config["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]["LinearStepSize"]
            self.log(
                f"updating endpoint {self.config.endpoint} from version {serving} to {version} ({name}): "
                f"LINEAR {step['Value']} of {count} instances every {self.config.traffic_wait_seconds}s"
            )
        return Result(IN_PROGRESS, message, version, name, serving, started)

    def _point_fleet_alarms(self, *, blue: str, green: str) -> None:
        """Point the rollback alarms that compare the fleets (fleet_alarms: the 4xx comparison) at this
        deployment's blue and green endpoint configs, keeping the rest as the stack declared it, and
        start them at OK: PutMetricAlarm leaves the state of an updated alarm as it was, and an ALARM
        left by the last deployment's fleets must not roll this one back."""
        names = list(self.config.rollback_alarm_names)
        if not names:
            return
        found = self.cw.describe_alarms(AlarmNames=names, AlarmTypes=["MetricAlarm"]).get("MetricAlarms", [])
        for alarm in found:
            queries = alarm.get("Metrics") or []
            if not fleet_alarms.is_fleet_aware(queries):
                continue
            kept = {k: alarm[k] for k in fleet_alarms.ALARM_FIELDS if alarm.get(k) is not None}
            self.cw.put_metric_alarm(**kept, Metrics=fleet_alarms.retarget(queries, blue, green))
            self.cw.set_alarm_state(
                AlarmName=alarm["AlarmName"],
                StateValue="OK",
                StateReason=f"pointed at blue {blue} and green {green} for this deployment",
            )
            self.log(f"alarm {alarm['AlarmName']} compares green {green} with blue {blue}")

    # -- verifying the outcome -------------------------------------------------------------------

    def _report_failure(self, version: int | None, message: str) -> None:
        if self.in_lambda:
            print(emf_line(self.config.endpoint, version, message), flush=True)
        else:
            self.cw.put_metric_data(
                Namespace=METRIC_NAMESPACE,
                MetricData=[
                    {
                        "MetricName": METRIC_FAILED,
                        "Dimensions": [{"Name": "Endpoint", "Value": self.config.endpoint}],
                        "Value": 1.0,
                        "Unit": "Count",
                    }
                ],
            )

    def recorded(self, state: EndpointState) -> Result:
        """The last deployment as the endpoint's tags record it."""
        return Result(
            state.tags.get(TAG_STATUS) or SKIPPED,
            state.tags.get(TAG_MESSAGE, ""),
            state.version_tag(TAG_TARGET),
            state.tags.get(TAG_TARGET_CONFIG) or None,
            state.version_tag(TAG_FROM),
            state.tags.get(TAG_STARTED) or None,
            state.tags.get(TAG_FINISHED) or None,
        )

    def reconcile(self) -> Result:
        """Verify the last deployment's outcome, then tidy up; safe to run any number of times."""
        state = self.endpoint_state()
        if state.status == "Absent":
            return Result(SKIPPED, f"endpoint {state.name} does not exist")
        if state.status in BUSY_STATES:
            result = self.recorded(state)
            result.message = f"endpoint is {state.status}"
            return result
        recorded = self.recorded(state)
        if recorded.status == IN_PROGRESS:
            target_config = state.tags.get(TAG_TARGET_CONFIG)
            finished = utcnow()
            if state.status == "InService" and state.config_name == target_config:
                message = f"version {recorded.version} serving on {target_config}"
                self._set_tags(
                    state,
                    {
                        TAG_STATUS: SUCCEEDED,
                        TAG_SERVING: recorded.version,
                        **self._history_tags(state, recorded.version, succeeded=True),
                        TAG_FINISHED: finished,
                        TAG_MESSAGE: message,
                    },
                )
                self.log(f"deployment of version {recorded.version} succeeded")
            elif state.status == "InService" and not self._update_accepted(state, target_config):
                # The deployment's tags are written before its UpdateEndpoint: an event handled in
                # between sees the old config live. That is not a rollback; the update is still coming.
                started_at = _parse_time(state.tags.get(TAG_STARTED, ""))
                if started_at is None or time.time() - started_at < UNACCEPTED_AFTER_SECONDS:
                    result = self.recorded(state)
                    result.message = f"deployment of version {recorded.version} is being started"
                    return result
                message = (
                    f"deployment of version {recorded.version} failed: its UpdateEndpoint was never "
                    f"accepted within {UNACCEPTED_AFTER_SECONDS}s; {state.config_name} still serves"
                )
                self._set_tags(
                    state,
                    {
                        TAG_STATUS: FAILED,
                        TAG_FINISHED: finished,
                        TAG_MESSAGE: message,
                        **self._history_tags(state, recorded.version, succeeded=False),
                    },
                )
                self._report_failure(recorded.version, message)
                self.log(message)
            else:
                status = ROLLED_BACK if state.status == "InService" else FAILED
                why = state.description.get("FailureReason") or (
                    f"SageMaker kept {state.config_name}"
                    if status == ROLLED_BACK
                    else f"endpoint is {state.status}"
                )
                outcome = "rolled back" if status == ROLLED_BACK else "failed"
                message = f"deployment of version {recorded.version} {outcome}: {why}"
                self._set_tags(
                    state,
                    {
                        TAG_STATUS: status,
                        TAG_FINISHED: finished,
                        TAG_MESSAGE: message,
                        **self._history_tags(state, recorded.version, succeeded=False),
                    },
                )
                self._report_failure(recorded.version, message)
                self.log(message)
            recorded = self.recorded(state)
        if state.status == "InService":
            if state.version_tag(TAG_SERVING) is not None:
                self._register_autoscaling_reporting(state)
            self.cleanup()
            pending = state.version_tag(TAG_PENDING)
            if pending is not None:
                self._set_tags(state, {TAG_PENDING: ""})
                decision = lifecycle.on_approval(self.view(state), pending)
                if decision.action == lifecycle.DEPLOY:
                    started = self._start_pending(pending)
                    if started is not None:
                        return started
                else:
                    self.log(f"queued version {pending} not deployed: {decision.reason}")
        return recorded

    def view(self, state: EndpointState) -> lifecycle.EndpointView:
        """The endpoint as the shared lifecycle rules see it, read from its tags."""
        in_progress = state.tags.get(TAG_STATUS) == IN_PROGRESS
        return lifecycle.EndpointView(
            serving=state.version_tag(TAG_SERVING),
            deploying=state.version_tag(TAG_TARGET) if in_progress else None,
            pending=state.version_tag(TAG_PENDING),
            failed=frozenset(lifecycle.parse_versions(state.tags.get(TAG_FAILED, ""))),
            served=tuple(lifecycle.parse_versions(state.tags.get(TAG_SERVED, ""))),
            busy=state.status in BUSY_STATES,
        )

    def _history_tags(self, state: EndpointState, version: int | None, *, succeeded: bool) -> dict[str, str]:
        if version is None:
            return {}
        after = lifecycle.after_outcome(
            self.view(state), version, succeeded, rolled_back_from=state.version_tag(TAG_ROLLBACK_OF)
        )
        return {
            TAG_SERVED: lifecycle.format_versions(after.served),
            TAG_FAILED: lifecycle.format_versions(sorted(after.failed)),
        }

    def _update_accepted(self, state: EndpointState, target_config: str | None) -> bool:
        """Whether SageMaker took the deployment's UpdateEndpoint and the endpoint shows it: the
        accepted tag (written once the call returned) names the target, and the endpoint has changed
        since the deployment started. Right after the call DescribeEndpoint may still show the old,
        InService endpoint (eventual consistency); that is not a rollback either."""
        if not target_config or state.tags.get(TAG_ACCEPTED) != target_config:
            return False
        started = _parse_time(state.tags.get(TAG_STARTED, ""))
        modified = state.description.get("LastModifiedTime")
        if started is None or not isinstance(modified, datetime):
            return True
        return modified.timestamp() >= started  # TAG_STARTED is truncated to whole seconds

    def _register_autoscaling_reporting(self, state: EndpointState) -> None:
        """Register autoscaling; a failure is reported (metric, tag, log), never left to stop cleanup
        and queued deployments."""
        try:
            self.register_autoscaling()
        except Exception as exc:
            message = f"autoscaling of {self._resource_id} not registered: {_message(exc)}"
            self.log(message)
            self._report_failure(state.version_tag(TAG_SERVING), message)
            self._set_tags(state, {TAG_AUTOSCALING_ERROR: message})
            return
        if state.tags.get(TAG_AUTOSCALING_ERROR):
            self._set_tags(state, {TAG_AUTOSCALING_ERROR: ""})

    def _start_pending(self, version: int) -> Result | None:
        for package in self.approved_packages():
            if int(package["ModelPackageVersion"]) == version:
                return self.deploy(package["ModelPackageArn"], reason=f"deploying queued version {version}")
        self.log(f"queued version {version} is no longer approved; not deployed")
        return None

    # -- registry --------------------------------------------------------------------------------

    def approved_packages(self) -> list[dict[str, Any]]:
        """Approved packages of the group, newest version first."""
        return self.model_packages(APPROVED)

    def rollback(self, *, allow_signature_change: bool = False) -> Result:
        """Redeploy the version that served before the one serving now (lifecycle.rollback_target);
        a breaking signature change back needs `allow_signature_change`, as any deployment does."""
        state = self.endpoint_state()
        if state.status == "Absent":
            raise DeployError(f"endpoint {self.config.endpoint} does not exist; nothing to roll back")
        approved = {int(p["ModelPackageVersion"]): p for p in self.approved_packages()}
        try:
            version = lifecycle.rollback_target(self.view(state), approved)
        except lifecycle.LifecycleError as exc:
            raise DeployError(f"endpoint {self.config.endpoint}: {exc}") from None
        serving = state.version_tag(TAG_SERVING)
        return self.deploy(
            approved[version]["ModelPackageArn"],
            explicit=True,
            reason=f"rollback from version {serving} to {version}",
            rollback_of=serving,
            allow_signature_change=allow_signature_change,
        )

    # -- by hand ---------------------------------------------------------------------------------

    def wait(
        self,
        progress: Progress | None = None,
        *,
        poll_seconds: float = 30,
        timeout_seconds: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Result:
        """Poll until the endpoint settles, reporting traffic shares, then reconcile."""
        limit = (
            timeout_seconds
            if timeout_seconds is not None
            else self.config.max_execution_timeout_seconds + 1800
        )
        deadline = time.monotonic() + limit
        while True:
            state = self.endpoint_state()
            if state.status not in BUSY_STATES:
                return self.reconcile()
            if progress:
                progress(self.describe_progress(state), None)
            if time.monotonic() > deadline:
                raise DeployError(f"endpoint {state.name} still {state.status} after {limit:.0f}s")
            sleep(poll_seconds)

    @staticmethod
    def describe_progress(state: EndpointState) -> str:
        parts = [f"{state.name} {state.status}"]
        for v in state.description.get("ProductionVariants", []):
            parts.append(
                f"blue {v.get('VariantName')} weight {v.get('CurrentWeight')} x{v.get('CurrentInstanceCount')}"
            )
        pending = state.description.get("PendingDeploymentSummary") or {}
        for v in pending.get("ProductionVariants", []):
            steps = [s.get("StatusMessage") or s.get("Status") for s in v.get("VariantStatus", [])]
            parts.append(
                f"green {pending.get('EndpointConfigName')} weight {v.get('CurrentWeight')} "
                f"x{v.get('CurrentInstanceCount')} {'; '.join(str(s) for s in steps)}"
            )
        return " | ".join(parts)
