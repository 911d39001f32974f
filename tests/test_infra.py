"""Offline checks of infra/: the manifests a platform engineer would run, read as the tools would.

Shape: KubeRay objects against the CRDs of KubeRay v1.7.0 (vendored in tests/data, strict: an unknown
field is an error, as with `kubectl apply --validate=strict`), the cluster launcher's config against
the schema in the ray wheel. Meaning: the rules a schema cannot see (one image per Ray cluster, pinned
by digest; replicas within bounds; the actors asked for fit the workers; the head kept to the driver;
deadlines; nothing installed at boot; reproducible images). Each rule is a function returning its
problems, run on the real files and, in the regression tests at the end, on the old shapes it exists
to catch. No network, no Ray started.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import importlib.metadata
import importlib.util
import json
import math
import re
import shlex
import tomllib
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
CRDS = ROOT / "tests" / "data" / "kuberay-crds-v1.7.0"  # upstream's files, unmodified: SOURCE.md there
CRD_FILES = {"RayJob": "ray.io_rayjobs.yaml", "RayCronJob": "ray.io_raycronjobs.yaml"}  # the kinds checked
RAY_SCHEMA = Path(importlib.util.find_spec("ray").origin).parent / "autoscaler" / "ray-schema.json"
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
TASK_RESOURCE = "tng_task"  # slot resource for load/write tasks: on workers, never on the head
DAY_S = 24 * 3600
Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: the CRDs are megabytes

Doc = dict[str, Any]


# --- loading -----------------------------------------------------------------------------------

def load_module(path: Path) -> ModuleType:
    """Import one of infra/'s scripts by path (they are not a package)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


nightly_rayjob = load_module(INFRA / "ops" / "nightly_rayjob.py")
make_lock = load_module(INFRA / "make_lock.py")


@lru_cache
def infra_docs() -> list[tuple[str, Doc]]:
    """(file name, document) for every YAML document in infra/*.yaml."""
    return [(p.name, d) for p in sorted(INFRA.glob("*.yaml"))
            for d in yaml.load_all(p.read_text(), Loader=Loader) if d is not None]


def docs(kind: str) -> list[tuple[str, Doc]]:
    return [(f, d) for f, d in infra_docs() if d.get("kind") == kind]


def one(file: str, kind: str) -> Doc:
    (doc,) = [d for f, d in docs(kind) if f == file]
    return doc


def launcher() -> Doc:
    return yaml.load((INFRA / "ray-cluster.yaml").read_text(), Loader=Loader)


def strict(schema: Any) -> Any:
    """The schema with unknown fields forbidden wherever Kubernetes would prune them.

    The API server drops a field a CRD does not declare (a typo such as `minReplica` vanishes and the
    default applies); plain jsonschema accepts it. Strict field validation rejects it: so do we."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) if k in ("items", "anyOf", "allOf", "oneOf", "not", "additionalProperties") else v
           for k, v in schema.items()}
    if "properties" in schema:
        out["properties"] = {k: strict(v) for k, v in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    return out


@lru_cache
def crd_validator(kind: str) -> jsonschema.protocols.Validator:
    path = CRDS / CRD_FILES[kind]
    if not path.exists():
        pytest.fail(f"{path} is missing: the tests' copy of KubeRay's {kind} CRD is part of the repository "
                    f"(tests/data/{CRDS.name}/SOURCE.md says where it comes from); restore it from Git")
    crd = yaml.load(path.read_text(), Loader=Loader)
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return jsonschema.Draft7Validator(strict(version["schema"]["openAPIV3Schema"]))


def crd_errors(doc: Doc) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in crd_validator(doc["kind"]).iter_errors(doc)]


# --- facts about a RayJob ------------------------------------------------------------------------

def groups(cluster: Doc) -> Iterator[tuple[str, Doc]]:
    """('head' or the group name, group spec) for the head and every worker group."""
    yield "head", cluster["headGroupSpec"]
    for g in cluster.get("workerGroupSpecs", []):
        yield g["groupName"], g


def ray_container(group: Doc) -> Doc:
    return group["template"]["spec"]["containers"][0]  # KubeRay runs Ray in the first container


def quantity(v: Any) -> float:
    """A Kubernetes CPU/GPU quantity: 4, "4", "500m"."""
    s = str(v)
    return float(s[:-1]) / 1000 if s.endswith("m") else float(s)


def pod_cpus(group: Doc) -> float:
    """CPUs Ray sees on one pod of the group: num-cpus, else the container's CPU limit (as KubeRay)."""
    params = group.get("rayStartParams") or {}
    if "num-cpus" in params:
        return float(params["num-cpus"])
    return quantity(ray_container(group).get("resources", {}).get("limits", {}).get("cpu", 0))


