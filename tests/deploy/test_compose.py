"""deploy/compose.yaml: accepted by Docker Compose, and its parts agree with each other.

``docker compose config -q`` validates the file against the Compose specification offline;
it runs when a Compose v2 CLI is installed and is skipped, with the reason, otherwise. The
other tests read the YAML directly and need nothing but PyYAML.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from ics_sms.schemas.definitions import definitions
from ics_sms.schemas.senders import load_senders
from ics_sms.schemas.settings import Settings
from tests.deploy.manifests import DEPLOY

COMPOSE_FILE = DEPLOY / "compose.yaml"
LONG_RUNNING = {"rabbitmq", "redis", "sandbox", "worker", "receiver"}
ONE_SHOT = {"topology"}
ICS_SMS_SERVICES = {"sandbox", "topology", "worker", "receiver"}
PENDING_SETTINGS: set[str] = set()
"""ICS_SMS_* variables deploy/ sets before schemas/settings.py declares them."""


def compose_cli() -> list[str] | None:
    """``docker compose`` (the plugin) or a standalone Compose v2, if one is installed."""
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True,
                               check=False, timeout=60)
        if probe.returncode == 0:
            return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    if standalone is not None:
        probe = subprocess.run([standalone, "version"], capture_output=True, text=True,
                               check=False, timeout=60)
        if probe.returncode == 0 and " v2." in probe.stdout:
            return [standalone]
    return None


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = compose["services"]
    return found


def env_file_values(service: dict[str, Any]) -> dict[str, str]:
    values: dict[str, str] = {}
    for name in service.get("env_file", []):
        for line in (DEPLOY / name).read_text().splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                key, _, value = line.partition("=")
                values[key.strip()] = value.strip()
    return values


def environment(service: dict[str, Any]) -> dict[str, str]:
    """What the container sees: env_file values overridden by ``environment``."""
    return {**env_file_values(service), **{k: str(v) for k, v in
                                           service.get("environment", {}).items()}}


def bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """``{target: source}`` of the service's bind mounts (short syntax)."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith("."):
            mounts[target] = (DEPLOY / source).resolve()
    return mounts


# -- the Compose CLI -------------------------------------------------------------------------


def test_docker_compose_accepts_the_file() -> None:
    cli = compose_cli()
    if cli is None:
        pytest.skip("no Docker Compose v2 CLI (`docker compose` plugin or `docker-compose`)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    result = subprocess.run([*cli, "-f", str(COMPOSE_FILE), "config", "-q"], capture_output=True,
                            text=True, check=False, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", "warnings count as failures"


# -- services and their order ----------------------------------------------------------------


def test_the_stack_has_its_services(services: dict[str, Any]) -> None:
    assert set(services) == LONG_RUNNING | ONE_SHOT


def test_every_long_running_service_has_a_health_check(services: dict[str, Any]) -> None:
    for name in LONG_RUNNING:
        check = services[name]["healthcheck"]
        assert check["test"][0] == "CMD", name
        assert {"interval", "timeout", "retries"} <= check.keys(), name


def test_the_topology_runs_once_after_rabbitmq_is_healthy(services: dict[str, Any]) -> None:
    topology = services["topology"]
    assert topology["command"] == ["topology"]
    assert topology["restart"] == "no"
    assert topology["depends_on"] == {"rabbitmq": {"condition": "service_healthy"}}


@pytest.mark.parametrize("name", ["worker", "receiver"])
def test_workers_and_receiver_wait_for_the_topology(services: dict[str, Any], name: str) -> None:
    depends = services[name]["depends_on"]
    assert depends["topology"] == {"condition": "service_completed_successfully"}
    assert depends["redis"] == {"condition": "service_healthy"}


def test_two_workers_run(services: dict[str, Any]) -> None:
    assert services["worker"]["command"] == ["worker"]
    assert services["worker"]["deploy"]["replicas"] == 2


def test_every_ics_sms_service_uses_the_one_image(services: dict[str, Any]) -> None:
    images = {services[name]["image"] for name in ICS_SMS_SERVICES}
    assert images == {"ics-sms:dev"}
    for name in ICS_SMS_SERVICES:
        build = services[name]["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == (
            DEPLOY / "Dockerfile").resolve()
        assert services[name]["read_only"] is True
        assert services[name]["cap_drop"] == ["ALL"]
        assert services[name]["stop_grace_period"] == "45s"


def health_url(service: dict[str, Any]) -> str:
    code = service["healthcheck"]["test"][-1]
    start = code.index("'http") + 1
    return str(code[start:code.index("'", start)])


def test_http_health_checks_probe_the_right_ports(services: dict[str, Any]) -> None:
    receiver = services["receiver"]
    port = receiver["command"][receiver["command"].index("--port") + 1]
    assert health_url(receiver) == f"http://127.0.0.1:{port}/readyz"
    sandbox = services["sandbox"]
    port = sandbox["command"][sandbox["command"].index("--port") + 1]
    assert health_url(sandbox) == f"http://127.0.0.1:{port}/_stats"
    metrics_port = environment(services["worker"])["ICS_SMS_METRICS_PORT"]
    assert health_url(services["worker"]) == f"http://127.0.0.1:{metrics_port}/metrics"
    for name in ("receiver", "sandbox"):
        command = services[name]["command"]
        assert command[command.index("--host") + 1] == "0.0.0.0", name


def test_rabbitmq_and_redis_have_their_health_commands(services: dict[str, Any]) -> None:
    assert services["rabbitmq"]["healthcheck"]["test"][1:] == ["rabbitmq-diagnostics", "-q",
                                                               "ping"]
    assert services["redis"]["healthcheck"]["test"][1:] == ["redis-cli", "ping"]
    assert services["rabbitmq"]["image"].startswith("rabbitmq:4.2-management")


def test_redis_persists_the_message_records(services: dict[str, Any]) -> None:
    command = services["redis"]["command"]
    options = dict(zip(command[1::2], command[2::2], strict=True))
    assert options["--appendonly"] == "yes" and options["--appendfsync"] == "everysec"
    assert options["--maxmemory-policy"] == "noeviction"


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ICS_SMS_SERVICES))
def test_the_environment_is_valid_settings(services: dict[str, Any], name: str) -> None:
    env = environment(services[name])
    settings = {k.removeprefix("ICS_SMS_").lower(): v for k, v in env.items()
                if k.startswith("ICS_SMS_")}
    assert set(settings) - set(Settings.model_fields) <= PENDING_SETTINGS
    parsed = Settings.model_validate({k: v for k, v in settings.items()
                                      if k not in PENDING_SETTINGS})
    assert parsed.callback_secret.get_secret_value(), "the receiver refuses to start without"


