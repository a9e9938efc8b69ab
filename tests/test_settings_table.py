"""Each setting declared once (issue 9): the settings table and everything that follows from it.

workloads/serve/deployer/settings_table.py is the one place a setting is declared. These tests show
that the stack config, the environments Pulumi builds, the deployer's parser, the local settings and
the generated docs all come from it, that the component Args which stay declared match it, and that one
new row reaches every one of them without another edit.
"""

from __future__ import annotations

import ast
import dataclasses
import shutil
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest
from pulumi_mocks import STACKS, ProgramRun, program_run, run_program

from components.artifact_store import ArtifactStoreArgs
from components.blue_green_endpoint import BlueGreenEndpointArgs
from components.build_pipeline import BuildPipelineArgs
from components.inference_api import InferenceApiArgs
from components.ml_repo import REPO_KINDS, MlRepoArgs, RepoKind
from components.settings import PlatformSettings, SettingsError
from mlops.local.settings import LocalSettings
from tools import settings_docs
from workloads.serve.api_lambda import handler as api_handler
from workloads.serve.deployer import settings_table as st
from workloads.serve.deployer.config import DeployerConfig
from workloads.serve.deployer.state import DeployError
from workloads.train import steps

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
REPO_ROOT = Path(__file__).resolve().parents[1]
COMPONENT_ARGS: dict[str, Any] = {
    "MlRepo": MlRepoArgs,
    "ArtifactStore": ArtifactStoreArgs,
    "BuildPipeline": BuildPipelineArgs,
    "BlueGreenEndpoint": BlueGreenEndpointArgs,
    "InferenceApi": InferenceApiArgs,
}
COMPONENT_FILES = {
    "MlRepo": "ml_repo.py",
    "ArtifactStore": "artifact_store.py",
    "BuildPipeline": "build_pipeline.py",
    "BlueGreenEndpoint": "blue_green_endpoint.py",
    "InferenceApi": "inference_api.py",
}
# Args fields that are not stack settings: what the program wires (names, other components, derived
# values such as the force_destroy consequences) and what only another Pulumi program would set.
NOT_SETTINGS = {
    "MlRepo": {"name"},
    "ArtifactStore": {"ecr_repository_name", "moved_from"},
    "BuildPipeline": {"project_name", "pipeline_name", "repo", "artifacts", "model_package_group_name"},
    "BlueGreenEndpoint": {
        "endpoint_name",
        "model_package_group_name",
        "artifacts",
        "deployer_function_name",
        "code_dir",
        "delete_model_packages_on_destroy",
    },
    "InferenceApi": {
        "endpoint_name",
        "api_name",
        "stage_name",
        "function_name",
        "table_name",
        "deletion_protection",
        "code_dir",
    },
}
# Which component builds which runtime's environment.
ENV_OWNERS = {st.DEPLOYER: "BlueGreenEndpoint", st.API: "InferenceApi", st.BUILD: "BuildPipeline"}


@pytest.fixture(params=STACKS)
def run(request: pytest.FixtureRequest) -> ProgramRun:
    return program_run(request.param)


def _variables(run: ProgramRun, runtime: str) -> dict[str, str]:
    if runtime == st.BUILD:
        project = run.one("aws:codebuild/project:Project", "-project")
        return {v["name"]: v["value"] for v in project.inputs["environment"]["environmentVariables"]}
    suffix = "-deployer" if runtime == st.DEPLOYER else "-function"
    function = run.one("aws:lambda/function:Function", suffix)
    return dict(function.inputs["environment"]["variables"])


# --- the table itself -----------------------------------------------------------------------------


