"""The local model registry, with the SageMaker Model Registry's semantics.

Groups hold numbered versions (1, 2, ...); each version has an approval status
(PendingManualApproval -> Approved | Rejected), the approver and a description, its metrics and where
it came from. Rows live in SQLite and artifacts are copied under MLOPS_HOME/models/<group>/<version>/,
so nothing is lost across restarts.

Approving a version also appends an event to the `events` table in the same transaction: that is the
local EventBridge. The deployer consumes events by id and keeps its cursor in the database, so an
approval made while the platform is down is deployed when it comes back, and never twice.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlops.backend import APPROVED, PENDING, REJECTED, ModelVersion, PlatformError
from mlops.local.db import connect, transaction
from workloads.serve.deployer import lifecycle

ARN_PREFIX = "arn:local:sagemaker:local:000000000000:model-package/"
_GROUP_RE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")  # SageMaker's ModelPackageGroupName rule

SCHEMA = """
CREATE TABLE IF NOT EXISTS model_packages (
    grp TEXT NOT NULL,
    version INTEGER NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    metrics TEXT NOT NULL,
    approver TEXT,
    description TEXT,
    source_commit TEXT,
    data_location TEXT,
    artifact_dir TEXT NOT NULL,
    allow_signature_change INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (grp, version)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    kind TEXT NOT NULL,
    grp TEXT NOT NULL,
    version INTEGER NOT NULL,
    status TEXT NOT NULL
);
"""

EVENT_STATE_CHANGE = "ModelPackageStateChange"
_COLUMNS = (
    "grp, version, status, created_at, updated_at, metrics, approver, description, source_commit, "
    "data_location, artifact_dir"
)


def signature_of_metadata(meta: dict[str, Any]) -> dict[str, Any] | None:
    """A version's signature from its metadata.json, as workloads/model_io reads it: an artifact from
    before the signature fields has numeric features (feature_names) and answers classes."""
    names = meta.get("feature_names")
    features = meta.get("features") or (
        [{"name": str(n), "type": "number"} for n in names] if isinstance(names, list) else None
    )
    if not features:
        return None
    labels = meta.get("class_labels") or []
    output = meta.get("output") or ({"kind": "classes", "classes": labels} if labels else {})
    return {
        "task": meta.get("task") or lifecycle.CLASSIFICATION,
        "target": meta.get("target", ""),
        "features": features,
        "output": output,
    }


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def package_arn(group: str, version: int) -> str:
    return f"{ARN_PREFIX}{group}/{version}"


def parse_ref(ref: str | int, default_group: str) -> tuple[str, int]:
    """A version number ("3", 3, "v3") or a model package ARN -> (group, version), by the shared rules."""
    try:
        found = lifecycle.parse_version_ref(str(ref))
    except lifecycle.LifecycleError as exc:
        raise PlatformError(str(exc)) from None
    assert found.version is not None
    return found.group or default_group, found.version


class LocalRegistry:
    def __init__(self, db_path: Path, models_dir: Path) -> None:
        self.db_path = db_path
        self.models_dir = models_dir
        self._conn = connect(db_path, check_same_thread=False)
        self._conn.executescript(SCHEMA)
        columns = {row["name"] for row in self._conn.execute("PRAGMA table_info(model_packages)")}
        if "allow_signature_change" not in columns:  # a database from before the signature gate
            with transaction(self._conn) as conn:
                conn.execute(
                    "ALTER TABLE model_packages ADD COLUMN allow_signature_change INTEGER NOT NULL DEFAULT 0"
                )

    def close(self) -> None:
        self._conn.close()

    @staticmethod
    def _row(row: sqlite3.Row) -> ModelVersion:
        return ModelVersion(
            group=row["grp"],
            version=row["version"],
            arn=package_arn(row["grp"], row["version"]),
            status=row["status"],
            created_at=row["created_at"],
            metrics=json.loads(row["metrics"]),
            approver=row["approver"],
            description=row["description"],
            source_commit=row["source_commit"],
            data_location=row["data_location"],
            signature_change_allowed=bool(row["allow_signature_change"]),
        )

    def metadata(self, group: str, version: int) -> dict[str, Any]:
        """The version's metadata.json ({} when it cannot be read)."""
        try:
            raw = json.loads((self.artifact_dir(group, version) / "metadata.json").read_text())
        except (OSError, ValueError):
            return {}
        return raw if isinstance(raw, dict) else {}

    def signature(self, group: str, version: int) -> lifecycle.Signature | None:
        found = signature_of_metadata(self.metadata(group, version))
        return lifecycle.Signature.from_mapping(found) if found else None

    def signature_check(
        self, group: str, version: int, serving: int | None, *, allowed: bool | None = None
    ) -> lifecycle.SignatureCheck:
        """compare_signatures of `version` against `serving`; allowed: the approval's recorded
        allowance unless the caller says (a person's flag on deploy)."""
        if allowed is None:
            allowed = self.get(group, version).signature_change_allowed
        if serving is None or serving == version:
            return lifecycle.SignatureCheck(version, serving, allowed=allowed)
        return lifecycle.compare_signatures(
            version,
            self.signature(group, version),
            serving,
            self.signature(group, serving),
            allowed=allowed,
        )

    def artifact_dir(self, group: str, version: int) -> Path:
        return self.models_dir / group / str(version)

    def image_dir(self, group: str, version: int) -> Path:
        """The version's local "image": its commit's `workloads/` tree, which its model server runs
        (on AWS the image CodeBuild built from that commit). Absent for versions registered without code."""
        return self.models_dir / group / f"{version}.image"

    def register(
        self,
        group: str,
        model_dir: Path,
        *,
        metrics: dict[str, Any],
        source_commit: str | None = None,
        data_location: str | None = None,
        code_dir: Path | None = None,
    ) -> ModelVersion:
        """Copy model_dir into the artifact store and add it as the next version, PendingManualApproval.

        `code_dir` (a checkout of the commit) gives the version its image: its `workloads/` is copied
        to image_dir(), so the version serves the code it was built from."""
        if not _GROUP_RE.match(group):
            raise PlatformError(
                f"model package group name {group!r} is not valid (letters, digits, hyphens; 1-63)"
            )
        if not (model_dir / "metadata.json").is_file():
            raise PlatformError(f"{model_dir} is not a model directory (no metadata.json)")
        with transaction(self._conn) as conn:
            (latest,) = conn.execute(
                "SELECT COALESCE(MAX(version), 0) FROM model_packages WHERE grp=?", (group,)
            ).fetchone()
            version = latest + 1
            dest = self.artifact_dir(group, version)
            if dest.exists():  # left by a registration that crashed before its commit
                shutil.rmtree(dest)
            # Copy under a temporary name, then rename: a crash never leaves a half-copied version.
            staging = dest.with_name(f".{version}.staging")
            if staging.exists():
                shutil.rmtree(staging)
            shutil.copytree(model_dir, staging)
            staging.rename(dest)
            if code_dir is not None:
                image = self.image_dir(group, version)
                if image.exists():
                    shutil.rmtree(image)
                image_staging = image.with_name(f".{version}.image.staging")
                if image_staging.exists():
                    shutil.rmtree(image_staging)
                shutil.copytree(
                    code_dir / "workloads",
                    image_staging / "workloads",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
                )
                image_staging.rename(image)
            stamp = now_iso()
            conn.execute(
                f"INSERT INTO model_packages ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    group,
                    version,
                    PENDING,
                    stamp,
                    stamp,
                    json.dumps(metrics),
                    None,
                    None,
                    source_commit,
                    data_location,
                    str(dest),
                ),
            )
        return self.get(group, version)

    def versions(self, group: str) -> list[ModelVersion]:
        rows = self._conn.execute(
            "SELECT * FROM model_packages WHERE grp=? ORDER BY version", (group,)
        ).fetchall()
        return [self._row(r) for r in rows]

    def get(self, group: str, version: int) -> ModelVersion:
        row = self._conn.execute(
            "SELECT * FROM model_packages WHERE grp=? AND version=?", (group, version)
        ).fetchone()
        if row is None:
            raise PlatformError(f"model package {package_arn(group, version)} does not exist")
        return self._row(row)

    def set_status(
        self,
        group: str,
        version: int,
        status: str,
        *,
        approver: str,
        description: str = "",
        force: bool = False,
        allow_signature_change: bool = False,
    ) -> ModelVersion:
        """Approve or reject. Only a pending version changes unless force=True (as approve.py --force).

        allow_signature_change is recorded with the approval (a rejection clears it): the deployer,
        which acts on the approval later, deploys the version even if its input signature breaks the
        serving one's callers. The up-front check is the caller's (LocalBackend.approve)."""
        if status not in (APPROVED, REJECTED):
            raise PlatformError(f"status must be {APPROVED} or {REJECTED}, not {status!r}")
        with transaction(self._conn) as conn:
            row = conn.execute(
                "SELECT status FROM model_packages WHERE grp=? AND version=?", (group, version)
            ).fetchone()
            if row is None:
                raise PlatformError(f"model package {package_arn(group, version)} does not exist")
            try:  # the shared rule (and wording) of who may change a version
                lifecycle.review(version, row["status"], status, force=force, reason="-")
            except lifecycle.LifecycleError as exc:
                raise PlatformError(str(exc)) from None
            stamp = now_iso()
            conn.execute(
                "UPDATE model_packages SET status=?, approver=?, description=?, updated_at=?, "
                "allow_signature_change=? WHERE grp=? AND version=?",
                (
                    status,
                    approver,
                    description,
                    stamp,
                    int(allow_signature_change and status == APPROVED),
                    group,
                    version,
                ),
            )
            conn.execute(
                "INSERT INTO events (created_at, kind, grp, version, status) VALUES (?,?,?,?,?)",
                (stamp, EVENT_STATE_CHANGE, group, version, status),
            )
        return self.get(group, version)

    def latest_approved(self, group: str) -> ModelVersion | None:
        row = self._conn.execute(
            "SELECT * FROM model_packages WHERE grp=? AND status=? ORDER BY version DESC LIMIT 1",
            (group, APPROVED),
        ).fetchone()
        return self._row(row) if row else None

    def events_after(self, event_id: int) -> list[dict[str, Any]]:
        rows = self._conn.execute("SELECT * FROM events WHERE id>? ORDER BY id", (event_id,)).fetchall()
        return [dict(r) for r in rows]
