"""deploy/kuberay-raycluster.yaml is a RayCluster the README's deployment section can point at: it parses (with
PyYAML where installed, else a check of its structure by text), its GPU requests agree with what the server's
actors ask for, and every pod sees the models at one path, read-only on the workers."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "deploy" / "kuberay-raycluster.yaml"
MODELS = "/data/sdgraph/models"


def test_the_manifest_parses_and_fits_the_server() -> None:
    yaml = pytest.importorskip("yaml")
    docs = list(yaml.safe_load_all(MANIFEST.read_text()))
    assert [d["kind"] for d in docs] == ["RayCluster", "Service", "PersistentVolumeClaim", "PersistentVolumeClaim",
                                        "PersistentVolumeClaim"]
    cluster = docs[0]["spec"]
    assert docs[0]["apiVersion"] == "ray.io/v1" and cluster["rayVersion"] == "2.60.0"
    head = {c["name"]: c for c in cluster["headGroupSpec"]["template"]["spec"]["containers"]}
    command = shlex.split(head["sdgraph"]["args"][0].split("exec", 1)[1])
    assert command[:2] == ["sdgraph", "serve"]
    flags = dict(zip(command[2::2], command[3::2]))
    assert flags["--ray"] == "127.0.0.1:6379" and flags["--base-dir"] == "/data/sdgraph"
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"  # no actor on the head
    (group,) = cluster["workerGroupSpecs"]
    worker = group["template"]["spec"]["containers"][0]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == int(group["rayStartParams"]["num-gpus"])
    assert int(flags["--ray-workers"]) == group["replicas"]
    assert float(flags["--ray-gpus"]) <= worker["resources"]["limits"]["nvidia.com/gpu"]
    mounts = {m["mountPath"]: m for m in worker["volumeMounts"]}
    assert mounts[MODELS].get("readOnly") is True
    assert MODELS in {m["mountPath"] for m in head["sdgraph"]["volumeMounts"]}
    claims = {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    used = {v["persistentVolumeClaim"]["claimName"] for spec in
            (cluster["headGroupSpec"]["template"]["spec"], group["template"]["spec"]) for v in spec["volumes"]
            if "persistentVolumeClaim" in v}
    assert used == claims


def test_the_manifest_s_structure_by_text() -> None:
    """What holds without PyYAML: documents, no tabs, and the keys the server relies on."""
    text = MANIFEST.read_text()
    assert "\t" not in text
    assert len(re.findall(r"(?m)^---$", text)) == 4 and re.search(r"(?m)^kind: RayCluster$", text)
    for needle in ("headGroupSpec:", "workerGroupSpecs:", 'num-gpus: "1"', "nvidia.com/gpu: 1",
                   f"mountPath: {MODELS}, readOnly: true", "--ray 127.0.0.1:6379"):
        assert needle in text, needle


def test_the_readme_points_at_it() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "deploy/kuberay-raycluster.yaml" in readme and "ray start --head" in readme