def test_every_row_is_whole_and_its_defaults_are_in_its_own_range() -> None:
    rows = st.all_rows()
    assert len({row.name for row in rows}) == len(rows)
    assert len({row.key for row in rows if row.stack}) == len([row for row in rows if row.stack])
    for runtime in (st.DEPLOYER, st.API, st.BUILD, st.LOCAL):
        names = [row.env[runtime] for row in st.env_rows(runtime)]
        wired = [w.env for w in st.WIRED if w.runtime == runtime]
        assert len(set(names + wired)) == len(names + wired), f"{runtime} reads a variable twice"
    for row in rows:
        assert row.meaning and "\n" not in row.meaning, row.name
        assert isinstance(row.default, row.kind), row.name
        assert isinstance(row.local_default, row.local_kind), row.name
        if row.stack:
            assert row.stack_problem(row.default) is None, (
                f"{row.key}'s default {row.default!r} is out of range"
            )
        if st.LOCAL in row.env:
            assert row.problem(row.local_default) is None, f"{row.env[st.LOCAL]}'s default is out of range"
        # A row read by a runtime Pulumi configures must reach that runtime's component.
        for runtime, component in ENV_OWNERS.items():
            if runtime in row.env:
                assert row.arg(component), (
                    f"{row.key} is read by the {runtime} but goes to no {component} arg"
                )
    # The groups are where the rows are read: Shared and Local rows have a local variable, Aws rows none.
    assert all(st.LOCAL in row.env for row in st.Local.rows())
    assert all(st.LOCAL not in row.env for row in st.Aws.rows() if row not in st.Shared.rows())
    # The table's choices of repository kind are MlRepo's (its Literal type spells them for mypy).
    assert set(REPO_KINDS) == set(typing.get_args(RepoKind))


def test_settings_objects_are_frozen_values_that_refuse_unknown_names() -> None:
    a = PlatformSettings(name_prefix="mlops-dev", source_repo_name="acme/iris")
    assert a == PlatformSettings(name_prefix="mlops-dev", source_repo_name="acme/iris")
    assert hash(a) == hash(PlatformSettings(name_prefix="mlops-dev", source_repo_name="acme/iris"))
    assert a != a.replace(traffic_step_percent=25)
    assert a.replace(traffic_step_percent=25).traffic_step_percent == 25
    name = "traffic_step_percent"
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(a, name, 10)
    with pytest.raises(TypeError, match=r"PlatformSettings\(\) has no setting\(s\) trafic_step_percent"):
        PlatformSettings(name_prefix="mlops-dev", trafic_step_percent=10)
    with pytest.raises(TypeError, match="missing required argument: 'group'"):
        DeployerConfig(endpoint="e", role_arn="r")
    # A runtime has only the settings it reads: the deployer is not given the usage plan's.
    config = DeployerConfig(group="g", endpoint="e", role_arn="r")
    with pytest.raises(AttributeError, match=r"DeployerConfig does not carry the setting api_quota_limit"):
        _ = config.api_quota_limit
    assert {row.name for row in DeployerConfig.rows()} == {row.name for row in st.env_rows(st.DEPLOYER)}


def test_the_api_lambdas_own_defaults_are_the_tables() -> None:
    # The API Lambda's zip stays handler.py + request_rows.py (its size and cold start are measured);
    # its two defaults are copies, held to the table here.
    assert st.Aws.api_max_body_bytes.default == api_handler.DEFAULT_MAX_BODY_BYTES
    assert st.Shared.record_ttl_days.default == api_handler.DEFAULT_RECORD_TTL_DAYS
    assert {row.env[st.API] for row in st.env_rows(st.API)} == {"MAX_BODY_BYTES", "RECORD_TTL_DAYS"}


# --- the components ------------------------------------------------------------------------------


@pytest.mark.parametrize("component", COMPONENT_ARGS)
def test_every_args_field_that_mirrors_a_setting_is_in_the_table_and_back(component: str) -> None:
    fields = set(COMPONENT_ARGS[component].__annotations__)
    from_table = {row.arg(component) for row in st.component_rows(component)}
    assert from_table - fields == set(), f"the table sends {component} fields its Args does not declare"
    assert fields - from_table - NOT_SETTINGS[component] == set(), (
        f"{component}'s Args fields neither come from the table nor are wired by the program"
    )
    assert fields & from_table & NOT_SETTINGS[component] == set()