def pod_gpus(group: Doc) -> float:
    params = group.get("rayStartParams") or {}
    if "num-gpus" in params:
        return float(params["num-gpus"])
    return quantity(ray_container(group).get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))


def custom_resources(group: Doc) -> dict[str, float]:
    """rayStartParams.resources, written as KubeRay passes it to `ray start --resources=`."""
    raw = (group.get("rayStartParams") or {}).get("resources")
    return json.loads(shlex.split(raw)[0]) if raw else {}


def pods(group: Doc, autoscaling: bool) -> int:
    """Pods the group runs: replicas kept within [min, max] as the operator does (max if autoscaling)."""
    lo, hi = group.get("minReplicas", 0), group.get("maxReplicas", 2**31 - 1)
    n = hi if autoscaling else min(max(group.get("replicas", 0), lo), hi)
    return n * group.get("numOfHosts", 1)


def compress_args(entrypoint: str) -> argparse.Namespace:
    """The `tng compress` arguments inside an entrypoint, parsed by the command's own parser."""
    from tng.jobs.cli import parser

    words = shlex.split(entrypoint)
    at = next(i for i in range(len(words) - 1) if words[i:i + 2] == ["tng", "compress"])
    return parser().parse_args(words[at + 1:])


def actor_cpus(cluster_cpus: float, workers: int) -> float:
    """The CPUs each codec actor reserves on a cluster of that many CPUs: pipeline/run.py's actor_pool,
    the sizing rule of every job (its real code)."""
    import ray

    from tng.pipeline import run

    real = ray.cluster_resources
    ray.cluster_resources = lambda: {"CPU": cluster_cpus}
    try:
        return run.actor_pool(workers, on_cluster=True).num_cpus
    finally:
        ray.cluster_resources = real


# --- rules -----------------------------------------------------------------------------------------

def image_problems(rayjob: Doc) -> list[str]:
    """One Ray image for every group of the cluster (Ray refuses nodes whose Python differs), by digest."""
    images = {ray_container(g)["image"] for _, g in groups(rayjob["spec"]["rayClusterSpec"])}
    problems = [f"{len(images)} images in one Ray cluster: {sorted(images)}"] if len(images) > 1 else []
    return problems + [f"{i} is not pinned by digest" for i in sorted(images) if not DIGEST.search(i)]


def replica_problems(cluster: Doc) -> list[str]:
    """replicas outside [minReplicas, maxReplicas] is silently moved back by the operator."""
    problems = []
    for name, g in list(groups(cluster))[1:]:
        lo, n, hi = g.get("minReplicas", 0), g.get("replicas", 0), g.get("maxReplicas", 2**31 - 1)
        if not lo <= n <= hi:
            problems.append(f"group {name}: replicas {n} outside [minReplicas {lo}, maxReplicas {hi}]")
    return problems


def sizing_problems(rayjob: Doc) -> list[str]:
    """The actors `tng compress` asks for must fit on the worker groups as the operator runs them."""
    spec = rayjob["spec"]
    cluster = spec["rayClusterSpec"]
    a = compress_args(spec["entrypoint"])
    autoscaling = bool(cluster.get("enableInTreeAutoscaling"))
    workers = [(g, pods(g, autoscaling)) for _, g in list(groups(cluster))[1:]]
    if a.gpus_per_worker:
        need = a.workers * a.gpus_per_worker
        have = sum(n * pod_gpus(g) for g, n in workers)
        fit = sum(n * math.floor(pod_gpus(g) / a.gpus_per_worker + 1e-9) for g, n in workers)
        if need > have or fit < a.workers:
            return [f"--workers {a.workers} --gpus-per-worker {a.gpus_per_worker} asks for {need:g} GPUs "
                    f"({a.workers} actors); the worker groups have {have:g} GPUs, room for {fit} actors"]
        return []
    cpus = pod_cpus(cluster["headGroupSpec"]) + sum(n * pod_cpus(g) for g, n in workers)
    threads = actor_cpus(cpus, a.workers)  # CPUs each actor reserves on a cluster
    fit = sum(n * math.floor(pod_cpus(g) / threads) for g, n in workers)
    if fit < a.workers:
        return [f"--workers {a.workers} actors of {threads} CPUs each ({cpus:g} CPUs // {a.workers}): "
                f"the worker pods have room for {fit}"]
    return []


