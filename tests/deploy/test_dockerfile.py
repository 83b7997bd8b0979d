"""deploy/Dockerfile: read, not built (no Docker engine here): the rules it must keep.

One small image for every command: multi-stage on python:3.11-slim, the project installed
from wheels into a venv, a numeric non-root user, ``ics-sms`` as the entrypoint, and a
BuildKit ignore file that lets exactly the packaged sources into the build context.
"""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib

import pytest

from tests.deploy.manifests import DEPLOY, REPO

DOCKERFILE = (DEPLOY / "Dockerfile").read_text()
IGNORE = (DEPLOY / "Dockerfile.dockerignore").read_text()
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE)
    result = []
    for line in joined.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            word, _, rest = stripped.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for instruction in instructions():
        if instruction[0] == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


def packages() -> list[str]:
    """The folders the distribution's packages come from (pyproject's package-dir)."""
    return sorted(set(PYPROJECT["tool"]["setuptools"]["package-dir"].values()))


def test_both_stages_start_from_python_3_11_slim() -> None:
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for w, a in instructions() if w == "ARG"}
    assert args["PYTHON_IMAGE"] == "python:3.11-slim"
    assert [s[0][1].split()[0] for s in stages()] == ["${PYTHON_IMAGE}"] * 2


def test_the_build_stage_copies_every_package_and_makes_wheels() -> None:
    build = stages()[0]
    copied = {a.split()[0].rstrip("/") for w, a in build if w == "COPY"}
    assert set(packages()) <= copied
    assert "pyproject.toml" in {a.split()[0] for w, a in build if w == "COPY"}
    assert any(w == "RUN" and "pip wheel" in a for w, a in build)


def test_the_final_stage_installs_offline_into_a_venv() -> None:
    final = stages()[-1]
    runs = " ".join(a for w, a in final if w == "RUN")
    assert "python -m venv" in runs
    assert "--no-index" in runs
    assert "from=build" in runs
    assert not any(w == "COPY" and "--from" not in a for w, a in final), (
        "the final stage gets nothing from the context, only the build stage's wheels")


def test_the_image_runs_as_a_numeric_non_root_user() -> None:
    users = [a for w, a in stages()[-1] if w == "USER"]
    assert len(users) == 1
    uid, _, gid = users[0].partition(":")
    assert uid.isdigit() and int(uid) > 0
    assert not gid or (gid.isdigit() and int(gid) > 0)


def test_one_image_for_every_command() -> None:
    final = dict(stages()[-1])
    assert json.loads(final["ENTRYPOINT"]) == ["ics-sms"]
    assert "ics-sms" in PYPROJECT["project"]["scripts"]
    assert "HEALTHCHECK" not in final, "health checks differ per command: compose/k8s own them"


def ignored(path: str) -> bool:
    """Whether the ignore file keeps ``path`` out of the context (last match wins)."""
    verdict = False
    for raw in IGNORE.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if pattern.startswith("**/"):
            matched = any(fnmatch.fnmatch(p, pattern[3:]) for p in parts)
        else:
            matched = any(fnmatch.fnmatch(p, pattern) for p in prefixes)
        if matched:
            verdict = not negate
    return verdict


@pytest.mark.parametrize("path", ["schemas/topology.py", "ics_sms/cli/main.py",
                                  "pyproject.toml", "README.md"])
def test_the_context_holds_the_sources(path: str) -> None:
    assert not ignored(path)


@pytest.mark.parametrize("path", [".venv/bin/python", ".git/HEAD", "tests/conftest.py",
                                  "deploy/compose.env", "schemas/__pycache__/x.pyc",
                                  "senders.toml", ".hypothesis/x"])
def test_the_context_leaves_out_everything_else(path: str) -> None:
    assert ignored(path)


def test_every_package_is_let_into_the_context() -> None:
    for package in packages():
        assert not ignored(f"{package}/__init__.py"), package