@pytest.mark.parametrize("component", COMPONENT_ARGS)
def test_a_components_defaults_are_the_tables(component: str) -> None:
    """Every `args.get("<field>", default)` of a field the table feeds takes its default from the table
    (`Aws.<row>.default`), not a literal that could drift; a bare `.get(field)` only where the table's
    default is empty (none)."""
    rows = {row.arg(component): row for row in st.component_rows(component)}
    tree = ast.parse((REPO_ROOT / "components" / COMPONENT_FILES[component]).read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    checked = 0
    for node in ast.walk(tree):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and node.args[0].value in rows
        ):
            continue
        row = rows[node.args[0].value]
        where = f"components/{COMPONENT_FILES[component]}:{node.lineno} {ast.unparse(node)}"
        fallback = node.args[1] if len(node.args) > 1 else None
        parent = parents.get(node)
        if fallback is None and isinstance(parent, ast.BoolOp) and parent.values[0] is node:
            fallback = parent.values[1]
        if fallback is None or (isinstance(fallback, ast.Constant) and fallback.value is None):
            # None passed on: the component treats it as "none", which is what the table's empty default says.
            assert not row.default, f"{where}: no default, but the table's is {row.default!r}"
        else:
            assert isinstance(fallback, ast.Attribute) and fallback.attr == "default", (
                f"{where}: the default is not the table's ({row.key})"
            )
            assert ast.unparse(fallback.value).endswith(f".{row.name}"), f"{where}: another row's default"
        checked += 1
    assert checked


def test_each_runtime_reads_exactly_the_environment_pulumi_builds(run: ProgramRun) -> None:
    settings = PlatformSettings.load_values(run.config, run.stack)
    for runtime in ENV_OWNERS:
        variables = _variables(run, runtime)
        rows = st.env_rows(runtime)
        wired = {w.env for w in st.WIRED if w.runtime == runtime}
        assert set(variables) == {row.env[runtime] for row in rows} | wired, f"{run.stack}: {runtime}"
        for row in rows:
            assert row.from_env(variables, runtime) == getattr(settings, row.name), (
                f"{run.stack}: {runtime} reads {row.env[runtime]}={variables[row.env[runtime]]!r}, "
                f"the stack's {row.key} is {getattr(settings, row.name)!r}"
            )
    # And each runtime's own parser takes the values as the stack has them: the deployer's every row it
    # carries, the build steps' (workloads/train/steps.py) the instance type, the accuracy floor, the key.
    config = DeployerConfig.from_env(_variables(run, st.DEPLOYER))
    for row in DeployerConfig.rows():
        assert getattr(config, row.name) == getattr(settings, row.name), f"{run.stack}: {row.key}"
    build = steps.TrainingSettings.from_env(_variables(run, st.BUILD))
    assert (build.instance_type, build.min_accuracy, build.kms_key_arn) == (
        settings.training_instance_type,
        settings.quality_gate_min_accuracy,
        settings.kms_key_arn,
    )


# --- the generated docs -----------------------------------------------------------------------------


def test_the_committed_docs_are_what_the_table_generates() -> None:
    stale = settings_docs.stale()
    assert stale == {}, (
        f"{', '.join(stale)}: the settings tables differ from workloads/serve/deployer/settings_table.py; "
        f"run {settings_docs.COMMAND}"
    )