def head_problems(cluster: Doc) -> list[str]:
    """The head runs the driver only: no CPUs for actors/tasks, no task slots; workers have the slots."""
    problems = []
    head = cluster["headGroupSpec"]
    if (head.get("rayStartParams") or {}).get("num-cpus") != "0":
        problems.append("head: rayStartParams num-cpus is not \"0\", so actors and tasks can land on it")
    if custom_resources(head).get(TASK_RESOURCE):
        problems.append(f"head: offers {TASK_RESOURCE}, the load/write tasks' slots")
    for name, g in list(groups(cluster))[1:]:
        if not custom_resources(g).get(TASK_RESOURCE, 0) >= 1:
            problems.append(f"group {name}: offers no {TASK_RESOURCE}: load/write tasks have no place but the head")
    return problems


def rayjob_deadline_problems(rayjob: Doc) -> list[str]:
    spec = rayjob["spec"]
    deadline = spec.get("activeDeadlineSeconds")
    problems = [] if deadline and deadline < DAY_S else [
        f"activeDeadlineSeconds {deadline}: a hung run must end before the next night's"]
    if not spec.get("shutdownAfterJobFinishes"):
        problems.append("shutdownAfterJobFinishes is not true: the cluster outlives the job")
    return problems


def cronjob_problems(cron: Doc, project_image: str) -> list[str]:
    """The nightly CronJob: a deadline on its Job (else Forbid blocks every later night), our image."""
    problems = []
    job = cron["spec"]["jobTemplate"]["spec"]
    if not job.get("activeDeadlineSeconds") or job["activeDeadlineSeconds"] >= DAY_S:
        problems.append(f"jobTemplate activeDeadlineSeconds {job.get('activeDeadlineSeconds')}: with "
                        f"concurrencyPolicy {cron['spec'].get('concurrencyPolicy')} a stuck Job skips every later night")
    for c in job["template"]["spec"]["containers"]:
        if c["image"] != project_image:
            problems.append(f"container {c['name']}: image {c['image']} is not the project's ({project_image})")
        if not DIGEST.search(c["image"]):
            problems.append(f"container {c['name']}: image {c['image']} is not pinned by digest")
    return problems


def version_problems(doc: Doc, checked: str) -> list[str]:
    """The KubeRay version a manifest assumes, stated where a program can read it."""
    ann = doc["metadata"].get("annotations") or {}
    lo, seen = ann.get("tng/kuberay-min-version"), ann.get("tng/kuberay-checked-version")
    if not lo or not seen:
        return [f"{doc['kind']} {doc['metadata'].get('name') or doc['metadata'].get('generateName')}: "
                "no tng/kuberay-min-version and tng/kuberay-checked-version annotations"]
    problems = [] if Version(lo) <= Version(seen) else [f"min version {lo} above the checked {seen}"]
    return problems + ([] if seen == checked else [f"checked against KubeRay {seen}, the CRDs here are {checked}"])


SETUP_KEYS = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands")


