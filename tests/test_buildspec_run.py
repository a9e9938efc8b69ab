"""workloads/train/buildspec.yml's image steps, run for real in bash the way CodeBuild runs them.

CodeBuild (buildspec 0.2) runs each phase's commands in order in one shell, so variables carry
over, and the first command that exits non-zero fails the build. These tests read `pre_build` and
`build` from the YAML, run them that way up to the line that prints the image digest (everything
after it needs SageMaker), and judge the build by its exit code and the IMAGE_DIGEST it ends with.
AWS is a moto server on 127.0.0.1 that the steps (boto3) and the `aws` CLI both talk to (a
machine without the CLI gets a stand-in for its one call, `ecr get-login-password`); `docker`
is a stub that records its arguments and whose `push` puts the image into moto's ECR, where the
repository's tags are IMMUTABLE as in the real stack, so a second push of a tag is refused there.

What they prove (finding 3 of issue 8):
  1. the first build of a commit builds and pushes once and ends with the digest ECR has for it;
  2. a second build of the same commit (the README's push then `aws codebuild start-build`, or a
     pipeline Retry) builds and pushes nothing and ends with the same digest, where the buildspec
     before the fix (commit e9d7b9c, read from git) fails at `docker push`;
  3. when another build of the commit pushes between this build's check and its push, the refused
     push is not a failure: the build goes on with the image in ECR;
  4. a push refused for any other reason (nothing in ECR) fails the build, naming the missing image.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
BUILDSPEC = REPO_ROOT / "workloads" / "train" / "buildspec.yml"
BUILDSPEC_PATH_IN_GIT = "workloads/train/buildspec.yml"
# The last commit whose buildspec pushed unconditionally (so a second build of a commit failed).
OLD_BUILDSPEC_COMMIT = "e9d7b9c"
ACCOUNT = "123456789012"  # moto's default account: ECR's registry id for the repository URI
REGION = "us-east-1"
REGISTRY = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
COMMIT = "3f2a9c1e8b7d6a5f4e3d2c1b0a9f8e7d6c5b4a39"
TIMEOUT = 120
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
# What ECR answers `docker push` of an existing tag in an IMMUTABLE repository.
IMMUTABLE_REFUSAL = "cannot be overwritten because the repository is immutable"

# The `docker` the buildspec finds first on PATH. Every call appends {"args": [...]} to
# $STUB_DOCKER_LOG. Local image state (what `docker build` made, the digests `docker push` got)
# lives in $STUB_DOCKER_STATE, one file per build, as each CodeBuild build starts with an empty
# Docker. $STUB_DOCKER_PUSH: "ok" (default) pushes; "race" first pushes the tag as another build
# of the commit would, then pushes (which ECR refuses); "refuse" fails without pushing anything.
STUB_DOCKER = '''
import json
import os
import secrets
import sys

import boto3
from botocore.exceptions import ClientError

MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"


def note(entry):
    with open(os.environ["STUB_DOCKER_LOG"], "a") as handle:
        handle.write(json.dumps(entry) + "\\n")


def load_state():
    try:
        with open(os.environ["STUB_DOCKER_STATE"]) as handle:
            return json.load(handle)
    except FileNotFoundError:
        return {"built": [], "repo_digests": {}}


def save_state(state):
    with open(os.environ["STUB_DOCKER_STATE"], "w") as handle:
        json.dump(state, handle)


def split_uri(uri):
    """(registry id, repository, tag) of <account>.dkr.ecr.<region>.amazonaws.com/<repo>:<tag>."""
    registry, _, rest = uri.partition("/")
    repository, _, tag = rest.rpartition(":")
    return registry.split(".", 1)[0], repository, tag


def manifest():
    """A new image's manifest: layers differ from build to build, as real builds' do."""
    def blob(media_type, size):
        return {"mediaType": media_type, "size": size, "digest": "sha256:" + secrets.token_hex(32)}

    return json.dumps({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": blob("application/vnd.docker.container.image.v1+json", 1469),
        "layers": [blob("application/vnd.docker.image.rootfs.diff.tar.gzip", 29126484)],
    })


def put_image(uri):
    """ECR's side of a push; returns the digest, or None when ECR refuses the tag."""
    registry, repository, tag = split_uri(uri)
    try:
        image = boto3.client("ecr").put_image(
            registryId=registry,
            repositoryName=repository,
            imageTag=tag,
            imageManifest=manifest(),
            imageManifestMediaType=MANIFEST_TYPE,
        )["image"]
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("ImageTagAlreadyExistsException", "ImageAlreadyExistsException"):
            print(
                f"tag invalid: The image tag '{tag}' already exists in the '{repository}' repository "
                "and cannot be overwritten because the repository is immutable.",
                file=sys.stderr,
            )
            return None
        raise
    return image["imageId"]["imageDigest"]