def test_the_docs_show_each_setting_with_its_default_and_variables() -> None:
    readme = settings_docs.stack_table()
    assert (
        "| `trafficWaitSeconds` | integer 0-3600 | `300` (local `2`) | Blue/green LINEAR: wait between steps "
        "while the rollback alarms watch. | deployer `TRAFFIC_WAIT_SECONDS`, local `MLOPS_TRAFFIC_WAIT_SECONDS` |"
    ) in readme
    assert "| `apiQuotaPeriod` | `DAY` \\| `WEEK` \\| `MONTH` | `DAY` |" in readme
    assert "| `qualityGateMinAccuracy` | number (0, 1] | `0.9` |" in readme
    assert "| `alarm4xxMargin` | number in [0, 1) | `0.05` |" in readme
    with pytest.raises(SettingsError, match=r"alarm4xxMargin 1\.0 must be within \[0, 1\)"):
        PlatformSettings.load_values(
            {"mlops:sourceRepoName": "acme/iris", "mlops:alarm4xxMargin": "1"}, "dev"
        )
    assert "| `MLOPS_TRAFFIC_STEP_PERCENT` | integer 10-50 | `50` |" in settings_docs.local_table()
    deployer = settings_docs.env_table(st.DEPLOYER)
    assert "| `TRAFFIC_STEP_PERCENT` | `trafficStepPercent` | `50` |" in deployer
    assert "| `ENDPOINT_NAME` | wired by Pulumi | - |" in deployer


def test_a_stale_table_is_found_and_named(tmp_path: Path) -> None:
    for name in settings_docs.SECTIONS:
        target = tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text((REPO_ROOT / name).read_text())
    readme = tmp_path / "README.md"
    readme.write_text(readme.read_text().replace("| `trafficStepPercent` | integer 10-50 |", "| `x` | y |"))
    assert set(settings_docs.stale(tmp_path)) == {"README.md"}
    readme.write_text(readme.read_text().replace("<!-- /settings:local -->", ""))
    with pytest.raises(SystemExit, match="no <!-- settings:local -->"):
        settings_docs.stale(tmp_path)


# --- one edit adds a setting everywhere ------------------------------------------------------------


@pytest.fixture
def new_row(monkeypatch: pytest.MonkeyPatch) -> st.Setting[int, float]:
    """A setting the deployer and the local platform read, added as one row of the table and nothing else."""
    row = st.Setting(
        int,
        7,
        "A knob the deployer turns.",
        low=1,
        high=9,
        deployer_env="KNOB_TURNS",
        local_env="MLOPS_KNOB_TURNS",
        args=("BlueGreenEndpoint.knob_turns",),
    ).locally(float, 1.5)
    row.__set_name__(st.Shared, "knob_turns")
    monkeypatch.setattr(st.Shared, "knob_turns", row, raising=False)
    return row


