"""cluster/: every manifest parses, and the fields the jobs rely on hold.

Entry points exist and accept their flags (the jobs' own argparse parsers), paths live on the
shared mount, GPU groups give what --gpus-per-worker asks, Ray pins equal pyproject's, runtime
envs are valid Ray runtime envs that merge with the jobs' ray.init, and the launcher YAML passes
Ray's own schema. Pure parsing: no Ray is started and no cluster is contacted.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import re
import shlex
import sys
import tomllib
from pathlib import PurePosixPath
from types import ModuleType

import pytest
import yaml

from tests.conftest import REPO

CLUSTER = REPO / "cluster"
KUBERAY = CLUSTER / "kuberay"
SHARED = PurePosixPath("/mnt/shared")
JOBS = {"jobs/ingest.py", "jobs/pretrain.py"}
# Flags whose value is a storage location the job reads or writes (local paths must be shared).
PATH_FLAGS = {"jobs/ingest.py": ("--input", "--output"), "jobs/pretrain.py": ("--clips", "--run-dir")}


# --- helpers -----------------------------------------------------------------------------------

def pyproject_deps() -> list[str]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]


def ray_version() -> str:
    (pin,) = [d for d in pyproject_deps() if re.match(r"ray(\[|=)", d)]
    return pin.split("==")[1]


def non_ray_pins() -> list[str]:
    return [d for d in pyproject_deps() if not re.match(r"ray(\[|=)", d)]


def load_all(path) -> list[dict]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs, f"{path} holds no YAML document"
    return docs


def kube_docs(kind: str) -> list[dict]:
    return [d for f in sorted(KUBERAY.glob("*.yaml")) for d in load_all(f) if d.get("kind") == kind]


def job_module(script: str) -> ModuleType:
    name = "cluster_test_" + script.replace("/", "_").removesuffix(".py")
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / script)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def split_entrypoint(entrypoint: str) -> tuple[str, list[str]]:
    argv = shlex.split(entrypoint)
    assert argv[0] == "python", entrypoint
    return argv[1], argv[2:]


def flag_values(args: list[str], flag: str) -> list[str]:
    """Values given to `flag` (nargs='+' aware: everything up to the next --flag)."""
    values: list[str] = []
    for i, a in enumerate(args):
        if a == flag:
            for v in args[i + 1:]:
                if v.startswith("--"):
                    break
                values.append(v)
        elif a.startswith(flag + "="):
            values.append(a.split("=", 1)[1])
    return values


def under_shared(path: str) -> bool:
    p = PurePosixPath(path)
    return p.is_absolute() and ".." not in p.parts and (p == SHARED or SHARED in p.parents)


def shared_mounts(pod_spec: dict) -> list[str]:
    """mountPath of every container mount of a PVC volume in this pod spec."""
    pvc_volumes = {v["name"]: v["persistentVolumeClaim"]["claimName"]
                   for v in pod_spec.get("volumes", []) if "persistentVolumeClaim" in v}
    return [m["mountPath"] for c in pod_spec["containers"] for m in c.get("volumeMounts", [])
            if m["name"] in pvc_volumes]


def pvc_claims(pod_spec: dict) -> set[str]:
    return {v["persistentVolumeClaim"]["claimName"] for v in pod_spec.get("volumes", []) if "persistentVolumeClaim" in v}


def images(pod_spec: dict) -> list[str]:
    return [c["image"] for c in pod_spec["containers"]]


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def gpu_limit(pod_spec: dict) -> int:
    return sum(int(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0)) for c in pod_spec["containers"])


def the_cluster() -> dict:
    (cluster,) = kube_docs("RayCluster")
    return cluster


def rayjobs() -> dict[str, dict]:
    jobs = {}
    for doc in kube_docs("RayJob"):
        script, _ = split_entrypoint(doc["spec"]["entrypoint"])
        jobs[script] = doc
    return jobs


def check_runtime_env(env: dict) -> None:
    """A valid Ray runtime env whose pip list is pyproject's pins and that merges with the jobs' ray.init."""
    from ray.runtime_env import RuntimeEnv
    from ray.runtime_env.runtime_env import _merge_runtime_env

    from pipelines.runtime.cluster import WORKER_ENV

    assert "working_dir" in env
    env = copy.deepcopy(env)
    if under_shared(env["working_dir"]):  # a path that exists on the submitter pod only: check with the checkout
        env["working_dir"] = str(REPO)
    RuntimeEnv(**copy.deepcopy(env))  # Ray's own validation of every field (a local working_dir must exist)
    pip = env["pip"]
    packages = pip["packages"] if isinstance(pip, dict) else pip
    assert sorted(packages) == sorted(non_ray_pins())
    assert not any(p.startswith("ray") for p in packages), "Ray comes from the image, not pip"
    # jobs call ray.init(runtime_env={"env_vars": WORKER_ENV}); Ray refuses to merge a job env
    # that sets the same variables (or any other top-level field twice).
    assert _merge_runtime_env(RuntimeEnv(**copy.deepcopy(env)), RuntimeEnv(env_vars=WORKER_ENV)) is not None


# --- every file parses ---------------------------------------------------------------------------

def test_every_manifest_parses_and_the_expected_files_exist():
    found = {p.relative_to(CLUSTER).as_posix() for p in CLUSTER.rglob("*.yaml")}
    assert {"ray-cluster.yaml", "runtime_env.yaml", "kuberay/pvc.yaml", "kuberay/raycluster.yaml",
            "kuberay/rayjob-ingest.yaml", "kuberay/rayjob-pretrain.yaml"} <= found
    for rel in found:
        for doc in load_all(CLUSTER / rel):
            assert isinstance(doc, dict), rel
    for doc in (d for f in KUBERAY.glob("*.yaml") for d in load_all(f)):
        assert {"apiVersion", "kind", "metadata", "spec"} <= doc.keys()
        if doc["kind"] in ("RayCluster", "RayJob"):
            assert doc["apiVersion"] == "ray.io/v1"
    assert set(rayjobs()) == JOBS


# --- pins ---------------------------------------------------------------------------------------

def test_requirements_txt_equals_pyproject_pins():
    lines = [line.strip() for line in (CLUSTER / "requirements.txt").read_text().splitlines()]
    reqs = [line for line in lines if line and not line.startswith("#")]
    assert len(reqs) == len(set(reqs))
    assert sorted(reqs) == sorted(non_ray_pins())
    assert all("==" in r for r in reqs)


def test_every_ray_image_and_version_is_pyprojects_ray():
    version = ray_version()
    assert version == "2.60.0"
    texts = {p: p.read_text() for p in [*CLUSTER.rglob("*.yaml"), CLUSTER / "Dockerfile"]}
    tags = [(p.name, m) for p, t in texts.items() for m in re.findall(r"rayproject/ray:(\S+)", t)]
    assert len(tags) >= 6
    for name, tag in tags:
        assert re.fullmatch(re.escape(version) + r"-py311(-gpu)?", tag), (name, tag)
    assert the_cluster()["spec"]["rayVersion"] == version
    assert re.search(r"^FROM rayproject/ray:" + re.escape(version) + r"-py311-gpu$", texts[CLUSTER / "Dockerfile"], re.MULTILINE)


# --- KubeRay ------------------------------------------------------------------------------------

def test_raycluster_shares_one_rwx_claim_at_the_same_path_on_every_pod():
    (pvc,) = kube_docs("PersistentVolumeClaim")
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]
    spec = the_cluster()["spec"]
    pods = [spec["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in spec["workerGroupSpecs"]]
    for pod in pods:
        assert pvc_claims(pod) == {pvc["metadata"]["name"]}
        assert shared_mounts(pod) == [str(SHARED)]
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"


def test_gpu_group_requests_gpus_that_fit_the_pretrain_job():
    spec = the_cluster()["spec"]
    gpu_groups = [g for g in spec["workerGroupSpecs"] if gpu_limit(g["template"]["spec"]) > 0]
    assert gpu_groups, "no worker group asks for nvidia.com/gpu"
    assert any(gpu_limit(g["template"]["spec"]) == 0 for g in spec["workerGroupSpecs"]), "a CPU group for ingest"
    for g in gpu_groups:
        pod = g["template"]["spec"]
        for c in pod["containers"]:
            res = c["resources"]
            assert res["requests"].get("nvidia.com/gpu") == res["limits"]["nvidia.com/gpu"]
        assert all(i.endswith("-gpu") for i in images(pod))
        assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
    assert spec["enableInTreeAutoscaling"] is True

    job = job_module("jobs/pretrain.py")
    _, args = split_entrypoint(rayjobs()["jobs/pretrain.py"]["spec"]["entrypoint"])
    ns = job.parse_args(args)
    assert ns.gpus_per_worker >= 1 and ns.workers >= 1
    # one Ray Train worker fits in one pod (GPUs and CPUs), and the groups can hold all of them
    fitting = [g for g in gpu_groups if gpu_limit(g["template"]["spec"]) >= ns.gpus_per_worker
               and float(g["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"]) >= ns.cpus_per_worker]
    assert fitting
    assert sum(g["maxReplicas"] * int(gpu_limit(g["template"]["spec"]) // ns.gpus_per_worker) for g in fitting) >= ns.workers


@pytest.mark.parametrize("script", sorted(JOBS))
def test_rayjob_entrypoint_exists_and_its_flags_parse(script, monkeypatch):
    doc = rayjobs()[script]
    got_script, args = split_entrypoint(doc["spec"]["entrypoint"])
    assert (REPO / got_script).is_file()
    job = job_module(script)
    parsers: list[argparse.ArgumentParser] = []
    real_parse_args = argparse.ArgumentParser.parse_args

    def spy(self, *a, **k):
        parsers.append(self)
        return real_parse_args(self, *a, **k)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", spy)
    try:
        ns = job.parse_args(args)  # the job's own parser
    except SystemExit as exc:  # argparse: unknown flag, bad choice or type, missing required flag
        pytest.fail(f"{script} rejects the RayJob's arguments {args}: exit {exc.code}")
    (parser,) = parsers
    # every flag is spelled out exactly (argparse would also accept an abbreviation)
    flags = {a.split("=", 1)[0] for a in args if a.startswith("--")}
    known = {s for action in parser._actions for s in action.option_strings}
    assert flags and flags <= known, flags - known
    if script == "jobs/pretrain.py":
        config = job.config_from_args(ns)  # the config the job would train with is valid
        assert config.gpus_per_worker == ns.gpus_per_worker and config.preset == "x3d_m"
        assert config.run_dir.startswith(str(SHARED / "runs") + "/")
    else:
        assert ns.output == str(SHARED / "clips")


@pytest.mark.parametrize("script", sorted(JOBS))
def test_rayjob_storage_paths_are_on_the_shared_mount(script):
    doc = rayjobs()[script]
    spec = doc["spec"]
    _, args = split_entrypoint(spec["entrypoint"])
    cluster = the_cluster()
    assert spec["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    assert "rayClusterSpec" not in spec and not spec.get("shutdownAfterJobFinishes", False)
    for flag in PATH_FLAGS[script]:
        values = flag_values(args, flag)
        assert values, f"{script}: {flag} missing"
        for v in values:
            assert "://" in v or under_shared(v), f"{script} {flag} {v} is not under {SHARED}"
    # clips written by ingest are the clips pretrain reads
    ingest_args = split_entrypoint(rayjobs()["jobs/ingest.py"]["spec"]["entrypoint"])[1]
    pretrain_args = split_entrypoint(rayjobs()["jobs/pretrain.py"]["spec"]["entrypoint"])[1]
    assert flag_values(ingest_args, "--output") == flag_values(pretrain_args, "--clips")
    # the submitter mounts the same claim at the same path (it uploads the working_dir from it)
    sub = spec["submitterPodTemplate"]["spec"]
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]
    assert pvc_claims(sub) == pvc_claims(head)
    assert shared_mounts(sub) == [str(SHARED)]
    assert "command" not in sub["containers"][0], "KubeRay fills in `ray job submit` only without a command"
    assert sub["restartPolicy"] == "Never"


@pytest.mark.parametrize("script", sorted(JOBS))
def test_rayjob_runtime_env(script):
    env = yaml.safe_load(rayjobs()[script]["spec"]["runtimeEnvYAML"])
    check_runtime_env(env)
    assert under_shared(env["working_dir"])


def test_auth_mode_is_the_same_on_every_pod():
    """Head, workers and submitters agree on RAY_AUTH_MODE (a submitter without the head's mode cannot submit)."""
    spec = the_cluster()["spec"]
    pods = [spec["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in spec["workerGroupSpecs"]]
    pods += [j["spec"]["submitterPodTemplate"]["spec"] for j in rayjobs().values()]
    modes = {env_of(c).get("RAY_AUTH_MODE") for p in pods for c in p["containers"]}
    assert modes == {"disabled"}


# --- runtime_env.yaml ---------------------------------------------------------------------------

def test_runtime_env_yaml_is_a_valid_runtime_env_of_the_checkout():
    env = yaml.safe_load((CLUSTER / "runtime_env.yaml").read_text())
    check_runtime_env(env)
    assert env["working_dir"] == "."
    assert {".git/", ".venv/", "out/", "data/", "runs/"} <= set(env["excludes"])


# --- Ray cluster launcher -------------------------------------------------------------------------

def test_launcher_yaml_passes_rays_schema_with_cpu_head_and_gpu_workers():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = load_all(CLUSTER / "ray-cluster.yaml")
    assert len(raw) == 1
    config = raw[0]
    validate_config(copy.deepcopy(config))
    validate_config(prepare_config(copy.deepcopy(config)))  # merged with the provider's defaults
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and head["resources"]["CPU"] == 0
    gpu_types = {n: t for n, t in types.items() if t["resources"].get("GPU", 0) >= 1}
    assert gpu_types and config["head_node_type"] not in gpu_types
    ns = job_module("jobs/pretrain.py").parse_args(
        split_entrypoint(rayjobs()["jobs/pretrain.py"]["spec"]["entrypoint"])[1])
    assert any(t["resources"]["GPU"] >= ns.gpus_per_worker and t["resources"]["CPU"] >= ns.cpus_per_worker
               and t["max_workers"] * (t["resources"]["GPU"] // ns.gpus_per_worker) >= ns.workers
               for t in gpu_types.values())
    assert sum(t.get("max_workers", 0) for t in types.values()) <= config["max_workers"]


def test_launcher_installs_pinned_requirements_and_mounts_shared_storage():
    config = load_all(CLUSTER / "ray-cluster.yaml")[0]
    mounts = config["file_mounts"]
    (remote,) = [r for r, local in mounts.items() if local == "."]
    assert any(f"-r {remote}/cluster/requirements.txt" in c for c in config["setup_commands"])
    assert config["docker"]["image"] == f"rayproject/ray:{ray_version()}-py311-gpu"
    assert f"-v {SHARED}:{SHARED}" in config["docker"]["run_options"]
    init = " ".join(config["initialization_commands"])
    assert re.search(r"mount -t nfs4 .*:/ " + re.escape(str(SHARED)) + r"\b", init)
    for cmds in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        (start,) = [c for c in cmds if "ray start" in c]
        assert "RAY_AUTH_MODE=disabled" in start
    assert "--head" in " ".join(config["head_start_ray_commands"])


# --- README ---------------------------------------------------------------------------------------

def test_readme_walks_through_and_names_only_existing_files():
    text = (CLUSTER / "README.md").read_text()
    assert "RAY_AUTH_MODE=disabled ray start --head" in text.replace(".venv/bin/", "")
    for rel in set(re.findall(r"\bcluster/[\w./-]+\.(?:yaml|txt|md)|cluster/Dockerfile", text)):
        assert (REPO / rel).is_file(), rel
    for job in JOBS:
        assert job in text
    for path in ("/mnt/shared/clips", "/mnt/shared/runs/", "metrics/steps.csv", "checkpoint_step"):
        assert path in text