def launcher_problems(config: Doc) -> list[str]:
    """infra/ray-cluster.yaml: one pinned image, an AMI and S3 rights on every node, no installs at boot."""
    problems = []
    docker = config.get("docker", {})
    images = {docker.get(k) for k in ("image", "head_image", "worker_image") if docker.get(k)}
    images |= {t["docker"]["worker_image"] for t in config["available_node_types"].values()
               if t.get("docker", {}).get("worker_image")}
    if len(images) != 1:
        problems.append(f"{len(images)} images in one Ray cluster: {sorted(images)}")
    problems += [f"{i} is not pinned by digest" for i in sorted(images) if not DIGEST.search(i)]
    amis = set()
    for name, t in config["available_node_types"].items():
        nc = t["node_config"]
        if not re.fullmatch(r"ami-[0-9a-f]{8,17}", str(nc.get("ImageId", ""))):
            problems.append(f"{name}: no ImageId: the launcher falls back to an AMI with an old NVIDIA driver")
        amis.add(nc.get("ImageId"))
        if "IamInstanceProfile" not in nc:
            problems.append(f"{name}: no IamInstanceProfile: its tasks cannot read SRC or write DST")
        if t.get("min_workers", 0) > t.get("max_workers", 0) and name != config["head_node_type"]:
            problems.append(f"{name}: min_workers above max_workers")
    if len(amis) > 1:
        problems.append(f"node types on different AMIs: {sorted(map(str, amis))}")
    head = config["available_node_types"][config["head_node_type"]]
    if head["resources"].get("CPU") != 0 or head["resources"].get(TASK_RESOURCE):
        problems.append(f"head: resources {head['resources']}: CPU must be 0 and no {TASK_RESOURCE}")
    for name, t in config["available_node_types"].items():
        if name != config["head_node_type"] and not t["resources"].get(TASK_RESOURCE, 0) >= 1:
            problems.append(f"{name}: offers no {TASK_RESOURCE}")
    worker_max = sum(t.get("max_workers", 0) for n, t in config["available_node_types"].items()
                     if n != config["head_node_type"])
    if worker_max > config["max_workers"]:
        problems.append(f"node types allow {worker_max} workers, max_workers is {config['max_workers']}")
    for key in SETUP_KEYS:
        if key not in config:  # absent keys take the AWS defaults, which pip install on the head
            problems.append(f"{key} absent: the launcher's defaults apply")
    commands = [c for k in SETUP_KEYS for c in config.get(k) or []]
    commands += [c for t in config["available_node_types"].values() for k in SETUP_KEYS for c in t.get(k) or []]
    problems += [f"installs at node boot: {c!r}" for c in commands if re.search(r"\bpip3? install\b", c)]
    return problems


def dockerfile_problems(text: str, torch_pin: str) -> list[str]:
    """Base images by digest, the locked dependency layer before the source, no pip install that floats."""
    lines = re.sub(r"\\\n", " ", text).splitlines()
    instr = [(i, line.split(None, 1)[0].upper(), line.split(None, 1)[1] if len(line.split(None, 1)) > 1 else "")
             for i, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("#")]
    problems = [f"FROM {arg} is not pinned by digest" for _, op, arg in instr
                if op == "FROM" and not DIGEST.search(arg.split()[0])]
    lock_at = [i for i, op, arg in instr if op == "RUN" and re.search(r"-r \S*requirements\.lock", arg)]
    source_at = [i for i, op, arg in instr
                 if op == "COPY" and re.search(r"(^|\s)(pyproject\.toml|codec|evaluation|jobs|pipeline)(\s|$)", arg)]
    if not lock_at:
        problems.append("no dependency layer installs infra/requirements.lock")
    elif source_at and min(source_at) < min(lock_at):
        problems.append("the source is copied before the dependency layer: every code change reinstalls it")
    for _, op, arg in instr:
        for cmd in arg.split("&&") if op == "RUN" else []:
            if not re.search(r"\bpip3? install\b", cmd):
                continue
            words = shlex.split(cmd)
            words = words[words.index("install") + 1:]
            targets = [w for i, w in enumerate(words) if not w.startswith("-") and not (
                i and words[i - 1] in ("-r", "--index-url", "-i", "--extra-index-url", "-c"))]
            if "-r" in words and not {"--require-hashes", "--no-deps"} <= set(words):
                problems.append(f"{cmd.strip()!r}: a requirements file without --require-hashes --no-deps")
            for t in targets:
                if t == "." and "--no-deps" not in words:
                    problems.append(f"{cmd.strip()!r}: the project installed with its dependencies unlocked")
                elif t != "." and not re.fullmatch(r"[A-Za-z0-9_.-]+==[^=*]+", t):
                    problems.append(f"{cmd.strip()!r}: {t} floats")
                elif t.startswith("torch==") and t.split("==")[1].split("+")[0] != torch_pin:
                    problems.append(f"{t}: pyproject.toml pins torch=={torch_pin}")
    return problems


