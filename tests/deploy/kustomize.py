"""Render a kustomization as `kustomize build` would, for the features deploy/k8s uses.

No kustomize or kubectl binary installs from PyPI on this machine (the PyPI
wrappers need Python 3.14 or an AWS CDK stack), so the tests render the
overlays themselves. Supported: `resources` (files and directories),
`configMapGenerator` (literals, files; behavior create/merge/replace, with a
content-hash name suffix and the references to it rewritten), `patches`
(strategic merge, by the patch's own kind and name or an explicit target),
`images` and `namespace`. Any other kustomization field, or a JSON 6902 patch,
is an error rather than silently ignored, so a manifest change that needs more
of kustomize fails here first. The strategic merge follows the Kubernetes merge
keys of the fields deploy/k8s patches (containers, env, volumes, ports, ...);
other lists are replaced, as in the API's own strategy.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]

KUSTOMIZATION = "kustomization.yaml"
SUPPORTED_FIELDS = {
    "apiVersion",
    "kind",
    "resources",
    "configMapGenerator",
    "patches",
    "images",
    "namespace",
}
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}
# patchMergeKey of the list fields that deploy/k8s patches (k8s.io/api types).
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
}
_GENERATED = "__generated_name__"


class KustomizeError(Exception):
    pass


def build(root: Path) -> list[Obj]:
    """The objects `kustomize build root` prints (generated names hashed, references updated)."""
    return _finalize(_build(root.resolve()))


def pod_spec(obj: Obj) -> Obj | None:
    """The pod spec of a workload, or None for other kinds."""
    if obj["kind"] in WORKLOADS:
        spec: Obj = obj["spec"]["template"]["spec"]
        return spec
    if obj["kind"] == "CronJob":
        spec = obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        return spec
    return None


def _build(root: Path) -> list[Obj]:
    path = root / KUSTOMIZATION
    if not path.is_file():
        raise KustomizeError(f"{root} has no {KUSTOMIZATION}")
    k = yaml.safe_load(path.read_text()) or {}
    unknown = set(k) - SUPPORTED_FIELDS
    if unknown:
        raise KustomizeError(f"{path}: fields this renderer does not know: {sorted(unknown)}")
    objs: list[Obj] = []
    for entry in k.get("resources", []):
        target = root / entry
        if target.is_dir():
            objs += _build(target.resolve())
        elif target.is_file():
            objs += [d for d in yaml.safe_load_all(target.read_text()) if d is not None]
        else:
            raise KustomizeError(f"{path}: resource {entry} does not exist")
    for gen in k.get("configMapGenerator", []):
        _generate(root, gen, objs)
    for patch in k.get("patches", []):
        _patch(root, patch, objs)
    if "namespace" in k:
        for obj in objs:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = k["namespace"]
    for image in k.get("images", []):
        _set_image(image, objs)
    seen: set[tuple[str, str]] = set()
    for obj in objs:
        key = (obj["kind"], obj["metadata"]["name"])
        if key in seen:
            raise KustomizeError(f"{path}: {key[0]} {key[1]} is defined twice")
        seen.add(key)
    return objs


def _generate(root: Path, gen: Obj, objs: list[Obj]) -> None:
    unknown = set(gen) - {"name", "behavior", "literals", "files"}
    if unknown:
        raise KustomizeError(f"configMapGenerator {gen.get('name')}: unsupported {sorted(unknown)}")
    data: dict[str, str] = {}
    for literal in gen.get("literals", []):
        key, sep, value = literal.partition("=")
        if not sep:
            raise KustomizeError(f"configMapGenerator {gen['name']}: {literal!r} is not KEY=VALUE")
        data[key] = value
    for entry in gen.get("files", []):
        key, sep, rel = entry.partition("=")
        rel = rel if sep else key
        file = root / rel
        if not file.is_file():
            raise KustomizeError(f"configMapGenerator {gen['name']}: no file {file}")
        data[Path(key).name if not sep else key] = file.read_text()
    behavior = gen.get("behavior", "create")
    existing = [o for o in objs if o.get(_GENERATED) == gen["name"]]
    if behavior == "create":
        if existing:
            raise KustomizeError(f"configMapGenerator {gen['name']} exists: use behavior merge")
        objs.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": gen["name"]},
                "data": data,
                _GENERATED: gen["name"],
            }
        )
    elif behavior in ("merge", "replace"):
        if not existing:
            raise KustomizeError(f"configMapGenerator {gen['name']}: nothing to {behavior}")
        if behavior == "merge":
            existing[0]["data"].update(data)
        else:
            existing[0]["data"] = data
    else:
        raise KustomizeError(f"configMapGenerator {gen['name']}: unknown behavior {behavior}")


def _patch(root: Path, entry: Obj, objs: list[Obj]) -> None:
    unknown = set(entry) - {"path", "patch", "target"}
    if unknown:
        raise KustomizeError(f"patch {entry}: unsupported {sorted(unknown)}")
    text = (root / entry["path"]).read_text() if "path" in entry else entry["patch"]
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise KustomizeError(f"patch {entry}: one strategic-merge document expected")
    patch = docs[0]
    target = entry.get("target") or {"kind": patch["kind"], "name": patch["metadata"]["name"]}
    if set(target) - {"kind", "name"}:
        raise KustomizeError(f"patch {entry}: only kind and name targets are supported")
    matches = [
        o
        for o in objs
        if o["kind"] == target["kind"]
        and target["name"] in (o["metadata"]["name"], o.get(_GENERATED))
    ]
    if not matches:
        raise KustomizeError(f"patch {entry}: no {target['kind']} {target['name']} to patch")
    for obj in matches:
        body = {k: v for k, v in patch.items() if k not in ("apiVersion", "kind", "metadata")}
        merged = strategic_merge(obj, body)
        obj.clear()
        obj.update(merged)


def strategic_merge(base: Any, patch: Any, field: str = "") -> Any:
    """`patch` merged into a copy of `base` (null deletes a key; keyed lists merge by key)."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = copy.deepcopy(base)
        for key, value in patch.items():
            if key.startswith("$"):
                raise KustomizeError(f"patch directive {key} is not supported")
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = strategic_merge(out[key], value, key)
            else:
                out[key] = copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(patch, list):
        key = MERGE_KEYS.get(field)
        if field == "ports" and all(isinstance(p, dict) for p in base + patch):
            key = "containerPort" if any("containerPort" in p for p in base + patch) else "port"
        if key is None:
            return copy.deepcopy(patch)
        out_list = copy.deepcopy(base)
        for item in patch:
            if item.get("$patch") == "delete":
                out_list = [b for b in out_list if b.get(key) != item.get(key)]
                continue
            for i, existing in enumerate(out_list):
                if existing.get(key) == item.get(key):
                    out_list[i] = strategic_merge(existing, item)
                    break
            else:
                out_list.append(copy.deepcopy(item))
        return out_list
    return copy.deepcopy(patch)


