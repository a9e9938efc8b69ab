"""Where the local platform keeps its state, and the settings it runs with.

Everything lives under one directory (MLOPS_HOME, default ./.mlops): the SQLite database, the bare git
remote, model artifacts, build logs and the daemon's pid/port file. `mlops local reset` deletes it.
Settings come from environment variables so `make up` and tests can change them without a file. Which
variables, their types, defaults and ranges are the settings table's (the Shared and Local rows of
workloads/serve/deployer/settings_table.py, each with its MLOPS_* name and local default).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from workloads.serve.deployer import lifecycle, settings_table

DEFAULT_GROUP = settings_table.Local.group.default


def default_home(start: Path | None = None) -> Path:
    """`.mlops` of the project the command runs in, found as git finds its repository: the nearest
    directory from `start` (default: the working directory) up that has a `.mlops`, else the nearest
    project root (`.git` or `Pulumi.yaml`), else `start` itself. So `mlops status` from a
    subdirectory shows the platform instead of an empty one made there."""
    here = (start or Path.cwd()).resolve()
    folders = (here, *here.parents)
    for folder in folders:
        if (folder / ".mlops").is_dir():
            return folder / ".mlops"
    for folder in folders:
        if (folder / ".git").exists() or (folder / "Pulumi.yaml").is_file():
            return folder / ".mlops"
    return here / ".mlops"


class LocalSettings(settings_table.Local):
    """The local platform's settings: the table's Shared rows (with their local type and default) and
    its Local rows."""

    api_host: ClassVar[str] = "127.0.0.1"

    @property
    def db_path(self) -> Path:
        return self.home / "platform.db"

    @property
    def repo_path(self) -> Path:
        return self.home / "repo.git"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def builds_dir(self) -> Path:
        return self.home / "builds"

    def linear_shares(self) -> list[float]:
        """The new version's traffic share after each LINEAR step: whole instances of the fleet, by
        the rule the AWS deployer sends SageMaker (lifecycle.linear_step)."""
        return lifecycle.linear_shares(self.endpoint_initial_instance_count, self.traffic_step_percent)

    def planned_steps(self, from_version: int | None) -> int:
        """LINEAR steps a shift from `from_version` takes with these settings (the deployer's loop); a
        first version takes all traffic at once."""
        return 1 if from_version is None else len(self.linear_shares())

    def instances_at(self, share: float) -> int:
        """A variant's whole instances of the simulated fleet at `share` (0..1) of the traffic, as AWS
        counts them: linear_shares moves whole instances, so a share is instances / fleet (exact below
        100 instances; the router's weights are whole percents)."""
        return round(share * self.endpoint_initial_instance_count)

    @classmethod
    def from_env(cls, home: Path | str | None = None, env: Mapping[str, str] | None = None) -> LocalSettings:
        env = os.environ if env is None else env
        home_row = settings_table.Local.home
        values = {
            # An int may be written as a float ("8000.0"), as before the table.
            row.name: row.from_env(env, settings_table.LOCAL, lenient_ints=True)
            for row in cls.rows()
            if row is not home_row
        }
        root = Path(home or env.get(home_row.env[settings_table.LOCAL]) or default_home()).resolve()
        settings = cls(home=root, **values)
        try:
            settings.linear_shares()
        except lifecycle.LifecycleError as exc:
            fleet = settings_table.Shared.endpoint_initial_instance_count.env[settings_table.LOCAL]
            raise ValueError(f"{exc} ({fleet})") from None
        return settings

    def to_env(self) -> dict[str, str]:
        """The environment from_env() turns back into these settings (how the daemon inherits them)."""
        values = {row: getattr(self, row.name) for row in self.rows()}
        return {
            row.env[settings_table.LOCAL]: repr(value) if isinstance(value, float) else str(value)
            for row, value in values.items()
        }
