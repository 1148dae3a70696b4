"""A real Kubernetes control plane for tests: etcd + kube-apiserver on loopback, no nodes.

The binaries come from ``tests/realkube/build.sh`` (pinned versions, cached outside the repo). ``start()``
runs etcd and kube-apiserver on free loopback ports in a temporary directory, configured as a production
cluster would be where it matters to us:

- RBAC (plus the Node authorizer kubeadm clusters run beside it), so least privilege is checked by the real
  authorizer: the admin is a static token in ``system:masters``; ServiceAccounts get TokenRequest tokens;
- ServiceAccount token signing with a key generated per control plane;
- the default admission plugins, PodSecurity and ResourceQuota among them (named explicitly with
  NodeRestriction, so a change of defaults cannot quietly drop them);
- a short compaction interval, and no watch cache: a watch then resumes straight from etcd, so a client
  that fell behind meets a real ``410 Gone`` seconds after compaction instead of after the watch cache's
  window (minutes). ``compact()`` compacts at once for tests that need the 410 now. The price: no
  BOOKMARK events, which only the watch cache sends.

There is no controller-manager: nothing creates a namespace's ``default`` ServiceAccount or fills
ResourceQuota status, so ``create_namespace`` does the former and tests that need quota the latter.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

Json = dict[str, Any]
BUILD_SCRIPT = Path(__file__).with_name("build.sh")
BINARIES = ("etcd", "kube-apiserver")
# How often the apiserver compacts etcd: each pass compacts up to the revision seen one pass earlier, so a
# resourceVersion stays watchable for 10-20 s (ample for list-then-watch on a busy two-core machine).
COMPACTION_INTERVAL = "10s"


class ControlPlaneError(RuntimeError):
    """The control plane could not be built, started or reached; the message names the log to read."""


def required_in_this_run() -> bool:
    """CI must run the real-apiserver tier: there a missing binary is a failure, never a skip."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes") or os.environ.get(
        "BKC_REALKUBE_REQUIRED", ""
    ) in ("1", "true")


def binaries_dir() -> Path:
    """``$BKC_REALKUBE_BIN`` if set, else the cache directory the build script would fill."""
    explicit = os.environ.get("BKC_REALKUBE_BIN")
    if explicit:
        return Path(explicit)
    printed = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--print-dir"], capture_output=True, text=True, check=False, timeout=60
    )
    if printed.returncode != 0:
        raise ControlPlaneError(f"{BUILD_SCRIPT} --print-dir failed: {printed.stderr.strip()[-500:]}")
    return Path(printed.stdout.strip())


def missing_binaries(directory: Path) -> list[str]:
    return [name for name in BINARIES if not os.access(directory / name, os.X_OK)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _make_pki(pki: Path) -> None:
    """A CA, a serving certificate for 127.0.0.1/localhost signed by it, and the ServiceAccount key pair."""
    pki.mkdir(parents=True)
    _openssl("genrsa", "-out", "ca.key", "2048", cwd=pki)
    _openssl(
        "req",
        "-x509",
        "-new",
        "-key",
        "ca.key",
        "-subj",
        "/CN=realkube-ca",
        "-days",
        "7",
        "-out",
        "ca.crt",
        cwd=pki,
    )
    _openssl("genrsa", "-out", "serving.key", "2048", cwd=pki)
    _openssl(
        "req", "-new", "-key", "serving.key", "-subj", "/CN=kube-apiserver", "-out", "serving.csr", cwd=pki
    )
    (pki / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.0.0.1\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        "serving.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "7",
        "-extfile",
        "san.ext",
        "-out",
        "serving.crt",
        cwd=pki,
    )
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)


def _wait(what: str, ready: Callable[[], bool], *, timeout: float, alive: Callable[[], str | None]) -> None:
    """Poll ``ready`` until it holds; stop early with the reason if ``alive`` reports the process died."""
    deadline = time.monotonic() + timeout
    while True:
        died = alive()
        if died:
            raise ControlPlaneError(f"{what} exited while starting: {died}")
        with contextlib.suppress(httpx.HTTPError):
            if ready():
                return
        if time.monotonic() > deadline:
            raise ControlPlaneError(f"{what} not ready after {timeout:.0f} s")
        time.sleep(0.1)


@dataclass(frozen=True)
class Credentials:
    """A kubeconfig file and what it holds (tests that speak HTTP directly use the token)."""

    kubeconfig: Path
    token: str
    user: str


