"""Each Dockerfile installs one package from the lock and runs it as a non-root user."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from dataclasses import dataclass

import pytest

from ikd_audit.config import AuditSettings
from ikd_gateway.config import GatewaySettings
from ikd_identity.config import IdentitySettings
from ikd_shared.settings import ServiceSettings
from tests.support.deploy import REPO, closure, workspace

RUNTIME_BASE = "python:3.11-slim-bookworm"
SERVICE_UID = "10001"
UV_VERSION = re.findall(r"^UV_VERSION\s*:?=\s*(\S+)", (REPO / "Makefile").read_text(), re.M)[0]


@dataclass(frozen=True)
class Image:
    dockerfile: str
    dist: str
    cli: str
    settings: type[ServiceSettings] | None  # None: not a server
    extra_sources: tuple[str, ...] = ()


IMAGES = [
    Image("services/identity/Dockerfile", "ikd-identity", "ikd-identity", IdentitySettings),
    Image("services/audit/Dockerfile", "ikd-audit", "ikd-audit", AuditSettings),
    Image(
        "services/agency_gateway/Dockerfile",
        "ikd-agency-gateway",
        "ikd-gateway",
        GatewaySettings,
        ("deploy/policies",),
    ),
    Image("ops/Dockerfile", "ikd-ops", "ikdctl", None),
]
IDS = [image.dist for image in IMAGES]


@dataclass
class Instruction:
    keyword: str
    args: str
    stage: str


def instructions(dockerfile: str) -> list[Instruction]:
    """Instructions with continuations joined and comments dropped, tagged with their stage."""
    text = re.sub(r"\\\n", " ", (REPO / dockerfile).read_text())
    result = []
    stage = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = args.split()
            stage = words[2] if len(words) > 2 and words[1].upper() == "AS" else words[0]
        result.append(Instruction(keyword, " ".join(args.split()), stage))
    return result


def arg_defaults(dockerfile: str) -> dict[str, str]:
    return dict(
        item.args.split("=", 1)
        for item in instructions(dockerfile)
        if item.keyword == "ARG" and "=" in item.args
    )


def resolve(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m[1] or m[2], m[0]), text)


def stages(dockerfile: str) -> list[tuple[str, str]]:
    """(stage name, base image) in order."""
    args = arg_defaults(dockerfile)
    result = []
    for item in instructions(dockerfile):
        if item.keyword == "FROM":
            words = item.args.split()
            result.append((item.stage, resolve(words[0], args)))
    return result


def final_stage(dockerfile: str) -> list[Instruction]:
    last = stages(dockerfile)[-1][0]
    return [item for item in instructions(dockerfile) if item.stage == last]


def copies(dockerfile: str, stage: str) -> list[str]:
    """Sources copied from the build context (not --from another stage) in a stage."""
    sources: list[str] = []
    for item in instructions(dockerfile):
        if item.keyword != "COPY" or item.stage != stage:
            continue
        words = [w for w in shlex.split(item.args) if not w.startswith("--chown")]
        if any(w.startswith("--from") for w in words):
            continue
        sources.extend(w.rstrip("/") for w in words[:-1] if not w.startswith("--"))
    return sources


def dockerignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(path: str) -> bool:
    """Whether .dockerignore drops a path (or a folder above it) from the context."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in dockerignore_patterns():
        if pattern.startswith("!"):
            continue
        bare = pattern.removeprefix("**/")
        for prefix in prefixes:
            if fnmatch.fnmatch(prefix, pattern) or (
                pattern.startswith("**/") and fnmatch.fnmatch(prefix.rsplit("/", 1)[-1], bare)
            ):
                return True
    return False


def uv_syncs(dockerfile: str) -> list[list[str]]:
    runs = [item.args for item in instructions(dockerfile) if item.keyword == "RUN"]
    return [shlex.split(run[run.index("uv sync") :]) for run in runs if "uv sync" in run]


@pytest.mark.parametrize("image", IMAGES, ids=IDS)
def test_installs_only_its_package_from_the_frozen_lock(image: Image) -> None:
    syncs = uv_syncs(image.dockerfile)
    assert syncs, "no uv sync"
    for sync in syncs:
        assert "--frozen" in sync, "install exactly uv.lock"
        assert "--no-dev" in sync
        assert "--all-packages" not in sync
        assert sync[sync.index("--package") + 1] == image.dist
        assert sync.count("--package") == 1
    assert any("--no-install-workspace" not in sync for sync in syncs), "the package itself"


