"""The distribution as an application gets it: one import root, declared dependencies, no
patching of anyone else's code, and a producer that works from an application of its own.

The wheel test builds the wheel from a copy of the sources (a ``build/`` left in the tree
would slip stale modules in), installs it without dependencies into a fresh venv that sees
this venv's site-packages but not the repository, and publishes from an application folder
with its own ``schemas`` and ``broker`` packages.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import tomllib
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ics_sms.broker.admin import delete_topology
from ics_sms.schemas.senders import Lane
from ics_sms.schemas.topology import Topology
from tests.ics_sms.test_publish_cmd import drain

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGE_DIRS = {name: ROOT / folder
                for name, folder in PYPROJECT["tool"]["setuptools"]["package-dir"].items()}


def _package_files() -> Iterator[Path]:
    for folder in sorted(set(PACKAGE_DIRS.values())):
        for path in sorted(folder.rglob("*.py")):
            if "__pycache__" not in path.parts:
                yield path


def _imported_roots(path: Path) -> dict[str, ast.AST]:
    """Top-level module names ``path`` imports, with the node importing each."""
    roots: dict[str, ast.AST] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update((alias.name.split(".")[0], node) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots[node.module.split(".")[0]] = node
    return roots


def _third_party(root: str) -> bool:
    return root != "ics_sms" and root not in sys.stdlib_module_names


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert match, requirement
    return _canonical(match.group())


# -- declarations (fast: no build) -----------------------------------------------------------
def test_every_imported_distribution_is_declared() -> None:
    project = PYPROJECT["project"]
    declared = {_requirement_name(r) for r in project["dependencies"]}
    optional = {_requirement_name(r) for extra, reqs in project["optional-dependencies"].items()
                if extra != "dev" for r in reqs}
    providers = importlib.metadata.packages_distributions()
    missing = []
    for path in _package_files():
        for root in _imported_roots(path):
            if not _third_party(root):
                continue
            names = {_canonical(d) for d in providers.get(root, [])}
            assert names, f"{path.relative_to(ROOT)} imports {root}, which nothing installs"
            if not names & (declared | optional):
                missing.append(f"{root} ({'/'.join(sorted(names))}) in {path.relative_to(ROOT)}")
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


@pytest.mark.parametrize("name", ["pika", "amqp", "kombu"])
def test_libraries_whose_internals_we_use_have_a_bounded_major(name: str) -> None:
    [requirement] = [r for r in PYPROJECT["project"]["dependencies"]
                     if _requirement_name(r) == name]
    assert "<" in requirement, f"{requirement}: bound the major (we rely on its internals)"


def test_nothing_assigns_to_an_attribute_of_another_library() -> None:
    """Importing ics_sms must not change third-party modules or classes for the application."""
    found = []
    for path in _package_files():
        tree = ast.parse(path.read_text(), str(path))
        foreign = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                foreign |= {(a.asname or a.name).split(".")[0] for a in node.names
                            if _third_party(a.name.split(".")[0])}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                    and _third_party(node.module.split(".")[0]):
                foreign |= {a.asname or a.name for a in node.names}
        for node in ast.walk(tree):
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, ast.AugAssign | ast.AnnAssign):
                targets = [node.target]
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                    and node.func.id in {"setattr", "delattr"} and node.args:
                targets = [ast.Attribute(value=node.args[0], attr="?")]
            for target in targets:
                base = target
                while isinstance(base, ast.Attribute | ast.Subscript):
                    base = base.value
                if target is not base and isinstance(base, ast.Name) and base.id in foreign:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(target)}")
    assert not found, f"assignments to other libraries' attributes: {found}"


# -- the wheel, installed beside an application --------------------------------------------
APP_SCRIPT = """
import json, os, sys

import broker
import schemas
from ics_sms.producers import Producer
from ics_sms.schemas.topology import Topology

import ics_sms

assert schemas.OWNER == broker.OWNER == "the application", (schemas, broker)
with Producer(os.environ["RABBITMQ_URL"], Topology(namespace=sys.argv[1])) as producer:
    producer.publish({"message_id": "embedded-1", "campaign_id": "spring",
                      "to": "+919812345678", "text": "Hello from an application"})
print(json.dumps({"ics_sms": ics_sms.__file__, "schemas": schemas.__file__}))
"""


def _build_wheel(tmp: Path) -> Path:
    source = tmp / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for folder in sorted({p.relative_to(ROOT) for p in PACKAGE_DIRS.values()}):
        shutil.copytree(ROOT / folder, source / folder, ignore=ignore)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
                    "--wheel-dir", str(tmp / "dist"), str(source)],
                   check=True, capture_output=True, text=True)
    [wheel] = (tmp / "dist").glob("ics_sms-*.whl")
    return wheel


def _install(wheel: Path, tmp: Path) -> Path:
    """A fresh venv holding the wheel; dependencies come from this venv's site-packages."""
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                    "--no-deps", "--no-index", "--quiet", str(wheel)],
                   check=True, capture_output=True, text=True)
    purelib = subprocess.run([str(python), "-c", "import sysconfig; "
                              "print(sysconfig.get_path('purelib'))"],
                             check=True, capture_output=True, text=True).stdout.strip()
    # a plain path line: the .pth files over there (our editable install) are not read
    ours = sysconfig.get_path("purelib")
    (Path(purelib) / "dependencies.pth").write_text(ours + "\n")
    return venv


def _application(tmp: Path) -> Path:
    app = tmp / "app"
    for package in ("schemas", "broker"):
        (app / package).mkdir(parents=True)
        (app / package / "__init__.py").write_text('OWNER = "the application"\n')
    (app / "campaign.py").write_text(textwrap.dedent(APP_SCRIPT))
    return app


@pytest.fixture
def embedded_topology(rabbitmq_url: str) -> Iterator[Topology]:
    topology = Topology(namespace=f"t{uuid.uuid4().hex[:10]}.")
    yield topology
    delete_topology(rabbitmq_url, topology)


@pytest.mark.timeout(600)
def test_the_wheel_embeds_beside_an_application_with_its_own_schemas_and_broker(
        tmp_path: Path, rabbitmq_url: str, embedded_topology: Topology) -> None:
    wheel = _build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        [top_level] = [n for n in names if n.endswith(".dist-info/top_level.txt")]
        assert archive.read(top_level).decode().split() == ["ics_sms"]
    roots = {name.split("/")[0] for name in names if ".dist-info/" not in name}
    assert roots == {"ics_sms"}, f"the wheel installs more than one import name: {roots}"
    assert "ics_sms/py.typed" in names

    venv = _install(wheel, tmp_path)
    app = _application(tmp_path)
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(PYTHONPATH=str(app), RABBITMQ_URL=rabbitmq_url, PYTHONNOUSERSITE="1")

    version = subprocess.run([str(venv / "bin" / "ics-sms"), "--version"], cwd=app, env=env,
                             capture_output=True, text=True, timeout=120)
    assert version.returncode == 0, version.stderr
    assert "0.1.0" in version.stdout

    run = subprocess.run([str(venv / "bin" / "python"), "campaign.py",
                          embedded_topology.namespace], cwd=app, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    where = json.loads(run.stdout.strip().splitlines()[-1])
    assert Path(where["ics_sms"]).is_relative_to(venv), where  # the wheel, not the repository
    assert Path(where["schemas"]).is_relative_to(app), where

    [(properties, body)] = drain(rabbitmq_url, embedded_topology.send_queue(Lane.SERVICE))
    assert properties.message_id == "embedded-1"
    assert body["text"] == "Hello from an application"
