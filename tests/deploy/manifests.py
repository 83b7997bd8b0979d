"""Reading deploy/: YAML documents, and a small kustomize renderer for deploy/k8s.

The renderer understands exactly the kustomization features deploy/k8s uses (resources,
namespace, images, labels without selectors, JSON 6902 patches with a kind/name target)
and refuses anything else, so a kustomization that grows a feature fails loudly here
instead of being validated half-rendered.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "DEPLOY",
    "K8S",
    "REPO",
    "Manifest",
    "containers",
    "find",
    "load_documents",
    "pod_spec",
    "render",
]

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"

Manifest = dict[str, Any]

_SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "images", "labels", "patches"}
_CLUSTER_SCOPED = {"Namespace", "CustomResourceDefinition", "ClusterRole",
                   "ClusterRoleBinding", "PersistentVolume", "StorageClass"}


def load_documents(path: Path) -> list[Manifest]:
    """Every non-empty YAML document of ``path``."""
    with path.open(encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


def render(directory: Path) -> list[Manifest]:
    """The objects ``kubectl kustomize directory`` would print (for our feature subset)."""
    kustomization = load_documents(directory / "kustomization.yaml")[0]
    unknown = set(kustomization) - _SUPPORTED
    if unknown:
        raise ValueError(f"{directory}: the test renderer does not handle {sorted(unknown)}")
    objects: list[Manifest] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        objects += render(path) if path.is_dir() else load_documents(path)
    objects = copy.deepcopy(objects)
    for patch in kustomization.get("patches", []):
        _apply_patch(objects, patch, directory)
    for label in kustomization.get("labels", []):
        _apply_labels(objects, label)
    for image in kustomization.get("images", []):
        _apply_image(objects, image)
    if "namespace" in kustomization:
        for obj in objects:
            if obj["kind"] not in _CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = kustomization["namespace"]
    return objects


def find(objects: list[Manifest], kind: str, name: str | None = None) -> list[Manifest]:
    return [o for o in objects
            if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def pod_spec(obj: Manifest) -> Manifest | None:
    """The pod spec of a workload (Deployment, Job...), or None for other kinds."""
    if obj["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}:
        spec: Manifest = obj["spec"]["template"]["spec"]
        return spec
    if obj["kind"] == "CronJob":
        spec = obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        return spec
    return None


def containers(spec: Manifest) -> Iterator[Manifest]:
    yield from spec.get("initContainers", [])
    yield from spec.get("containers", [])


def _apply_labels(objects: list[Manifest], label: Manifest) -> None:
    if set(label) - {"pairs"}:
        raise ValueError(f"the test renderer only handles labels with pairs: {label}")
    for obj in objects:
        obj["metadata"].setdefault("labels", {}).update(label["pairs"])


def _apply_image(objects: list[Manifest], image: Manifest) -> None:
    if set(image) - {"name", "newName", "newTag"}:
        raise ValueError(f"the test renderer only handles name/newName/newTag: {image}")
    for obj in objects:
        spec = pod_spec(obj)
        for container in containers(spec) if spec else ():
            name, _, tag = container["image"].partition(":")
            if name == image["name"]:
                new_tag = image.get("newTag", tag)
                new_name = image.get("newName", name)
                container["image"] = f"{new_name}:{new_tag}" if new_tag else new_name


def _apply_patch(objects: list[Manifest], patch: Manifest, directory: Path) -> None:
    if set(patch) - {"target", "patch", "path"} or set(patch["target"]) - {"kind", "name"}:
        raise ValueError(f"the test renderer only handles kind/name targets: {patch}")
    text = patch["patch"] if "patch" in patch else (directory / patch["path"]).read_text()
    operations = yaml.safe_load(text)
    if not isinstance(operations, list):
        raise ValueError("the test renderer only handles JSON 6902 patches (a list of ops)")
    targets = find(objects, patch["target"]["kind"], patch["target"].get("name"))
    if not targets:
        raise ValueError(f"patch target not found: {patch['target']}")
    for obj in targets:
        for operation in operations:
            _json_patch(obj, operation)


def _json_patch(obj: Manifest, operation: Manifest) -> None:
    tokens = [t.replace("~1", "/").replace("~0", "~")
              for t in operation["path"].lstrip("/").split("/")]
    parent: Any = obj
    for token in tokens[:-1]:
        parent = parent[int(token)] if isinstance(parent, list) else parent[token]
    last = tokens[-1]
    op = operation["op"]
    if isinstance(parent, list):
        index = len(parent) if last == "-" else int(last)
        if op == "add":
            parent.insert(index, operation["value"])
        elif op == "replace":
            parent[index] = operation["value"]
        elif op == "remove":
            del parent[index]
        else:
            raise ValueError(f"unsupported op {op}")
        return
    if op in {"replace", "remove"} and last not in parent:
        raise ValueError(f"{op} of a missing path {operation['path']}")
    if op in {"add", "replace"}:
        parent[last] = operation["value"]
    elif op == "remove":
        del parent[last]
    else:
        raise ValueError(f"unsupported op {op}")
