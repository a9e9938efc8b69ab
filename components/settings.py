"""The stack configuration: the settings table's stack rows, read from the stack file and validated.

Every key, its type, default and range are rows of workloads/serve/deployer/settings_table.py (the
README config table is generated from them). Read with `PlatformSettings.load(pulumi.Config(), stack)`.
A wrong value fails `pulumi up` before anything is created, with a message naming the key. What is
here besides the table: the derived names, the botocore enum checks and the rules between settings.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any, TypeVar, cast

import pulumi

from workloads.serve.deployer import settings_table

# SageMaker names: letters, digits, hyphens; ARNs lower-case them, so IAM scoping needs lower case.
_NAME = re.compile(r"^[a-z][a-z0-9-]{1,30}[a-z0-9]$")
_CODECOMMIT_NAME = re.compile(r"^[\w.-]{1,100}$")
_OWNER_REPO = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_KIND_NAMES = {int: "int", float: "float", bool: "bool", str: "str"}
Args = TypeVar("Args", bound=Mapping[str, object])


class SettingsError(ValueError):
    """A config key has a value the platform cannot deploy."""


class PlatformSettings(settings_table.Aws):
    """One stack's settings: every stack row of the table (attributes named as the rows), defaults
    for the keys the stack file leaves out."""

    # Derived names: fixed so the seed's commands (`aws codebuild start-build --project-name ...`) and
    # the deployer's naming (`<endpoint>-v<version>-<hash>`, at most 63 characters) keep working.
    @property
    def repo_name(self) -> str:
        return self.source_repo_name or f"{self.name_prefix}-repo"

    @property
    def group_name(self) -> str:
        return f"{self.name_prefix}-models"

    @property
    def endpoint_name(self) -> str:
        return f"{self.name_prefix}-endpoint"

    @property
    def project_name(self) -> str:
        return f"{self.name_prefix}-train"

    @property
    def pipeline_name(self) -> str:
        return f"{self.name_prefix}-pipeline"

    @property
    def ecr_repository_name(self) -> str:
        return f"{self.name_prefix}-model"

    @property
    def table_name(self) -> str:
        return f"{self.name_prefix}-requests"

    @staticmethod
    def config_key(field_name: str) -> str:
        """The stack-file key of a setting: snake_case -> camelCase (alarm_5xx_threshold -> alarm5xxThreshold)."""
        return settings_table.config_key(field_name)

    @classmethod
    def load(cls, config: pulumi.Config, stack: str) -> PlatformSettings:
        values: dict[str, Any] = {}
        for row in cls.rows():
            try:
                if row.kind is int:
                    value: Any = config.get_int(row.key)
                elif row.kind is float:
                    value = config.get_float(row.key)
                elif row.kind is bool:
                    value = config.get_bool(row.key)
                else:
                    value = config.get(row.key)
            except pulumi.ConfigTypeError as exc:
                raise SettingsError(f"config {config.name}:{row.key}: {exc}") from None
            if value is not None:
                values[row.name] = value
        return cls._validated(values, stack)

    @classmethod
    def load_values(cls, config: Mapping[str, str], stack: str, namespace: str = "mlops") -> PlatformSettings:
        """The same from a stack file's `config:` map as the engine hands it over (all strings)."""
        values: dict[str, Any] = {}
        for row in cls.rows():
            raw = config.get(f"{namespace}:{row.key}")
            if raw is None:
                continue
            try:
                values[row.name] = row.parse(raw, row.kind)
            except ValueError:
                raise SettingsError(
                    f"config {namespace}:{row.key}: {raw!r} is not {_KIND_NAMES.get(row.kind, row.kind.__name__)}"
                ) from None
        return cls._validated(values, stack)

    @classmethod
    def _validated(cls, values: dict[str, Any], stack: str) -> PlatformSettings:
        values.setdefault("name_prefix", f"mlops-{stack}")
        settings = cls(**values)
        settings.validate()
        return settings

    def args_for(self, component: str) -> dict[str, Any]:
        """The stack's values of the settings the table sends to `component`'s Args (row.args)."""
        return {
            field: getattr(self, row.name)
            for row in settings_table.component_rows(component)
            if (field := row.arg(component)) is not None
        }

    def feed(self, component: str, args: Args) -> Args:
        """`args` (what the program wires) with the stack's settings for `component` added."""
        return cast(Args, {**self.args_for(component), **args})

    def validate(self) -> None:
        problems: list[str] = []
        if not _NAME.match(self.name_prefix):
            problems.append(
                f"namePrefix {self.name_prefix!r} must be 3-32 lower-case letters, digits or hyphens, "
                "starting with a letter"
            )
        for row in self.rows():
            value = getattr(self, row.name)
            problem = row.stack_problem(value)
            if problem is not None:
                shown = repr(value) if isinstance(value, str) else value
                problems.append(f"{row.key} {shown} {problem}")
            elif row.enum is not None and value not in _enum(*row.enum):
                service, shape = row.enum
                problems.append(f"{row.key} {value!r} is not a {service} {shape} (botocore's service model)")
        if self.source_repo_kind == "codecommit" and not _CODECOMMIT_NAME.match(self.repo_name):
            problems.append(
                f"sourceRepoName {self.source_repo_name!r} is not a CodeCommit repository name "
                "(letters, digits, '.', '_', '-'; at most 100; empty = <namePrefix>-repo)"
            )
        elif (
            self.source_repo_kind in settings_table.Aws.source_repo_kind.choices
            and self.source_repo_kind != "codecommit"
            and not _OWNER_REPO.match(self.source_repo_name)
        ):
            problems.append(
                f"sourceRepoName must be the existing {self.source_repo_kind} repository as owner/repo "
                f"(got {self.source_repo_name!r}); set it with "
                "`pulumi config set mlops:sourceRepoName <owner>/<repo>`"
            )
        if self.autoscaling_max_capacity and not (
            1 <= self.autoscaling_min_capacity <= self.autoscaling_max_capacity
        ):
            problems.append(
                f"autoscaling bounds {self.autoscaling_min_capacity}..{self.autoscaling_max_capacity} "
                "need 1 <= autoscalingMinCapacity <= autoscalingMaxCapacity (or autoscalingMaxCapacity 0 = off)"
            )
        problems.extend(self._linear_shift_problems())
        if problems:
            raise SettingsError("invalid stack configuration: " + "; ".join(problems))

    @property
    def smallest_fleet(self) -> int:
        """The fewest instances the endpoint can have when a deployment starts."""
        if self.autoscaling_max_capacity:
            return min(self.endpoint_initial_instance_count, self.autoscaling_min_capacity)
        return self.endpoint_initial_instance_count

    def _linear_shift_problems(self) -> list[str]:
        # SageMaker LINEAR blue/green: each step moves 10-50% of the variant's instances, and whole
        # instances (the deployer sends the step as an instance count). So the smallest fleet the
        # endpoint can have must be at least two, and trafficStepPercent of it at least one instance.
        fleet = self.smallest_fleet
        if fleet < 2:
            return [
                f"endpointInitialInstanceCount/autoscalingMinCapacity allow a fleet of {fleet} instance; "
                "LINEAR blue/green shifts 10-50% of the fleet per step, one whole instance at least, "
                "so it needs 2 or more"
            ]
        if self.traffic_step_percent > 0 and fleet * self.traffic_step_percent // 100 < 1:
            return [
                f"trafficStepPercent {self.traffic_step_percent} of {fleet} instances is less than one "
                f"instance; raise it to {-(-100 // fleet)} or keep at least "
                f"{-(-100 // self.traffic_step_percent)} instances"
            ]
        return []


@functools.cache
def _enum(service: str, shape: str) -> frozenset[str]:
    """The values botocore's service model allows for a shape (so a typo fails at `pulumi preview`)."""
    import botocore.session

    return frozenset(botocore.session.get_session().get_service_model(service).shape_for(shape).enum)


def settings_environment(
    args: Mapping[str, Any], component: str, runtime: str
) -> dict[str, pulumi.Input[str]]:
    """The environment variables `runtime` reads its settings from (the table's rows with a `runtime`
    env), each the text of `component`'s Args field for it, or of the table's default."""
    environment: dict[str, pulumi.Input[str]] = {}
    for row in settings_table.env_rows(runtime):
        field = row.arg(component)
        if field is None:
            raise ValueError(
                f"settings_table: {row.key} is read by the {runtime} but goes to no {component} arg"
            )
        value = args.get(field)
        environment[row.env[runtime]] = pulumi.Output.from_input(
            row.default if value is None else value
        ).apply(settings_table.Setting.text)
    return environment