def main(args):
    note({"args": args})
    command = args[0] if args else ""
    state = load_state()
    if command == "login":
        if "--password-stdin" not in args or not sys.stdin.read().strip():
            print("Error: no password on stdin", file=sys.stderr)
            return 1
        print("Login Succeeded")
        return 0
    if command == "build":
        if os.environ.get("STUB_DOCKER_BUILD") == "fail":
            print("ERROR: failed to solve: process '/bin/sh -c pip install' did not complete", file=sys.stderr)
            return 1
        state["built"].append(args[args.index("--tag") + 1])
        save_state(state)
        return 0
    if command == "push":
        uri = args[-1]
        if uri not in state["built"]:
            print(f"An image does not exist locally with the tag: {uri}", file=sys.stderr)
            return 1
        mode = os.environ.get("STUB_DOCKER_PUSH", "ok")
        if mode == "refuse":
            print(f"denied: push of {uri} refused (STUB_DOCKER_PUSH=refuse)", file=sys.stderr)
            return 1
        if mode == "race":
            note({"other_build_pushed": put_image(uri)})
        digest = put_image(uri)
        if digest is None:
            return 1
        state["repo_digests"][uri] = f"{uri.rpartition(':')[0]}@{digest}"
        save_state(state)
        print(f"{uri.rpartition(':')[2]}: digest: {digest} size: 529")
        return 0
    if command == "inspect":
        uri = args[-1]
        if uri not in state["built"]:
            print(f"Error: No such object: {uri}", file=sys.stderr)
            return 1
        if uri not in state["repo_digests"]:
            # `{{index .RepoDigests 0}}` of an image that was built but never pushed.
            print("template: :1:2: executing \\"\\" at <index .RepoDigests 0>: error calling index: "
                  "index out of range: 0", file=sys.stderr)
            return 1
        print(state["repo_digests"][uri])
        return 0
    print(f"stub docker: {command!r} is not simulated", file=sys.stderr)
    return 2