def split_image(ref: str) -> tuple[str, str | None, str | None]:
    """`name[:tag][@digest]` -> (name, tag, digest)."""
    name, _, digest = ref.partition("@")
    tag = None
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    return name, tag, digest or None


def _set_image(entry: Obj, objs: list[Obj]) -> None:
    unknown = set(entry) - {"name", "newName", "newTag", "digest"}
    if unknown:
        raise KustomizeError(f"images entry {entry}: unsupported {sorted(unknown)}")
    for obj in objs:
        spec = pod_spec(obj)
        if spec is None:
            continue
        for container in spec.get("containers", []) + spec.get("initContainers", []):
            name, tag, digest = split_image(container["image"])
            if name != entry["name"]:
                continue
            name = entry.get("newName", name)
            if "digest" in entry:
                container["image"] = f"{name}@{entry['digest']}"
                continue
            tag = entry.get("newTag", tag)
            container["image"] = (
                name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
            )


def _finalize(objs: list[Obj]) -> list[Obj]:
    renamed: dict[str, str] = {}
    for obj in objs:
        base = obj.pop(_GENERATED, None)
        if base is None:
            continue
        digest = hashlib.sha256(
            json.dumps({"data": obj["data"], "name": base}, sort_keys=True).encode()
        ).hexdigest()
        obj["metadata"]["name"] = f"{base}-{digest[:10]}"
        renamed[base] = obj["metadata"]["name"]
    config_maps = {o["metadata"]["name"] for o in objs if o["kind"] == "ConfigMap"}

    def rename(ref: Obj, where: str) -> None:
        ref["name"] = renamed.get(ref["name"], ref["name"])
        if ref["name"] not in config_maps and not ref.get("optional"):
            raise KustomizeError(
                f"{where} refers to a ConfigMap {ref['name']} that is not rendered"
            )

    for obj in objs:
        spec = pod_spec(obj)
        if spec is None:
            continue
        where = f"{obj['kind']} {obj['metadata']['name']}"
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                rename(volume["configMap"], where)
            for source in volume.get("projected", {}).get("sources", []):
                if "configMap" in source:
                    rename(source["configMap"], where)
        for container in spec.get("containers", []) + spec.get("initContainers", []):
            for env_from in container.get("envFrom", []):
                if "configMapRef" in env_from:
                    rename(env_from["configMapRef"], where)
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("configMapKeyRef")
                if ref:
                    rename(ref, where)
    return objs
