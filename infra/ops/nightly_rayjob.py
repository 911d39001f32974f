"""Create tonight's RayJob unless the last one is still active; keep the newest finished ones.

    python /opt/tng/ops/nightly_rayjob.py /manifests/rayjob.yaml [--keep 14]

Run by infra/kuberay-nightly-cronjob.yaml in the project's own image (Python and PyYAML, no kubectl),
with the pod's service account against the Kubernetes API. It exits 1, so that the Job fails where
alerts see it, when a RayJob with the manifest's `app` label is still active (two runs must not
archive the same keys at once) and when the API refuses a request.
"""
from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, Optional

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# KubeRay's JobDeploymentStatus values after which a RayJob holds no cluster and runs nothing. Any
# other value, empty (just created) and unknown ones included, counts as active: skipping a night is
# recoverable, two runs over one archive are not.
FINISHED = {"Complete", "Failed", "ValidationFailed"}

Api = Callable[[str, str, Optional[dict]], dict]  # (method, path, body) -> JSON reply


def in_cluster_api() -> Api:
    """A JSON client for the API server, authenticated as the pod's service account."""
    host = os.environ["KUBERNETES_SERVICE_HOST"]
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    token = (SERVICE_ACCOUNT / "token").read_text().strip()
    ctx = ssl.create_default_context(cafile=str(SERVICE_ACCOUNT / "ca.crt"))

    def call(method: str, path: str, body: dict | None = None) -> dict:
        req = urllib.request.Request(f"https://{host}:{port}{path}", method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/json", "Accept": "application/json"})
        with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
            return json.loads(r.read() or b"{}")

    return call


def status(item: dict) -> str:
    return (item.get("status") or {}).get("jobDeploymentStatus") or ""


def active(items: list[dict]) -> list[str]:
    """Names of the RayJobs that may still be running."""
    return [i["metadata"]["name"] for i in items if status(i) not in FINISHED]


def to_prune(items: list[dict], keep: int) -> list[str]:
    """Names of the finished RayJobs beyond the newest `keep` finished ones (the records to delete)."""
    done = sorted((i for i in items if status(i) in FINISHED), key=lambda i: i["metadata"]["creationTimestamp"])
    return [i["metadata"]["name"] for i in done[:max(0, len(done) - keep)]]


def nightly(manifest: dict, namespace: str, api: Api, keep: int) -> int:
    app = (manifest.get("metadata", {}).get("labels") or {}).get("app")
    if manifest.get("kind") != "RayJob" or not app:
        print("nightly: the manifest must be a RayJob with an `app` label", file=sys.stderr)
        return 1
    base = f"/apis/ray.io/v1/namespaces/{namespace}/rayjobs"
    items = api("GET", f"{base}?{urllib.parse.urlencode({'labelSelector': f'app={app}'})}", None)["items"]
    busy = active(items)
    if busy:
        print(f"nightly: not starting tonight's run: {', '.join(busy)} is still active "
              f"({', '.join(status(i) or 'new' for i in items if i['metadata']['name'] in busy)})", file=sys.stderr)
        return 1
    created = api("POST", base, manifest)
    print(f"nightly: created rayjob/{created['metadata']['name']}")
    for name in to_prune(items, keep):
        api("DELETE", f"{base}/{name}", None)
        print(f"nightly: deleted old rayjob/{name}")
    return 0


def main(argv: list[str] | None = None) -> int:
    import yaml

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("manifest", help="the RayJob to create (YAML)")
    ap.add_argument("--keep", type=int, default=14, help="finished RayJob records to keep")
    a = ap.parse_args(argv)
    manifest: Any = yaml.safe_load(Path(a.manifest).read_text())
    namespace = (SERVICE_ACCOUNT / "namespace").read_text().strip()
    try:
        return nightly(manifest, namespace, in_cluster_api(), a.keep)
    except urllib.error.HTTPError as e:
        print(f"nightly: {e.code} {e.reason}: {e.read().decode(errors='replace')[:500]}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