class ControlPlane:
    """etcd + kube-apiserver in ``workdir``; ``start()`` then ``stop()`` (or use as a context manager)."""

    def __init__(self, bin_dir: Path, workdir: Path | None = None) -> None:
        self.bin_dir = bin_dir
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="realkube-"))
        self._own_workdir = workdir is None
        self._procs: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
        self.url = ""
        self.etcd_url = ""
        self.admin: Credentials | None = None
        self._ssl: ssl.SSLContext | None = None
        self._http: httpx.Client | None = None

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- lifecycle --------------------------------------------------------------------------------

    def start(self, timeout: float = 90.0) -> None:
        missing = missing_binaries(self.bin_dir)
        if missing:
            raise ControlPlaneError(f"missing {', '.join(missing)} in {self.bin_dir}: run {BUILD_SCRIPT}")
        pki = self.workdir / "pki"
        _make_pki(pki)
        self._ssl = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        try:
            self._start_etcd(timeout)
            self._start_apiserver(pki, timeout)
        except BaseException:
            self.stop()
            raise

    def _start_etcd(self, timeout: float) -> None:
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        self._spawn(
            "etcd",
            "--name=realkube",
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={self.etcd_url}",
            f"--advertise-client-urls={self.etcd_url}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=realkube=http://127.0.0.1:{peer}",
            "--unsafe-no-fsync",  # a throwaway store: durability only costs time on a shared disk
            "--log-level=warn",
        )

        def healthy() -> bool:
            return httpx.get(f"{self.etcd_url}/health", timeout=2).json().get("health") == "true"

        _wait("etcd", healthy, timeout=timeout, alive=lambda: self._exited("etcd"))

    def _start_apiserver(self, pki: Path, timeout: float) -> None:
        port = free_port()
        self.url = f"https://127.0.0.1:{port}"
        token = secrets.token_hex(16)
        tokens = self.workdir / "tokens.csv"
        tokens.write_text(f'{token},realkube-admin,realkube-admin,"system:masters"\n')
        tokens.chmod(0o600)
        self._spawn(
            "kube-apiserver",
            f"--etcd-servers={self.etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={port}",
            f"--tls-cert-file={pki / 'serving.crt'}",
            f"--tls-private-key-file={pki / 'serving.key'}",
            f"--cert-dir={self.workdir / 'certs'}",
            f"--token-auth-file={tokens}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction,PodSecurity,ResourceQuota",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--allow-privileged=true",
            f"--etcd-compaction-interval={COMPACTION_INTERVAL}",
            "--watch-cache=false",
            "--endpoint-reconciler-type=none",
            "--v=0",
        )
        self._http = httpx.Client(
            base_url=self.url, verify=self._ssl, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )

        def ready() -> bool:
            assert self._http is not None
            return self._http.get("/readyz").status_code == 200

        _wait("kube-apiserver", ready, timeout=timeout, alive=lambda: self._exited("kube-apiserver"))
        self.admin = Credentials(self._write_kubeconfig("admin", token), token, "realkube-admin")

    def _spawn(self, name: str, *args: str) -> None:
        log = self.workdir / f"{name}.log"
        with log.open("wb") as sink:
            proc = subprocess.Popen(
                [str(self.bin_dir / name), *args],
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C on the test run reaches us, not the servers
            )
        self._procs[name] = (proc, log)

    def _exited(self, name: str) -> str | None:
        proc, log = self._procs[name]
        if proc.poll() is None:
            return None
        tail = log.read_text(errors="replace")[-2000:]
        return f"exit code {proc.returncode}; last lines of {log}:\n{tail}"

    def stop(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
        for _name, (proc, _log) in reversed(list(self._procs.items())):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=15)
        self._procs.clear()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # ---- talking to it ------------------------------------------------------------------------------

    @property
    def http(self) -> httpx.Client:
        """An admin client (``system:masters``) with base URL, CA and token set."""
        if self._http is None:
            raise ControlPlaneError("the control plane is not running")
        return self._http

    @property
    def ca_file(self) -> Path:
        return self.workdir / "pki" / "ca.crt"

    @property
    def ssl_context(self) -> ssl.SSLContext:
        assert self._ssl is not None
        return self._ssl

    def request(self, method: str, path: str, **kwargs: Any) -> Json:
        """An admin request that must succeed; the apiserver's Status message on failure."""
        response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise ControlPlaneError(f"{method} {path}: {response.status_code} {response.text[:500]}")
        return response.json()

    def _write_kubeconfig(self, user: str, token: str) -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "realkube",
                    "cluster": {"server": self.url, "certificate-authority": str(self.ca_file)},
                }
            ],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": user, "context": {"cluster": "realkube", "user": user}}],
            "current-context": user,
        }
        path = self.workdir / f"kubeconfig-{user.replace(':', '-')}.yaml"
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def ensure(self, path: str, body: Json) -> None:
        """Create unless it already exists (cluster-scoped prerequisites shared by tests)."""
        response = self.http.post(path, json=body)
        if response.status_code not in (201, 409):
            raise ControlPlaneError(f"POST {path}: {response.status_code} {response.text[:500]}")

    def create_namespace(self, name: str, labels: dict[str, str] | None = None) -> None:
        """A namespace with its ``default`` ServiceAccount (the ServiceAccount admission plugin refuses pods
        of an account that does not exist, and no controller-manager is here to create it)."""
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}}
        self.request("POST", "/api/v1/namespaces", json=body)
        self.create_service_account(name, "default")

    def create_service_account(self, namespace: str, name: str) -> None:
        body = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}}
        self.ensure(f"/api/v1/namespaces/{namespace}/serviceaccounts", body)

    def service_account(self, namespace: str, name: str, *, create: bool = True) -> Credentials:
        """A kubeconfig acting as ServiceAccount ``namespace/name``, its token from the TokenRequest API."""
        if create:
            self.create_service_account(namespace, name)
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 7200},
        }
        issued = self.request(
            "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token", json=request
        )
        token = issued["status"]["token"]
        user = f"system:serviceaccount:{namespace}:{name}"
        return Credentials(self._write_kubeconfig(user, token), token, user)

    # ---- etcd -----------------------------------------------------------------------------------------

    def etcd_revision(self) -> int:
        """etcd's current revision (the apiserver's resourceVersions are etcd revisions)."""
        answer = httpx.post(f"{self.etcd_url}/v3/kv/range", json={"key": _b64("/")}, timeout=10).json()
        return int(answer["header"]["revision"])

    def compact(self) -> int:
        """Compact etcd's history up to now: a watch from any older resourceVersion then gets 410 Gone."""
        revision = self.etcd_revision()
        response = httpx.post(
            f"{self.etcd_url}/v3/kv/compaction",
            json={"revision": str(revision), "physical": True},
            timeout=30,
        )
        if response.status_code != 200 and "compacted" not in response.text:
            raise ControlPlaneError(f"etcd compaction to {revision} failed: {response.text[:300]}")
        return revision


def _b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()


def dump_json(obj: Json) -> str:
    return json.dumps(obj, indent=1, sort_keys=True)
