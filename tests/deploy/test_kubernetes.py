"""deploy/k8s: the kustomization renders, every object is schema-valid, and the parts agree.

Core objects are checked offline against the Kubernetes OpenAPI schemas shipped inside the
``kubernetes-validate`` package (strict: unknown fields fail). The CRDs (KEDA, RabbitMQ
Cluster Operator) are checked against small JSON Schemas in ``crd_schemas/`` written from
their documented fields.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import referencing

from ics_sms.schemas.definitions import definitions
from ics_sms.schemas.senders import Lane, Senders, load_senders
from ics_sms.schemas.settings import Settings
from tests.deploy.manifests import (
    DEPLOY,
    K8S,
    Manifest,
    containers,
    find,
    load_documents,
    pod_spec,
    render,
)

KUBERNETES_VERSIONS = ["1.28.0", kubernetes_validate.latest_version()]
"""The oldest Kubernetes the manifests target and the newest the validator knows."""

CRD_SCHEMAS = Path(__file__).parent / "crd_schemas"
OVERLAY = K8S / "overlays" / "example"
BASE = K8S / "base"
IMAGE = "registry.example.com/ics-sms:0.1.0"
PENDING_SETTINGS: set[str] = set()
"""ICS_SMS_* variables deploy/ sets before schemas/settings.py declares them."""
WORKERS = {"ics-sms-worker-service": "service", "ics-sms-worker-promotional": "promotional"}
"""The worker Deployments and the lane each consumes (ICS_SMS_WORKER_LANES)."""


@pytest.fixture(scope="module")
def objects() -> list[Manifest]:
    return render(OVERLAY)


def one(objects: list[Manifest], kind: str, name: str) -> Manifest:
    found = find(objects, kind, name)
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def crd_validator(api_version: str, kind: str) -> jsonschema.Draft202012Validator:
    group_version = api_version.replace("/", "_")
    schema = json.loads((CRD_SCHEMAS / f"{group_version}_{kind}.json").read_text())
    metadata = json.loads((CRD_SCHEMAS / "metadata.json").read_text())
    registry: referencing.Registry[Any] = referencing.Registry().with_resource(
        metadata["$id"], referencing.Resource.from_contents(metadata)
    )
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, registry=registry)


def is_crd(obj: Manifest) -> bool:
    return (CRD_SCHEMAS / f"{obj['apiVersion'].replace('/', '_')}_{obj['kind']}.json").exists()


# -- the directory and the renderer ---------------------------------------------------------


@pytest.mark.parametrize("directory", [BASE, OVERLAY], ids=["base", "overlay"])
def test_every_file_is_listed_in_its_kustomization(directory: Path) -> None:
    kustomization = load_documents(directory / "kustomization.yaml")[0]
    listed = {(directory / entry).resolve() for entry in kustomization["resources"]}
    present = {p.resolve() for p in directory.iterdir()
               if p.suffix in {".yaml", ".yml"} and p.name != "kustomization.yaml"}
    assert present - listed == set(), "files kustomize would ignore"
    assert {p for p in listed if not p.exists()} == set(), "listed files that do not exist"


def test_the_overlay_renders_every_base_object(objects: list[Manifest]) -> None:
    base = {(o["kind"], o["metadata"]["name"]) for o in render(BASE)}
    rendered = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(rendered) == len(set(rendered)), "two objects with one kind and name"
    assert base <= set(rendered)


def test_the_overlay_puts_everything_in_its_namespace(objects: list[Manifest]) -> None:
    namespaces = {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"}
    assert namespaces == {"ics-sms"}
    assert one(objects, "Namespace", "ics-sms")


def test_the_overlay_sets_the_image_of_every_ics_sms_container(objects: list[Manifest]) -> None:
    images = {c["image"] for o in objects if (spec := pod_spec(o)) for c in containers(spec)}
    assert images == {IMAGE}


# -- schemas ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_core_objects_match_the_kubernetes_schemas(objects: list[Manifest], version: str) -> None:
    checked = 0
    for obj in objects:
        if is_crd(obj):
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {exc}")
        checked += 1
    assert checked >= 10


def test_custom_resources_match_their_crd_schemas(objects: list[Manifest]) -> None:
    custom = [o for o in objects if is_crd(o)]
    assert {o["kind"] for o in custom} == {"ScaledObject", "TriggerAuthentication",
                                           "RabbitmqCluster"}
    for obj in custom:
        errors = [e.message for e in crd_validator(obj["apiVersion"], obj["kind"])
                  .iter_errors(obj)]
        assert errors == [], f"{obj['kind']}/{obj['metadata']['name']}"


def test_every_object_has_a_schema(objects: list[Manifest]) -> None:
    for obj in objects:
        if is_crd(obj):
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSIONS[0], strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            pytest.fail(f"no schema for {obj['apiVersion']} {obj['kind']}: add one")


def test_the_validators_reject_a_misspelled_field(objects: list[Manifest]) -> None:
    worker = json.loads(json.dumps(one(objects, "Deployment", "ics-sms-worker-service")))
    worker["spec"]["template"]["spec"]["terminationGracePeriod"] = 60
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(worker, KUBERNETES_VERSIONS[0], strict=True)
    scaled = json.loads(json.dumps(one(objects, "ScaledObject", "ics-sms-worker-service")))
    scaled["spec"]["triggers"][0]["metadata"]["queue"] = "sms.send.service"
    assert list(crd_validator(scaled["apiVersion"], "ScaledObject").iter_errors(scaled))


def test_the_rabbitmq_pod_override_is_a_valid_pod_spec(objects: list[Manifest]) -> None:
    cluster = one(objects, "RabbitmqCluster", "ics-sms-rabbitmq")
    template = cluster["spec"]["override"]["statefulSet"]["spec"]["template"]
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "override", **template.get("metadata", {})},
           "spec": template["spec"]}
    kubernetes_validate.validate(pod, KUBERNETES_VERSIONS[0], strict=True)


# -- workloads -------------------------------------------------------------------------------


def workloads(objects: list[Manifest]) -> list[Manifest]:
    return [o for o in objects if pod_spec(o) is not None]


def test_every_pod_runs_unprivileged_on_a_read_only_root(objects: list[Manifest]) -> None:
    assert len(workloads(objects)) == 4
    for obj in workloads(objects):
        spec = pod_spec(obj)
        assert spec is not None
        name = obj["metadata"]["name"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] > 0, name
        assert spec["automountServiceAccountToken"] is False, name
        for container in containers(spec):
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{name}: a read-only root needs a writable /tmp"


def test_every_container_has_requests_and_a_memory_limit(objects: list[Manifest]) -> None:
    for obj in workloads(objects):
        spec = pod_spec(obj)
        assert spec is not None
        for container in containers(spec):
            resources = container["resources"]
            assert {"cpu", "memory"} <= resources["requests"].keys(), obj["metadata"]["name"]
            assert "memory" in resources["limits"], obj["metadata"]["name"]


@pytest.mark.parametrize("name", WORKERS)
def test_the_worker_drains_on_sigterm_within_the_grace_period(objects: list[Manifest],
                                                               name: str) -> None:
    worker = one(objects, "Deployment", name)
    spec = worker["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] >= 45
    assert "replicas" not in worker["spec"], "KEDA owns the worker replica count"
    assert worker["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


@pytest.mark.parametrize("name", WORKERS)
def test_the_worker_memory_limit_and_metrics_probes(objects: list[Manifest], name: str) -> None:
    container = one(objects, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["worker"]
    assert container["resources"]["limits"]["memory"] == "256Mi"
    env = {e["name"]: e for e in container["env"]}
    port = int(env["ICS_SMS_METRICS_PORT"]["value"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": port}
    # probes and Prometheus reach the pod's IP: the loopback default would refuse them
    assert env["ICS_SMS_METRICS_HOST"]["value"] == "0.0.0.0"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/metrics", "port": "metrics"}, probe


def test_the_receiver_probes_listens_everywhere_and_runs_two(objects: list[Manifest]) -> None:
    deployment = one(objects, "Deployment", "ics-sms-receiver")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert deployment["spec"]["replicas"] >= 2
    assert container["args"][:1] == ["receiver"]
    assert container["args"][container["args"].index("--host") + 1] == "0.0.0.0"
    port = int(container["args"][container["args"].index("--port") + 1])
    env = {e["name"]: e for e in container["env"]}
    metrics_port = int(env["ICS_SMS_RECEIVER_METRICS_PORT"]["value"])
    assert metrics_port != port, "metrics stay off the port ICS reaches"
    assert env["ICS_SMS_METRICS_HOST"]["value"] == "0.0.0.0"
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "http": port, "metrics": metrics_port}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}


def test_prometheus_scrapes_the_worker_and_receiver_ports(objects: list[Manifest]) -> None:
    for name in (*WORKERS, "ics-sms-receiver"):
        template = one(objects, "Deployment", name)["spec"]["template"]
        annotations = template["metadata"]["annotations"]
        ports = {p["containerPort"] for p in template["spec"]["containers"][0]["ports"]}
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/path"] == "/metrics"
        assert int(annotations["prometheus.io/port"]) in ports
        env = {e["name"]: e.get("value") for e in template["spec"]["containers"][0]["env"]}
        metrics_port = env.get("ICS_SMS_RECEIVER_METRICS_PORT") or env["ICS_SMS_METRICS_PORT"]
        assert annotations["prometheus.io/port"] == metrics_port, name


def test_the_topology_job_declares_and_stops(objects: list[Manifest]) -> None:
    job = one(objects, "Job", "ics-sms-topology")
    spec = job["spec"]["template"]["spec"]
    assert spec["containers"][0]["args"] == ["topology"]
    assert spec["restartPolicy"] in {"OnFailure", "Never"}
    assert job["spec"]["backoffLimit"] >= 1


# -- services, ingress, disruption budgets ---------------------------------------------------


def selects(selector: dict[str, str], obj: Manifest) -> bool:
    labels = obj["spec"]["template"]["metadata"]["labels"]
    return all(labels.get(k) == v for k, v in selector.items())


def test_service_and_budgets_select_the_right_pods(objects: list[Manifest]) -> None:
    workers = [one(objects, "Deployment", name) for name in WORKERS]
    receiver = one(objects, "Deployment", "ics-sms-receiver")
    service = one(objects, "Service", "ics-sms-receiver")
    assert selects(service["spec"]["selector"], receiver)
    assert not any(selects(service["spec"]["selector"], worker) for worker in workers)
    for deployment in (*workers, receiver):
        budget = one(objects, "PodDisruptionBudget", deployment["metadata"]["name"])
        selector = budget["spec"]["selector"]["matchLabels"]
        assert selects(selector, deployment)
        others = [d for d in find(objects, "Deployment") if d is not deployment]
        assert not any(selects(selector, d) for d in others)
        assert deployment["spec"]["selector"]["matchLabels"] == selector


def test_the_ingress_exposes_only_receipts_and_short_links(objects: list[Manifest]) -> None:
    ingress = one(objects, "Ingress", "ics-sms-receiver")
    service = one(objects, "Service", "ics-sms-receiver")
    paths = [p for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    assert sorted(p["path"] for p in paths) == ["/ics/", "/l/"]
    port_names = {p["name"] for p in service["spec"]["ports"]}
    assert port_names == {"http"}, "the metrics port stays off the Service"
    for path in paths:
        assert path["pathType"] == "Prefix"
        assert path["backend"]["service"]["name"] == "ics-sms-receiver"
        assert path["backend"]["service"]["port"]["name"] in port_names


def test_the_public_url_is_the_ingress_host(objects: list[Manifest]) -> None:
    config = one(objects, "ConfigMap", "ics-sms-config")["data"]
    public = urlsplit(config["ICS_SMS_PUBLIC_URL"])
    ingress = one(objects, "Ingress", "ics-sms-receiver")["spec"]
    assert public.scheme == "https"
    assert [rule["host"] for rule in ingress["rules"]] == [public.hostname]
    assert [host for tls in ingress["tls"] for host in tls["hosts"]] == [public.hostname]


# -- configuration and secrets ---------------------------------------------------------------


def secret_data(objects: list[Manifest], name: str) -> dict[str, str]:
    data: dict[str, str] = one(objects, "Secret", name)["stringData"]
    return data


def test_every_reference_resolves(objects: list[Manifest]) -> None:
    for obj in workloads(objects):
        spec = pod_spec(obj)
        assert spec is not None
        assert find(objects, "ServiceAccount", spec["serviceAccountName"])
        for container in containers(spec):
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert one(objects, "ConfigMap", source["configMapRef"]["name"])
                else:
                    assert one(objects, "Secret", source["secretRef"]["name"])
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref is not None and not ref.get("optional", False):
                    assert ref["key"] in secret_data(objects, ref["name"]), var["name"]
        for volume in spec["volumes"]:
            if "configMap" in volume:
                assert one(objects, "ConfigMap", volume["configMap"]["name"])
    auth = one(objects, "TriggerAuthentication", "ics-sms-rabbitmq")
    for ref in auth["spec"]["secretTargetRef"]:
        assert ref["key"] in secret_data(objects, ref["name"])


def test_the_environment_names_only_known_settings(objects: list[Manifest]) -> None:
    known = set(Settings.model_fields) | PENDING_SETTINGS
    names = set(one(objects, "ConfigMap", "ics-sms-config")["data"])
    for obj in workloads(objects):
        spec = pod_spec(obj)
        assert spec is not None
        names |= {v["name"] for c in containers(spec) for v in c.get("env", [])}
    settings = {n for n in names if n.startswith("ICS_SMS_")}
    assert {n.removeprefix("ICS_SMS_").lower() for n in settings} <= known
    Settings.model_validate(
        {k.removeprefix("ICS_SMS_").lower(): v
         for k, v in one(objects, "ConfigMap", "ics-sms-config")["data"].items()}
    )


def test_the_senders_configmap_is_the_example_file(objects: list[Manifest]) -> None:
    text = one(objects, "ConfigMap", "ics-sms-senders")["data"]["senders.toml"]
    assert tomllib.loads(text) == tomllib.loads((DEPLOY / "senders.example.toml").read_text())


def senders_of(objects: list[Manifest], tmp_path: Path) -> Senders:
    path = tmp_path / "senders.toml"
    path.write_text(one(objects, "ConfigMap", "ics-sms-senders")["data"]["senders.toml"])
    return load_senders(path)


def test_every_sender_token_comes_from_the_tokens_secret(
    objects: list[Manifest], tmp_path: Path
) -> None:
    senders = senders_of(objects, tmp_path)
    tokens = secret_data(objects, "ics-sms-sender-tokens")
    assert len(senders) >= 1
    for sender in senders:
        assert sender.token_env is not None, f"{sender.name}: use token_env on Kubernetes"
        assert sender.resolve_token(tokens).get_secret_value()
    for name in WORKERS:
        env_from = one(objects, "Deployment", name)["spec"]["template"]["spec"][
            "containers"][0]["envFrom"]
        assert {"secretRef": {"name": "ics-sms-sender-tokens"}} in env_from


def test_example_secrets_are_clearly_fake(objects: list[Manifest]) -> None:
    for secret in find(objects, "Secret"):
        for key, value in secret["stringData"].items():
            assert "EXAMPLE" in value, f"{secret['metadata']['name']}/{key}"


def test_the_broker_url_user_is_the_imported_rabbitmq_user(objects: list[Manifest]) -> None:
    url = urlsplit(secret_data(objects, "ics-sms-secrets")["broker-url"])
    users = json.loads(secret_data(objects, "ics-sms-rabbitmq-users")["users.json"])
    user = next(u for u in users["users"] if u["name"] == url.username)
    assert user["password"] == url.password
    permission = next(p for p in users["permissions"] if p["user"] == url.username)
    assert permission["vhost"] == "/"
    assert url.hostname == "ics-sms-rabbitmq.ics-sms.svc"  # reachable from KEDA's namespace


# -- RabbitMQ and KEDA -----------------------------------------------------------------------


def test_rabbitmq_is_a_three_node_cluster_importing_the_definitions(
    objects: list[Manifest],
) -> None:
    cluster = one(objects, "RabbitmqCluster", "ics-sms-rabbitmq")
    assert cluster["spec"]["replicas"] == 3
    config = additional_config(objects)
    directory = config["load_definitions"]
    assert config["prometheus.return_per_object_metrics"] == "true"
    pod = cluster["spec"]["override"]["statefulSet"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = pod["containers"][0]["volumeMounts"]
    assert pod["containers"][0]["name"] == "rabbitmq"
    assert all(m["mountPath"].startswith(directory + "/") and m.get("subPath") for m in mounts)
    sources = {}
    for mount in sorted(mounts, key=lambda m: m["mountPath"]):
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            data = one(objects, "ConfigMap", volume["configMap"]["name"])["data"]
        else:
            data = secret_data(objects, volume["secret"]["secretName"])
        sources[mount["mountPath"].rsplit("/", 1)[1]] = json.loads(data[mount["subPath"]])
    topology, users = sources.values()
    assert topology == definitions()
    assert users["users"], "without a users file RabbitMQ has no user at all"


def env_of(deployment: Manifest) -> dict[str, str]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def additional_config(objects: list[Manifest]) -> dict[str, str]:
    cluster = one(objects, "RabbitmqCluster", "ics-sms-rabbitmq")
    return dict(line.split(" = ", 1) for line in cluster["spec"]["rabbitmq"]["additionalConfig"]
                .splitlines() if line.strip())


def test_each_lane_has_workers_of_its_own(objects: list[Manifest]) -> None:
    assert {d["metadata"]["name"] for d in find(objects, "Deployment")} == {
        *WORKERS, "ics-sms-receiver"}
    for name, lane in WORKERS.items():
        deployment = one(objects, "Deployment", name)
        assert env_of(deployment)["ICS_SMS_WORKER_LANES"] == lane
        assert Settings(worker_lanes=lane).worker_lanes == lane  # a value the worker takes
        assert deployment["spec"]["selector"]["matchLabels"]["ics-sms/lane"] == lane
        spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"][0]
        assert spread["labelSelector"]["matchLabels"] == deployment["spec"]["selector"][
            "matchLabels"]


def test_the_workers_know_the_brokers_consumer_timeout(objects: list[Manifest]) -> None:
    timeout_ms = int(additional_config(objects)["consumer_timeout"])
    for name in WORKERS:
        worker_s = float(env_of(one(objects, "Deployment", name))["ICS_SMS_CONSUMER_TIMEOUT_S"])
        assert worker_s * 1000 == timeout_ms, name


def rabbitmq_triggers(scaled: Manifest) -> list[Manifest]:
    return [t for t in scaled["spec"]["triggers"] if t["type"] == "rabbitmq"]


def test_keda_scales_each_lane_on_its_queue_counting_unacked_messages(
    objects: list[Manifest],
) -> None:
    topology = Settings().topology
    for name, lane in WORKERS.items():
        scaled = one(objects, "ScaledObject", name)["spec"]
        assert scaled["scaleTargetRef"]["name"] == name
        assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"]
        [trigger] = rabbitmq_triggers(one(objects, "ScaledObject", name))
        metadata = trigger["metadata"]
        assert metadata["queueName"] == topology.send_queue(Lane(lane))
        assert metadata["mode"] == "QueueLength"
        # the management API counts ready + unacknowledged; AMQP would count ready only
        assert metadata["protocol"] == "http"
        assert metadata.get("excludeUnacknowledged", "false") == "false"
        assert "host" not in metadata, "credentials belong in the Secret"
        assert one(objects, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    assert one(objects, "ScaledObject", "ics-sms-worker-service")["spec"]["minReplicaCount"] >= 2
    # which queues: tests/deploy/test_queues.py checks them against the code


def test_promotional_workers_scale_up_only_inside_the_sending_window(
    objects: list[Manifest],
) -> None:
    scaled = one(objects, "ScaledObject", "ics-sms-worker-promotional")["spec"]
    [queue] = rabbitmq_triggers(one(objects, "ScaledObject", "ics-sms-worker-promotional"))
    [cron] = [t for t in scaled["triggers"] if t["type"] == "cron"]
    modifiers = scaled["advanced"]["scalingModifiers"]
    inside = f"{cron['name']} > 1"
    assert modifiers["formula"] == f"{inside} ? {queue['name']} : 0"
    assert int(cron["metadata"]["desiredReplicas"]) > 1, "inside: above what outside reports"
    assert modifiers["target"] == queue["metadata"]["value"]
    # the window is the workers' own (the config sets none: the defaults)
    config = one(objects, "ConfigMap", "ics-sms-config")["data"]
    settings = Settings.model_validate({k.removeprefix("ICS_SMS_").lower(): v
                                        for k, v in config.items()})
    start, end = settings.promo_window_start, settings.promo_window_end
    assert cron["metadata"]["timezone"] == settings.promo_timezone
    assert cron["metadata"]["start"] == f"{start.minute} {start.hour} * * *"
    assert cron["metadata"]["end"] == f"{end.minute} {end.hour} * * *"


def test_keda_reads_queue_lengths_as_a_monitoring_only_user(objects: list[Manifest]) -> None:
    auth = one(objects, "TriggerAuthentication", "ics-sms-rabbitmq")
    [ref] = auth["spec"]["secretTargetRef"]
    assert ref["parameter"] == "host"
    url = urlsplit(secret_data(objects, ref["name"])[ref["key"]])
    assert (url.scheme, url.hostname, url.port) == ("http", "ics-sms-rabbitmq.ics-sms.svc",
                                                    15672)
    users = json.loads(secret_data(objects, "ics-sms-rabbitmq-users")["users.json"])
    user = next(u for u in users["users"] if u["name"] == url.username)
    assert user["password"] == url.password and user["tags"] == ["monitoring"]
    permission = next(p for p in users["permissions"] if p["user"] == url.username)
    assert (permission["configure"], permission["write"], permission["read"]) == ("", "", "")


def test_rabbitmq_runs_as_in_production(objects: list[Manifest]) -> None:
    cluster = one(objects, "RabbitmqCluster", "ics-sms-rabbitmq")["spec"]
    series = tuple(int(n) for n in cluster["image"].split(":")[1].split("-")[0].split("."))
    assert series >= (4, 1), "a supported 4.x release series"
    config = additional_config(objects)
    assert config["cluster_partition_handling"] == "pause_minority"
    assert float(config["disk_free_limit.relative"]) >= 1.0
    anti_affinity = cluster["affinity"]["podAntiAffinity"]
    [term] = anti_affinity["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    # the operator labels the cluster's pods app.kubernetes.io/name=<cluster name>
    assert term["labelSelector"]["matchLabels"] == {"app.kubernetes.io/name": "ics-sms-rabbitmq"}