@pytest.mark.parametrize("image", IMAGES, ids=IDS)
def test_pins_the_uv_of_the_makefile(image: Image) -> None:
    args = arg_defaults(image.dockerfile)
    runs = [resolve(i.args, args) for i in instructions(image.dockerfile) if i.keyword == "RUN"]
    assert any(f"uv=={UV_VERSION}" in run for run in runs), f"pip install uv=={UV_VERSION}"


@pytest.mark.parametrize("image", IMAGES, ids=IDS)
def test_copies_the_workspace_it_needs_and_no_other_member(image: Image) -> None:
    members = workspace()
    builder = stages(image.dockerfile)[0][0]
    sources = copies(image.dockerfile, builder)
    # uv reads every member's manifest to load the workspace
    manifests = {f"{m.path}/pyproject.toml" for m in members.values()}
    assert {"pyproject.toml", "uv.lock", *manifests} <= set(sources)
    needed = {members[dist].path for dist in closure(image.dist)}
    copied_code = {
        member.path
        for member in members.values()
        for source in sources
        if source.startswith(f"{member.path}/") and source != f"{member.path}/pyproject.toml"
    }
    assert copied_code == needed, f"copies {sorted(copied_code)}, needs {sorted(needed)}"
    for path in needed:
        assert f"{path}/src" in sources
        if (REPO / path / "migrations").is_dir():  # the CLIs find them beside src/
            assert f"{path}/migrations" in sources
    for extra in image.extra_sources:
        assert extra in sources
    for source in sources:
        assert (REPO / source).exists(), source
        assert not ignored(source), f"{source} is excluded by .dockerignore"


@pytest.mark.parametrize("image", IMAGES, ids=IDS)
def test_runtime_is_slim_python_and_a_non_root_user(image: Image) -> None:
    bases = stages(image.dockerfile)
    assert bases[-1][1] == RUNTIME_BASE
    assert bases[0][1] == RUNTIME_BASE, "the venv's interpreter is the runtime's"
    runtime = final_stage(image.dockerfile)
    users = [item.args for item in runtime if item.keyword == "USER"]
    assert users, "no USER: the container would run as root"
    uid = users[-1].split(":")[0]
    assert uid not in ("root", "0")
    assert uid == SERVICE_UID
    assert any(f"--uid {SERVICE_UID}" in item.args for item in runtime if item.keyword == "RUN")
    copied = [item.args for item in runtime if item.keyword == "COPY"]
    assert any("--from=builder" in c and "/app" in c for c in copied), "the venv from the builder"
    env = " ".join(item.args for item in runtime if item.keyword == "ENV")
    assert "PATH=/app/.venv/bin:" in env


@pytest.mark.parametrize("image", IMAGES, ids=IDS)
def test_entrypoint_is_the_package_cli(image: Image) -> None:
    assert image.cli in workspace()[image.dist].scripts
    runtime = final_stage(image.dockerfile)
    entrypoints = [json.loads(item.args) for item in runtime if item.keyword == "ENTRYPOINT"]
    assert entrypoints[-1:] == [[image.cli]]


@pytest.mark.parametrize("image", IMAGES, ids=IDS)
def test_servers_expose_and_health_check_their_default_port(image: Image) -> None:
    runtime = final_stage(image.dockerfile)
    exposed = [item.args for item in runtime if item.keyword == "EXPOSE"]
    checks = [item.args for item in runtime if item.keyword == "HEALTHCHECK"]
    assert len(checks) == 1
    if image.settings is None:
        assert exposed == []
        assert checks == ["NONE"]
        return
    port = image.settings.model_fields["port"].default
    assert exposed == [str(port)]
    assert "/healthz" in checks[0]
    assert f"'{port}'" in checks[0]
    assert 'CMD ["python"' in checks[0], "python's urllib: no curl in slim images"
    env = " ".join(item.args for item in runtime if item.keyword == "ENV")
    prefix = image.settings.model_config.get("env_prefix")
    assert f"{prefix}HOST=0.0.0.0" in env, "reachable from outside the container"


def test_dockerignore_keeps_secrets_state_and_tests_out_of_the_context() -> None:
    for path in (".env", ".secrets/key.pem", ".git/config", ".run/dev/x", ".venv/bin/python"):
        assert ignored(path), path
    for path in ("tests/unit/x.py", "shared/src/ikd_shared/__pycache__/a.pyc", ".mypy_cache/x"):
        assert ignored(path), path
    for path in ("uv.lock", "shared/src/ikd_shared/nik.py", "deploy/policies/x.yaml"):
        assert not ignored(path), path