def test_one_row_adds_a_setting_everywhere(
    new_row: st.Setting[int, float], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The stack config: parsed, defaulted and range-checked under its key.
    base = {"mlops:sourceRepoName": "acme/iris"}
    assert PlatformSettings.load_values({**base, "mlops:knobTurns": "8"}, "dev").values()["knob_turns"] == 8
    assert PlatformSettings.load_values(base, "dev").values()["knob_turns"] == 7
    with pytest.raises(SettingsError, match=r"knobTurns 10 must be within 1\.\.9"):
        PlatformSettings.load_values({**base, "mlops:knobTurns": "10"}, "dev")
    # The deployer's environment Pulumi builds, and the deployer's parse of it.
    run = run_program("dev", {"mlops:knobTurns": "8"})
    variables = _variables(run, st.DEPLOYER)
    assert variables["KNOB_TURNS"] == "8"
    assert DeployerConfig.from_env(variables).values()["knob_turns"] == 8
    with pytest.raises(DeployError, match=r"^KNOB_TURNS=0 is out of range \[1, 9\]$"):
        DeployerConfig.from_env({**variables, "KNOB_TURNS": "0"})
    # The local platform: its own type and default, from and back to its environment.
    local = LocalSettings.from_env(env={"MLOPS_KNOB_TURNS": "2.5"})
    assert local.values()["knob_turns"] == 2.5
    assert local.to_env()["MLOPS_KNOB_TURNS"] == "2.5"
    assert LocalSettings.from_env(env={}).values()["knob_turns"] == 1.5
    # The docs: the README's stack and local tables and the contracts' deployer table.
    assert "| `knobTurns` | integer 1-9 | `7` (local `1.5`) | A knob the deployer turns. |" in (
        settings_docs.stack_table()
    )
    assert (
        "| `MLOPS_KNOB_TURNS` | number 1-9 | `1.5` | A knob the deployer turns. On AWS: `knobTurns`. |"
        in (settings_docs.local_table())
    )
    assert "| `KNOB_TURNS` | `knobTurns` | `7` | A knob the deployer turns. |" in settings_docs.env_table(
        st.DEPLOYER
    )
    # ... so the committed docs are now stale, and the test above says which command fixes them.
    assert set(settings_docs.stale()) == {"README.md", "docs/contracts.md"}


# --- the local platform -----------------------------------------------------------------------------


def test_the_local_platform_reads_the_rows_with_its_own_types_and_defaults() -> None:
    s = LocalSettings.from_env(env={})
    assert (s.traffic_step_percent, s.traffic_wait_seconds, s.endpoint_initial_instance_count) == (50, 2.0, 2)
    assert (s.record_ttl_days, s.quality_gate_min_accuracy, s.source_branch) == (30.0, 0.9, "main")
    # The steps AWS's deployer would have SageMaker take with the same fleet and percentage.
    assert s.linear_shares() == [0.5, 1.0]
    four = LocalSettings.from_env(env={"MLOPS_INSTANCE_COUNT": "4", "MLOPS_TRAFFIC_STEP_PERCENT": "25"})
    assert four.linear_shares() == [0.25, 0.5, 0.75, 1.0]
    assert LocalSettings.from_env(env={"MLOPS_API_PORT": "8000.0"}).api_port == 8000
    refused = {
        # The table's range (a review found 1 inside it, then refused by the fleet rule).
        "MLOPS_INSTANCE_COUNT": ("1", r"^MLOPS_INSTANCE_COUNT=1 is out of range \[2, 1000\]$"),
        "MLOPS_TRAFFIC_STEP_PERCENT": ("75", r"^MLOPS_TRAFFIC_STEP_PERCENT=75 is out of range \[10, 50\]$"),
        "MLOPS_API_PORT": ("8000.5", r"^MLOPS_API_PORT='8000.5' is not a whole number$"),
        "MLOPS_RECORDS_RETENTION_DAYS": (
            "-1",
            r"^MLOPS_RECORDS_RETENTION_DAYS=-1.0 is out of range \[0, 36500\]$",
        ),
        "MLOPS_HEALTH_INTERVAL_SECONDS": ("0", r"^MLOPS_HEALTH_INTERVAL_SECONDS=0.0 must be > 0$"),
    }
    for name, (value, message) in refused.items():
        with pytest.raises(ValueError, match=message):
            LocalSettings.from_env(env={name: value})


def test_the_deployer_zip_carries_the_table_and_parses_its_environment_with_it(tmp_path: Path) -> None:
    # The Lambda zip is the deployer's folder: the table must be in it and work without the repository.
    folder = Path(st.__file__).parent
    for source in folder.glob("*.py"):
        shutil.copy(source, tmp_path / source.name)
    env = {"MODEL_PACKAGE_GROUP_NAME": "g", "ENDPOINT_NAME": "e", "EXECUTION_ROLE_ARN": "r"}
    probe = (
        "import sys; sys.path.insert(0, '.'); import config, settings_table; "
        f"c = config.DeployerConfig.from_env({{**{env!r}, 'TRAFFIC_STEP_PERCENT': '25'}}); "
        "assert 'workloads' not in sys.modules and config.settings_table is settings_table; "
        "print(c.traffic_step_percent, c.traffic_wait_seconds, c.linear_step(4), c.instance_type)"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert (done.returncode, done.stdout.split()) == (0, ["25", "300", "1", "ml.m5.large"]), done.stderr