sys.exit(main(sys.argv[1:]))
'''

# Only when no `aws` CLI is installed (it is not a project dependency): the one call the buildspec
# makes, through boto3 against the same moto server, printing what the real CLI prints.
STAND_IN_AWS = """
import base64
import sys

import boto3

if sys.argv[1:3] != ["ecr", "get-login-password"]:
    print(f"stand-in aws CLI: {sys.argv[1:]} is not simulated", file=sys.stderr)
    sys.exit(255)
print("stand-in aws CLI (no aws CLI installed): ecr get-login-password", file=sys.stderr)
token = boto3.client("ecr").get_authorization_token()["authorizationData"][0]["authorizationToken"]
print(base64.b64decode(token).decode().split(":", 1)[1])
"""


@dataclass
class Build:
    returncode: int
    output: str
    entries: list[dict[str, Any]]

    @property
    def image_digest(self) -> str | None:
        """The IMAGE_DIGEST the commands ended with; None when they stopped before."""
        found = [
            line.split("=", 1)[1] for line in self.output.splitlines() if line.startswith("IMAGE_DIGEST=")
        ]
        return found[-1] if found else None

    @property
    def docker_calls(self) -> list[list[str]]:
        return [entry["args"] for entry in self.entries if "args" in entry]

    def calls(self, command: str) -> list[list[str]]:
        return [args for args in self.docker_calls if args[:1] == [command]]


def image_commands(spec_text: str, echo_prefix: str) -> list[str]:
    """pre_build then build commands, through the IMAGE_DIGEST assignment and the echo of it.

    The cut is found by content: the first `IMAGE_DIGEST=` command, the first `echo_prefix` command
    after it, both before the first `upload-data` step (the training steps need SageMaker)."""
    spec = yaml.safe_load(spec_text)
    try:
        phases = spec["phases"]
        commands = [str(c) for c in phases["pre_build"]["commands"]] + [
            str(c) for c in phases["build"]["commands"]
        ]
    except (KeyError, TypeError) as exc:
        pytest.fail(f"buildspec has no phases.pre_build.commands / phases.build.commands: {exc!r}")
    digest_at = next((i for i, c in enumerate(commands) if c.lstrip().startswith("IMAGE_DIGEST=")), None)
    if digest_at is None:
        pytest.fail("buildspec sets no IMAGE_DIGEST= (the cut point of this test); update the test")
    echo_at = next(
        (i for i, c in enumerate(commands) if i > digest_at and c.lstrip().startswith(echo_prefix)), None
    )
    if echo_at is None:
        pytest.fail(f"buildspec has no `{echo_prefix}...` command after IMAGE_DIGEST=; update the test")
    upload_at = next((i for i, c in enumerate(commands) if "upload-data" in c), None)
    if upload_at is None:
        pytest.fail("buildspec has no upload-data step; the training part moved, update the test")
    if not digest_at < echo_at < upload_at:
        pytest.fail(
            f"buildspec order changed: IMAGE_DIGEST= at {digest_at}, {echo_prefix!r} at {echo_at}, "
            f"upload-data at {upload_at}; update the test"
        )
    return commands[: echo_at + 1]


def codebuild_script(commands: list[str]) -> str:
    """The commands in one bash, in order, stopping at the first that fails, as CodeBuild runs them."""
    lines = []
    for number, command in enumerate(commands, 1):
        lines.append(f"printf '[Container] Running command %s\\n' {shlex.quote(command)}")
        lines.append(command.rstrip("\n"))
        lines.append(
            f'__rc=$?; if [ "$__rc" -ne 0 ]; then echo "[Container] Command {number} did not exit '
            'successfully, exit status ${__rc}"; exit "$__rc"; fi'
        )
    lines.append('echo "IMAGE_DIGEST=${IMAGE_DIGEST}"')
    return "\n".join(lines) + "\n"


def old_buildspec() -> str:
    """The buildspec before the fix, from git (CI's clone of main is a full clone, so it is there)."""
    shown = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "show", f"{OLD_BUILDSPEC_COMMIT}:{BUILDSPEC_PATH_IN_GIT}"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    if shown.returncode != 0:
        pytest.fail(
            f"cannot read {BUILDSPEC_PATH_IN_GIT} at commit {OLD_BUILDSPEC_COMMIT} (a shallow clone?): "
            f"{shown.stderr.strip()}; the check against the old buildspec needs the full history"
        )
    return shown.stdout


@pytest.fixture
def moto_endpoint() -> Iterator[str]:
    """A moto server on 127.0.0.1 for this test, reset and stopped after it."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:  # flask and flask-cors come with moto's `server` extra
        pytest.fail(f"moto's server cannot start ({exc}); the dev group needs moto[server]")
    werkzeug_log = logging.getLogger("werkzeug")
    level = werkzeug_log.level
    werkzeug_log.setLevel(logging.ERROR)  # not a line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        yield endpoint
    finally:
        urllib.request.urlopen(
            urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=30
        )
        server.stop()
        werkzeug_log.setLevel(level)


@pytest.fixture
def ecr(moto_endpoint: str) -> Any:
    return boto3.client(
        "ecr",
        endpoint_url=moto_endpoint,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def repository_uri(ecr: Any) -> str:
    name = f"buildspec-run-{uuid.uuid4().hex[:8]}"
    repo = ecr.create_repository(repositoryName=name, imageTagMutability="IMMUTABLE")["repository"]
    assert repo["repositoryUri"] == f"{REGISTRY}/{name}"
    return str(repo["repositoryUri"])


def digest_in_ecr(ecr: Any, repository_uri: str, tag: str) -> str | None:
    name = repository_uri.split("/", 1)[1]
    try:
        details = ecr.describe_images(registryId=ACCOUNT, repositoryName=name, imageIds=[{"imageTag": tag}])
    except ecr.exceptions.ImageNotFoundException:
        return None
    return str(details["imageDetails"][0]["imageDigest"])


def images_in_ecr(ecr: Any, repository_uri: str) -> list[dict[str, Any]]:
    return list(ecr.describe_images(repositoryName=repository_uri.split("/", 1)[1])["imageDetails"])


@pytest.fixture
def run_build(tmp_path: Path, moto_endpoint: str, repository_uri: str) -> Callable[..., Build]:
    """Runs commands as one CodeBuild build of COMMIT; each call is a new build (fresh Docker)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "docker"
    stub.write_text(f"#!{sys.executable}\n{textwrap.dedent(STUB_DOCKER).lstrip()}")
    stub.chmod(0o755)
    venv_bin = Path(sys.executable).parent
    if not (venv_bin / "python").is_file():
        pytest.fail(f"no `python` beside {sys.executable}: the buildspec's `python -m` needs the venv's")
    inherited_path = os.environ.get("PATH", os.defpath)
    if shutil.which("aws", path=f"{venv_bin}{os.pathsep}{inherited_path}") is None:
        stand_in = bin_dir / "aws"
        stand_in.write_text(f"#!{sys.executable}\n{STAND_IN_AWS.lstrip()}")
        stand_in.chmod(0o755)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CODEBUILD_", "STUB_DOCKER_"))}
    base.pop("PYTHONPATH", None)
    base.update(
        PATH=os.pathsep.join([str(bin_dir), str(venv_bin), inherited_path]),
        AWS_ENDPOINT_URL=moto_endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_REGION=REGION,
        AWS_DEFAULT_REGION=REGION,
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=str(tmp_path / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-aws-credentials"),
        CODEBUILD_RESOLVED_SOURCE_VERSION=COMMIT,
        ECR_REPOSITORY_URI=repository_uri,
    )
    count = 0

    def run(commands: list[str], push: str = "ok", build: str = "ok") -> Build:
        nonlocal count
        count += 1
        build_dir = tmp_path / f"build-{count}"
        build_dir.mkdir()
        log = build_dir / "docker.jsonl"
        log.touch()
        script = build_dir / "commands.sh"
        script.write_text(codebuild_script(commands))
        env = {
            **base,
            "STUB_DOCKER_LOG": str(log),
            "STUB_DOCKER_STATE": str(build_dir / "docker-state.json"),
            "STUB_DOCKER_PUSH": push,
            "STUB_DOCKER_BUILD": build,
        }
        done = subprocess.run(
            ["bash", "--noprofile", "--norc", str(script)],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=TIMEOUT,
        )
        entries = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        return Build(done.returncode, done.stdout, entries)

    return run


@pytest.fixture
def commands() -> list[str]:
    return image_commands(BUILDSPEC.read_text(), 'echo "image ')


def assert_logged_in(build: Build) -> None:
    assert build.calls("login") == [["login", "--username", "AWS", "--password-stdin", REGISTRY]], (
        build.output
    )


def test_first_build_of_a_commit_builds_pushes_once_and_ends_with_the_ecr_digest(
    run_build: Callable[..., Build], commands: list[str], ecr: Any, repository_uri: str
) -> None:
    build = run_build(commands)

    assert build.returncode == 0, build.output
    assert_logged_in(build)
    image_uri = f"{repository_uri}:{COMMIT}"
    assert build.calls("build") == [["build", "--file", "workloads/Dockerfile", "--tag", image_uri, "."]]
    assert build.calls("push") == [["push", image_uri]]
    in_ecr = digest_in_ecr(ecr, repository_uri, COMMIT)
    assert in_ecr is not None and DIGEST_RE.match(in_ecr)
    assert build.image_digest == in_ecr
    assert f"image {image_uri} ({in_ecr})" in build.output


def test_second_build_of_the_same_commit_reuses_the_image(
    run_build: Callable[..., Build], commands: list[str], ecr: Any, repository_uri: str
) -> None:
    first = run_build(commands)
    assert first.returncode == 0, first.output
    first_digest = first.image_digest

    second = run_build(commands)

    assert second.returncode == 0, second.output
    assert_logged_in(second)
    assert second.calls("build") == []
    assert second.calls("push") == []
    assert second.image_digest == first_digest == digest_in_ecr(ecr, repository_uri, COMMIT)
    assert f"is already in ECR ({first_digest}); reusing it" in second.output
    assert len(images_in_ecr(ecr, repository_uri)) == 1


def test_the_buildspec_before_the_fix_fails_the_second_build_at_push(
    run_build: Callable[..., Build], ecr: Any, repository_uri: str
) -> None:
    old = image_commands(old_buildspec(), 'echo "pushed ')
    assert not any("image-digest" in c for c in old), "not the buildspec before the fix"
    image_uri = f"{repository_uri}:{COMMIT}"

    first = run_build(old)
    # The old one works for a commit's first build (so the stub's push and inspect are faithful)...
    assert first.returncode == 0, first.output
    first_digest = digest_in_ecr(ecr, repository_uri, COMMIT)
    assert first.image_digest == first_digest

    second = run_build(old)

    # ... and fails the second: ECR refuses to overwrite the immutable commit tag.
    assert second.returncode != 0, second.output
    assert second.calls("build") == [["build", "--file", "workloads/Dockerfile", "--tag", image_uri, "."]]
    assert second.calls("push") == [["push", image_uri]]
    assert IMMUTABLE_REFUSAL in second.output
    assert second.image_digest is None
    assert digest_in_ecr(ecr, repository_uri, COMMIT) == first_digest


def test_concurrent_build_that_pushes_first_is_used(
    run_build: Callable[..., Build], commands: list[str], ecr: Any, repository_uri: str
) -> None:
    assert digest_in_ecr(ecr, repository_uri, COMMIT) is None

    build = run_build(commands, push="race")

    assert build.returncode == 0, build.output
    assert len(build.calls("build")) == 1
    assert build.calls("push") == [["push", f"{repository_uri}:{COMMIT}"]]
    other = [entry["other_build_pushed"] for entry in build.entries if "other_build_pushed" in entry]
    assert len(other) == 1 and DIGEST_RE.match(other[0])
    assert IMMUTABLE_REFUSAL in build.output  # this build's own push was refused by ECR
    assert (
        f"push of {repository_uri}:{COMMIT} failed; checking whether another build of {COMMIT} pushed it"
        in (build.output)
    )
    assert build.image_digest == other[0] == digest_in_ecr(ecr, repository_uri, COMMIT)
    assert len(images_in_ecr(ecr, repository_uri)) == 1


def test_push_refused_with_nothing_in_ecr_fails_the_build(
    run_build: Callable[..., Build], commands: list[str], ecr: Any, repository_uri: str
) -> None:
    build = run_build(commands, push="refuse")

    assert build.returncode != 0, build.output
    assert build.calls("push") == [["push", f"{repository_uri}:{COMMIT}"]]
    assert f"no image {repository_uri}:{COMMIT} in ECR" in build.output
    assert build.image_digest is None
    assert digest_in_ecr(ecr, repository_uri, COMMIT) is None
    assert images_in_ecr(ecr, repository_uri) == []


def test_a_failed_docker_build_fails_the_build_at_the_build_not_later(
    run_build: Callable[..., Build], commands: list[str], ecr: Any, repository_uri: str
) -> None:
    # Inside the buildspec's if-block CodeBuild sees only the block's last status; a failed build
    # must not go on to a push (which `|| echo` would then excuse).
    build = run_build(commands, build="fail")

    assert build.returncode != 0, build.output
    assert build.calls("push") == []
    assert "failed to solve" in build.output
    assert f"push of {repository_uri}:{COMMIT} failed" not in build.output
    assert images_in_ecr(ecr, repository_uri) == []