def parse_lock(text: str) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of infra/requirements.lock."""
    out = {}
    for entry in re.sub(r"\\\n", " ", text).splitlines():
        entry = entry.split("#", 1)[0].strip()
        if not entry:
            continue
        m = re.fullmatch(r"([a-z0-9-]+)==(\S+)((?:\s+--hash=sha256:[0-9a-f]{64})*)", entry)
        assert m, f"lock line not `name==version --hash=sha256:...`: {entry!r}"
        out[m[1]] = (m[2], re.findall(r"sha256:[0-9a-f]{64}", m[3]))
    return out


@lru_cache
def pyproject() -> Doc:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def torch_pin() -> str:
    (req,) = [Requirement(r) for r in pyproject()["project"]["dependencies"] if r.startswith("torch")]
    return str(req.specifier).removeprefix("==")


# --- shape ------------------------------------------------------------------------------------------

def test_every_infra_yaml_is_known_kinds() -> None:
    kinds = sorted({d.get("kind", "<launcher>") for _, d in infra_docs() if "cluster_name" not in d})
    assert kinds == ["CronJob", "RayJob", "Role", "RoleBinding", "ServiceAccount"], kinds
    assert {f for f, _ in docs("RayJob")} == {"kuberay-rayjob.yaml", "kuberay-rayjob-gpu.yaml"}


@pytest.mark.parametrize("file,doc", [pytest.param(f, d, id=f) for f, d in infra_docs() if d.get("kind") in CRD_FILES])
def test_kuberay_objects_match_the_crds(file: str, doc: Doc) -> None:
    assert doc["apiVersion"] == "ray.io/v1"
    assert crd_errors(doc) == []


def test_the_crd_check_is_strict() -> None:
    # A misspelt field would be dropped by the API server and its default used: it must fail here.
    job = copy.deepcopy(one("kuberay-rayjob.yaml", "RayJob"))
    job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["minReplica"] = 4
    job["spec"]["activeDeadlineSecond"] = 60
    errors = crd_errors(job)
    assert len(errors) == 2 and all("additional properties" in e.lower() for e in errors), errors


def test_the_vendored_crds_are_upstreams_files() -> None:
    # tests/data holds KubeRay's files unmodified (so a clone needs nothing beside it): each one has
    # the size and sha256 its SOURCE.md records, every kind checked has one, and no file goes unlisted.
    rows = re.findall(r"^\| `([^`]+)` \| (\d+) \| `([0-9a-f]{64})` \|$", (CRDS / "SOURCE.md").read_text(), re.M)
    listed = {name: (int(size), sha) for name, size, sha in rows}
    assert set(CRD_FILES.values()) <= set(listed), listed
    assert {p.name for p in CRDS.iterdir()} - {"SOURCE.md", ".gitattributes"} == set(listed)
    for name, (size, sha) in listed.items():
        data = (CRDS / name).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (size, sha), name


def test_rayjob_spec_is_a_valid_raycronjob_template() -> None:
    # KubeRay 1.6+ RayCronJob (alpha): the same spec must work there if the CronJob is replaced.
    cron = one("kuberay-nightly-cronjob.yaml", "CronJob")
    for file, job in docs("RayJob"):
        raycron = {"apiVersion": "ray.io/v1", "kind": "RayCronJob", "metadata": {"name": "tng-compress-nightly"},
                   "spec": {"schedule": cron["spec"]["schedule"], "timeZone": cron["spec"]["timeZone"],
                            "jobTemplate": job["spec"]}}
        assert crd_errors(raycron) == [], file


def test_plain_kubernetes_objects() -> None:
    cron = one("kuberay-nightly-cronjob.yaml", "CronJob")
    assert cron["apiVersion"] == "batch/v1"
    spec = cron["spec"]
    assert len(spec["schedule"].split()) == 5 and spec["concurrencyPolicy"] in ("Allow", "Forbid", "Replace")
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] in ("Never", "OnFailure")
    (sa,) = [d["metadata"]["name"] for _, d in docs("ServiceAccount")]
    (role,) = [d for _, d in docs("Role")]
    (binding,) = [d for _, d in docs("RoleBinding")]
    assert pod["serviceAccountName"] == sa
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    assert {"kind": "ServiceAccount", "name": sa} in binding["subjects"]
    (rule,) = role["rules"]
    assert rule["apiGroups"] == ["ray.io"] and rule["resources"] == ["rayjobs"]
    assert {"create", "list", "delete"} <= set(rule["verbs"])  # what nightly_rayjob.py calls
    (container,) = pod["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    (volume,) = pod["volumes"]
    manifest = container["command"][container["command"].index("/opt/tng/ops/nightly_rayjob.py") + 1]
    assert manifest.startswith(mounts[volume["name"]] + "/") and volume["configMap"]["name"] == "tng-rayjob"


def test_launcher_config_matches_the_ray_schema() -> None:
    schema = json.loads(RAY_SCHEMA.read_text())
    jsonschema.validate(launcher(), schema)


# --- meaning ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("file", ["kuberay-rayjob.yaml", "kuberay-rayjob-gpu.yaml"])
def test_rayjob_rules(file: str) -> None:
    job = one(file, "RayJob")
    cluster = job["spec"]["rayClusterSpec"]
    assert image_problems(job) == []
    assert replica_problems(cluster) == []
    assert sizing_problems(job) == []
    assert head_problems(cluster) == []
    assert rayjob_deadline_problems(job) == []
    assert version_problems(job, CRDS.name.rsplit("-v", 1)[1]) == []
    (ray_pin,) = [Requirement(r) for r in pyproject()["project"]["optional-dependencies"]["pipeline"]
                  if r.startswith("ray")]
    assert cluster["rayVersion"] == str(ray_pin.specifier).removeprefix("==")


def test_cpu_and_gpu_rayjobs_differ_only_where_they_must() -> None:
    cpu, gpu = one("kuberay-rayjob.yaml", "RayJob"), one("kuberay-rayjob-gpu.yaml", "RayJob")
    a, b = compress_args(cpu["spec"]["entrypoint"]), compress_args(gpu["spec"]["entrypoint"])
    assert a.gpus_per_worker == 0 and b.gpus_per_worker > 0
    same = lambda ns: {k: v for k, v in vars(ns).items() if k not in ("workers", "gpus_per_worker")}  # noqa: E731
    assert same(a) == same(b)
    cpu_image = image_of(cpu)
    assert cpu_image.split("@")[0].endswith("-cpu") and image_of(gpu).split("@")[0].endswith("-gpu")
    assert cpu_image.split(":")[0] == image_of(gpu).split(":")[0]  # one repository, two builds
    for key in ("shutdownAfterJobFinishes", "ttlSecondsAfterFinished", "activeDeadlineSeconds", "submissionMode"):
        assert cpu["spec"][key] == gpu["spec"][key], key
    assert cpu["metadata"] == gpu["metadata"]
    assert cpu["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"] == \
        gpu["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"]


def image_of(rayjob: Doc) -> str:
    return ray_container(rayjob["spec"]["rayClusterSpec"]["headGroupSpec"])["image"]


def test_nightly_cronjob_rules() -> None:
    cron = one("kuberay-nightly-cronjob.yaml", "CronJob")
    assert cronjob_problems(cron, image_of(one("kuberay-rayjob.yaml", "RayJob"))) == []
    assert version_problems(cron, CRDS.name.rsplit("-v", 1)[1]) == []


def test_launcher_rules() -> None:
    assert launcher_problems(launcher()) == []
    config = launcher()
    # The launcher runs the GPU image of the KubeRay GPU job; GPU node types check the driver first.
    assert config["docker"]["image"] == image_of(one("kuberay-rayjob-gpu.yaml", "RayJob"))
    for name, t in config["available_node_types"].items():
        if name.endswith("gpu"):
            assert any("nvidia-smi" in c and "570" in c for c in t["initialization_commands"]), name


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu"])
def test_dockerfile_rules(name: str) -> None:
    text = (INFRA / name).read_text()
    assert dockerfile_problems(text, torch_pin()) == []
    assert "COPY infra/ops" in text  # the entrypoints and the CronJob run /opt/tng/ops/*.py
    # `pip install .` in the image needs every package pyproject lists.
    folders = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values()
    for folder in folders:
        assert re.search(rf"^COPY (--\S+ )*{folder} \./{folder}$", text, re.M), folder


def test_lock_covers_pyproject() -> None:
    lock = parse_lock((INFRA / "requirements.lock").read_text())
    assert all(hashes for _, hashes in lock.values())
    assert "torch" not in lock  # each image installs its own torch build, at pyproject's pin
    for r in map(Requirement, make_lock.direct_requirements(pyproject())):
        name = make_lock.canonical(r.name)
        if name == "torch":
            continue
        assert name in lock, f"{r} is not in infra/requirements.lock: run infra/make_lock.py"
        assert r.specifier.contains(lock[name][0], prereleases=True), f"{r}: the lock has {lock[name][0]}"
    # What Ray itself needs for the extras the images use, on the images' Python.
    env = {"python_version": "3.11", "sys_platform": "linux", "platform_system": "Linux"}
    for extra in ("default", "data", "train"):
        for raw in importlib.metadata.requires("ray") or []:
            r = Requirement(raw)
            if r.marker is None or r.marker.evaluate({**env, "extra": extra}):
                assert make_lock.canonical(r.name) in lock, f"ray[{extra}] needs {r}"


def test_make_lock_keeps_torch_out_and_hashes_in() -> None:
    report = {"install": [
        {"metadata": {"name": n, "version": v}, "download_info": {"archive_info": {"hashes": {"sha256": "ab" * 32}}}}
        for n, v in [("PyYAML", "6.0.4"), ("torch", "2.13.0+cpu"), ("nvidia-cudnn-cu12", "9"), ("ray", "2.60.0")]]}
    text = "\n".join(make_lock.lock_lines(report))
    assert set(parse_lock(text)) == {"pyyaml", "ray"}
    reqs = make_lock.direct_requirements(pyproject())
    assert "ray[default]==2.60.0" in reqs and any(r.startswith("setuptools") for r in reqs)


def test_readme_documents_every_file_and_the_placeholders() -> None:
    readme = (INFRA / "README.md").read_text()
    for p in INFRA.rglob("*"):
        name = str(p.relative_to(INFRA))
        if p.is_file() and name != "README.md" and "__pycache__" not in name:
            assert f"`{name}`" in readme, f"infra/README.md does not mention {name}"
    for needle in ("sha256:" + "0" * 64, "ami-00000000000000000", "123456789012", "make_lock.py",
                   "num-cpus", TASK_RESOURCE, "--max-error-share", "RayCronJob"):
        assert needle in readme, needle


# --- the scripts the manifests run ------------------------------------------------------------------

def test_scheduled_runs_fail_when_images_fail() -> None:
    """tng compress exits 0 when a run completed, whatever share of its images became error rows,
    unless --max-error-share says otherwise: a scheduled run must fail visibly instead."""
    for name in ("kuberay-rayjob.yaml", "kuberay-rayjob-gpu.yaml"):
        assert compress_args(one(name, "RayJob")["spec"]["entrypoint"]).max_error_share < 1, name
    assert "--max-error-share" in (INFRA / "ray-cluster.yaml").read_text()


def test_nightly_rayjob(capsys: pytest.CaptureFixture) -> None:
    manifest = one("kuberay-rayjob.yaml", "RayJob")

    def item(name: str, status: str, t: int) -> Doc:
        return {"metadata": {"name": name, "creationTimestamp": f"2030-01-{t:02d}T02:00:00Z"},
                "status": {"jobDeploymentStatus": status} if status else {}}

    def api_with(items: list[Doc]) -> tuple[list, Any]:
        calls = []

        def api(method: str, path: str, body: Doc | None) -> Doc:
            calls.append((method, path))
            if method == "GET":
                assert "labelSelector=app%3Dtng-compress" in path
                return {"items": items}
            return {"metadata": {"name": "tng-compress-new"}} if method == "POST" else {}
        return calls, api

    finished = [item(f"old{i}", "Complete" if i % 2 else "Failed", i) for i in range(1, 6)]
    calls, api = api_with(finished)
    assert nightly_rayjob.nightly(manifest, "ns", api, keep=3) == 0
    assert [c[0] for c in calls] == ["GET", "POST", "DELETE", "DELETE"]
    assert calls[2][1].endswith("/rayjobs/old1") and calls[3][1].endswith("/rayjobs/old2")
    # Still running, or created a moment ago (no status yet): no second run, and a failed Job.
    for status in ("Running", ""):
        calls, api = api_with(finished + [item("busy", status, 9)])
        assert nightly_rayjob.nightly(manifest, "ns", api, keep=3) == 1
        assert [c[0] for c in calls] == ["GET"]
    assert "busy is still active" in capsys.readouterr().err


# --- regressions: each rule rejects the shape it was written for ---------------------------------------

def test_rules_reject_the_old_gpu_variant() -> None:
    # The old file's commented GPU variant, enabled as it said: CPU group to replicas 0 (minReplicas 4
    # stayed), GPU group on another image than the python:3.11-slim head, --workers 8 on 2 GPUs.
    job = copy.deepcopy(one("kuberay-rayjob-gpu.yaml", "RayJob"))
    cluster = job["spec"]["rayClusterSpec"]
    cpu_group = copy.deepcopy(one("kuberay-rayjob.yaml", "RayJob")["spec"]["rayClusterSpec"]["workerGroupSpecs"][0])
    cpu_group.update(replicas=0, minReplicas=4, maxReplicas=4)
    cluster["workerGroupSpecs"].insert(0, cpu_group)
    ray_container(cluster["headGroupSpec"])["image"] = "python:3.11-slim"
    job["spec"]["entrypoint"] = ("tng compress s3://photos/incoming s3://photos/archive --incremental "
                                 "--workers 8 --batch-size 16 --gpus-per-worker 1")
    assert any("replicas 0 outside" in p for p in replica_problems(cluster))
    assert any("images in one Ray cluster" in p for p in image_problems(job))
    cluster["workerGroupSpecs"].pop(0)
    assert any("asks for 8 GPUs" in p for p in sizing_problems(job))


def test_rules_reject_cpu_actors_that_do_not_fit() -> None:
    job = copy.deepcopy(one("kuberay-rayjob.yaml", "RayJob"))
    job["spec"]["entrypoint"] = "tng compress s3://a s3://b --workers 3"  # 16 // 3 = 5 CPUs > a 4-CPU pod
    assert sizing_problems(job)


def test_rules_reject_the_old_cronjob_and_rayjob_fields() -> None:
    cron = copy.deepcopy(one("kuberay-nightly-cronjob.yaml", "CronJob"))
    del cron["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"]
    cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"] = "bitnami/kubectl:1.31"
    del cron["metadata"]["annotations"]
    problems = cronjob_problems(cron, image_of(one("kuberay-rayjob.yaml", "RayJob")))
    assert len(problems) == 3, problems
    assert version_problems(cron, "1.7.0")
    job = copy.deepcopy(one("kuberay-rayjob.yaml", "RayJob"))
    del job["spec"]["activeDeadlineSeconds"]
    assert rayjob_deadline_problems(job)
    for g in job["spec"]["rayClusterSpec"]["workerGroupSpecs"]:
        g["rayStartParams"] = {}  # the old workers: no slots, so 0-CPU tasks go anywhere, the head too
    assert head_problems(job["spec"]["rayClusterSpec"])
    ray_container(job["spec"]["rayClusterSpec"]["headGroupSpec"])["image"] = "ghcr.io/example/tng:0.1.0"
    for g in job["spec"]["rayClusterSpec"]["workerGroupSpecs"]:
        ray_container(g)["image"] = "ghcr.io/example/tng:0.1.0"
    assert image_problems(job) == ["ghcr.io/example/tng:0.1.0 is not pinned by digest"]


def test_rules_reject_the_old_launcher_config() -> None:
    config = launcher()
    config["docker"]["image"] = "rayproject/ray:2.60.0-py311-cpu"
    for name, t in config["available_node_types"].items():
        del t["node_config"]["ImageId"]
        t["resources"] = {"CPU": 0} if name == config["head_node_type"] else {}
        if name != config["head_node_type"]:
            del t["node_config"]["IamInstanceProfile"]
    config["available_node_types"]["ray.worker.gpu"]["docker"] = {"worker_image": "rayproject/ray:2.60.0-py311-gpu"}
    config["setup_commands"] = ['pip install -q torch==2.13.0 --index-url "$idx"']
    del config["head_setup_commands"]
    problems = "\n".join(launcher_problems(config))
    for needle in ("2 images", "not pinned", "no ImageId", "no IamInstanceProfile", "offers no tng_task",
                   "installs at node boot", "head_setup_commands absent"):
        assert needle in problems, needle


def test_rules_reject_the_old_dockerfile() -> None:
    old = """FROM python:3.11-slim
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY codec ./codec
RUN pip install '.[pipeline]' 'ray[default]==2.60.0' \\
    && tng models
"""
    problems = "\n".join(dockerfile_problems(old, torch_pin()))
    for needle in ("not pinned by digest", "no dependency layer", ".[pipeline] floats"):
        assert needle in problems, needle
    # The new file with the source copied first, as the old one did.
    late = (INFRA / "Dockerfile").read_text().replace("WORKDIR /opt/tng\n", "WORKDIR /opt/tng\nCOPY pyproject.toml ./\n")
    assert any("before the dependency layer" in p for p in dockerfile_problems(late, torch_pin()))