def test_urls_point_at_the_stack_s_services(services: dict[str, Any]) -> None:
    env = environment(services["worker"])

    def target(url: str) -> tuple[str | None, int | None]:
        parts = urlsplit(url)
        return parts.hostname, parts.port

    assert target(env["ICS_SMS_BROKER_URL"]) == ("rabbitmq", 5672)
    assert target(env["ICS_SMS_REDIS_URL"]) == ("redis", 6379)
    assert target(env["ICS_SMS_ICS_URL"]) == ("sandbox", 9090)
    assert target(env["ICS_SMS_PUBLIC_URL"]) == ("receiver", 8080)
    for name, port in (("sandbox", 9090), ("receiver", 8080)):
        command = services[name]["command"]
        assert int(command[command.index("--port") + 1]) == port


def test_the_senders_file_is_mounted_with_its_tokens(
    services: dict[str, Any], tmp_path: Path
) -> None:
    for name in ICS_SMS_SERVICES:
        env = environment(services[name])
        mounts = bind_mounts(services[name])
        source = mounts[env["ICS_SMS_SENDERS_FILE"]]
        assert source == (DEPLOY / "senders.example.toml").resolve()
        senders = load_senders(source)
        assert len(senders) >= 2
        for sender in senders:
            assert sender.token_env is not None, sender.name
            assert sender.resolve_token(env).get_secret_value(), sender.name


def test_the_example_senders_give_the_sandbox_distinct_accounts() -> None:
    raw = tomllib.loads((DEPLOY / "senders.example.toml").read_text())
    users = [s["username"] for s in raw["senders"].values()]
    assert len(users) == len(set(users)), "the sandbox refuses one user with two tokens"
    assert all("tracking_token" in s for s in raw["senders"].values()), (
        "without a fixed tracking_token every process would invent its own")


def test_every_bind_mount_source_exists(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for source in bind_mounts(service).values():
            assert source.is_file(), f"{name}: {source}"


# -- RabbitMQ --------------------------------------------------------------------------------


def rabbitmq_conf() -> dict[str, str]:
    lines = (DEPLOY / "rabbitmq" / "rabbitmq.conf").read_text().splitlines()
    return dict(line.split(" = ", 1) for line in lines
                if line.strip() and not line.startswith("#"))


def test_rabbitmq_imports_the_definitions_and_a_user(services: dict[str, Any]) -> None:
    mounts = bind_mounts(services["rabbitmq"])
    conf = rabbitmq_conf()
    assert mounts["/etc/rabbitmq/rabbitmq.conf"] == (DEPLOY / "rabbitmq" / "rabbitmq.conf")
    directory = conf["load_definitions"]
    imported = {t: s for t, s in mounts.items() if t.startswith(directory + "/")}
    assert all(t.endswith(".json") for t in imported)
    files = [json.loads(imported[t].read_text()) for t in sorted(imported)]
    assert files[0] == definitions(), "deploy/rabbitmq/definitions.json is imported first"
    users = [u for f in files for u in f.get("users", [])]
    broker = urlsplit(environment(services["worker"])["ICS_SMS_BROKER_URL"])
    assert [(u["name"], u["password"]) for u in users] == [(broker.username, broker.password)]
    permissions = [p for f in files for p in f.get("permissions", [])]
    assert [(p["user"], p["vhost"]) for p in permissions] == [(broker.username, "/")]


def test_rabbitmq_exports_per_queue_metrics() -> None:
    assert rabbitmq_conf()["prometheus.return_per_object_metrics"] == "true"
