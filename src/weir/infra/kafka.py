"""The local Apache Kafka broker: one KRaft node (broker and controller in one JVM), no Docker.

Apache Kafka's own jars, resolved from Maven Central by `make setup` into ``.jars/kafka``
(jvm/kafka-broker.pom.xml), run as ``java -cp '.jars/kafka/*' kafka.Kafka server.properties``.
Everything it writes lives under ``<infra.state_dir>``::

    kafka/server.properties   written on every start from config (ports, partitions)
    kafka/log4j.properties    broker logging -> logs/kafka.log
    kafka/data/               log.dirs and the KRaft metadata log (formatted once)
    kafka.pid, logs/kafka.log, logs/kafka-format.log

Listeners bind 127.0.0.1 only: PLAINTEXT on ``infra.kafka_port``, CONTROLLER on
``infra.kafka_controller_port``.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import shutil
import subprocess
import time
import uuid
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

KAFKA_VERSION = "3.9.2"  # jvm/kafka-broker.pom.xml
KAFKA_JARS_SUBDIR = Path(".jars") / "kafka"
MIN_JAVA_MAJOR = 11  # Kafka 3.9 brokers run on Java 11, 17 and 21; Weir targets 17
HEAP_MAX = "512m"
START_TIMEOUT_SECONDS = 120.0  # a cold JVM on a small shared machine; typically ~8 s
FORMAT_TIMEOUT_SECONDS = 120.0
STOP_TIMEOUT_SECONDS = 60.0  # controlled shutdown of a single node takes a few seconds
TOPIC_TIMEOUT_SECONDS = 60.0
LOCAL_HOST = "127.0.0.1"
NODE_ID = 1

_client_log = logging.getLogger("weir.infra.kafka.client")


def default_jars_dir() -> Path:
    """``.jars/kafka`` under the working directory, else under the source checkout."""
    return resolved_folder(KAFKA_JARS_SUBDIR)


def find_java() -> str:
    """The java executable ($JAVA_HOME/bin/java, else PATH), checked to be new enough."""
    java_home = os.environ.get("JAVA_HOME")
    java = None
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        java = str(Path(java_home) / "bin" / "java")
    java = java or shutil.which("java")
    if java is None:
        raise WeirError(
            "Java not found: the local Kafka broker is a JVM process and needs Java "
            f"{MIN_JAVA_MAJOR}+ (17 recommended). Install a JDK (e.g. `apt-get install "
            "openjdk-17-jdk-headless`) or set JAVA_HOME."
        )
    try:
        banner = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30
        ).stderr
    except (OSError, subprocess.TimeoutExpired) as error:
        raise WeirError(f"could not run {java} -version: {error}") from None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', banner)
    if match is None:
        raise WeirError(f"could not read the Java version from `{java} -version`: {banner!r}")
    major = int(match.group(1)) if match.group(1) != "1" else int(match.group(2) or 0)
    if major < MIN_JAVA_MAJOR:
        raise WeirError(
            f"{java} is Java {major}; the Kafka broker needs Java {MIN_JAVA_MAJOR}+ "
            "(17 recommended). Set JAVA_HOME to a newer JDK."
        )
    return java


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (as Kafka's).

    Never one that starts with '-' (one in 64 would): the storage tool's argument parser
    reads `--cluster-id -Xy...` as a missing value and a new option. Kafka's own
    Uuid.randomUuid() draws again for the same reason.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def admin_client(bootstrap_servers: str):
    """A confluent-kafka AdminClient whose librdkafka logs go to Python logging, not stderr."""
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": bootstrap_servers, "logger": _client_log})


def create_topic(bootstrap_servers: str, topic: str, partitions: int, timeout: float = 60) -> str:
    """Create ``topic`` (replication 1, the local broker's) and wait until every partition
    has a leader, so a producer or a watermark query right after does not meet
    NOT_LEADER_FOR_PARTITION. Returns the topic."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition
    from confluent_kafka.admin import NewTopic

    admin = admin_client(bootstrap_servers)
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        future.result(timeout=timeout)

    def led() -> bool:
        described = admin.list_topics(topic=topic, timeout=5).topics.get(topic)
        if described is None or described.error is not None:
            return False
        found = described.partitions.values()
        return len(found) == partitions and all(p.leader >= 0 for p in found)

    wait_until(led, timeout=timeout, what=f"Kafka topic {topic} leaders")
    # Metadata can name a leader before that broker serves the partition (KRaft propagates
    # the leadership record first), so also wait until each leader answers an offsets query.
    probe = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": f"weir-probe-{topic}"})
    try:

        def serving() -> bool:
            try:
                for partition in range(partitions):
                    probe.get_watermark_offsets(TopicPartition(topic, partition), timeout=5)
            except KafkaException:
                return False
            return True

        wait_until(serving, timeout=timeout, what=f"Kafka topic {topic} partitions served")
    finally:
        probe.close()
    return topic


class KafkaBroker:
    """The single-node KRaft broker of ``weir infra``."""

    name = "kafka"

    def __init__(self, config: WeirConfig, jars_dir: Optional[Path] = None) -> None:
        self.config = config
        self.state_dir = Path(config.infra.state_dir)
        self.jars_dir = Path(jars_dir) if jars_dir is not None else default_jars_dir()
        self.port = config.infra.kafka_port
        self.controller_port = config.infra.kafka_controller_port
        self.process = ManagedProcess(self.name, self.state_dir, signature="kafka.Kafka")
        self._java: Optional[str] = None

    # -- layout ---------------------------------------------------------------------------

    @property
    def home(self) -> Path:
        return self.state_dir / "kafka"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def properties_file(self) -> Path:
        return self.home / "server.properties"

    @property
    def bootstrap_servers(self) -> str:
        return f"{LOCAL_HOST}:{self.port}"

    @property
    def endpoint(self) -> str:
        return self.bootstrap_servers

    def server_properties(self) -> dict[str, str]:
        """The broker's settings: one KRaft node on loopback, single-replica internal topics."""
        partitions = self.config.sources.kafka.partitions
        return {
            "process.roles": "broker,controller",
            "node.id": str(NODE_ID),
            "controller.quorum.voters": f"{NODE_ID}@{LOCAL_HOST}:{self.controller_port}",
            "listeners": (
                f"PLAINTEXT://{LOCAL_HOST}:{self.port},CONTROLLER://{LOCAL_HOST}:{self.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://{LOCAL_HOST}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": str(partitions),
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "offsets.topic.replication.factor": "1",
            # 50 partitions by default: needless start-up work on a laptop
            "offsets.topic.num.partitions": str(partitions),
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": str(partitions),
            # consumer groups of tests and the simulator start at once, not after 3 s
            "group.initial.rebalance.delay.ms": "0",
            # A topic's time retention applies within a second of expiring, not five minutes:
            # a local broker holds little, and the data-loss tests expire records for real.
            "log.retention.check.interval.ms": "1000",
            "num.network.threads": "2",
            "num.io.threads": "4",
            "num.recovery.threads.per.data.dir": "1",
        }

    def _write_configuration(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        lines = [
            "# Written by `weir infra up` from the Weir configuration; edits are overwritten.",
            *(f"{key}={value}" for key, value in self.server_properties().items()),
        ]
        self.properties_file.write_text("\n".join(lines) + "\n")
        self._log4j_file("broker").write_text(_LOG4J.format(level="INFO"))
        self._log4j_file("format").write_text(_LOG4J.format(level="WARN"))

    def _log4j_file(self, purpose: str) -> Path:
        return self.home / (
            "log4j.properties" if purpose == "broker" else f"log4j-{purpose}.properties"
        )

    def _java_command(self, java: str, purpose: str, heap: str) -> list[str]:
        return [
            java,
            f"-Xmx{heap}",
            "-Xms128m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{self._log4j_file(purpose)}",
            "-cp",
            str(self.jars_dir / "*"),
        ]

    # -- lifecycle ------------------------------------------------------------------------

    def preflight(self) -> None:
        """Everything that can be checked before starting: jars, Java, free ports."""
        if not any(self.jars_dir.glob("kafka_2.13-*.jar")):
            raise WeirError(
                f"the Kafka broker jars are not in {self.jars_dir}: run `make setup` "
                "(it resolves Apache Kafka from Maven Central via jvm/kafka-broker.pom.xml)"
            )
        self._java = find_java()
        for port, key in (
            (self.port, "infra.kafka_port"),
            (self.controller_port, "infra.kafka_controller_port"),
        ):
            if not port_is_free(port, LOCAL_HOST):
                raise PortInUseError(port, key, "the Kafka broker")

    def _format_storage(self, java: str) -> None:
        """Format the KRaft metadata log once; a formatted folder keeps its cluster id."""
        if (self.data_dir / "meta.properties").exists():
            return
        log = self.state_dir / "logs" / "kafka-format.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        command = [
            *self._java_command(java, "format", heap="256m"),
            "-XX:TieredStopAtLevel=1",  # a short-lived JVM: skip the optimising compiler
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            new_cluster_id(),
            "--config",
            str(self.properties_file),
        ]
        with log.open("wb") as out:
            try:
                result = subprocess.run(
                    command,
                    cwd=self.state_dir,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=FORMAT_TIMEOUT_SECONDS,
                )
            except subprocess.TimeoutExpired:
                raise failure(
                    f"formatting Kafka storage in {self.data_dir} took over "
                    f"{FORMAT_TIMEOUT_SECONDS:.0f}s",
                    log,
                ) from None
        if result.returncode != 0:
            raise failure(
                f"formatting Kafka storage in {self.data_dir} failed "
                f"(exit code {result.returncode})",
                log,
            )

    def launch(self, stop_with_parent: bool = False) -> int:
        """Write the configuration, format storage if new, start the broker; return its PID."""
        java = self._java or find_java()
        self._write_configuration()
        self._format_storage(java)
        command = [
            *self._java_command(java, "broker", heap=HEAP_MAX),
            "kafka.Kafka",
            str(self.properties_file),
        ]
        return self.process.start(command, stop_with_parent=stop_with_parent)

    def _metadata(self, timeout: float = 2.0):
        from confluent_kafka import KafkaException

        if not port_accepts(self.port, LOCAL_HOST):
            return None
        try:
            metadata = admin_client(self.bootstrap_servers).list_topics(timeout=timeout)
        except KafkaException:
            return None
        return metadata if metadata.brokers else None

    def wait_ready(self, pid: int) -> float:
        """Wait until the broker answers metadata requests; returns the seconds waited."""
        started = time.monotonic()

        def answering():
            if self.process.exited(pid):
                raise failure(
                    f"the Kafka broker (pid {pid}) exited during start-up", self.process.log_file
                )
            return self._metadata()

        try:
            wait_until(answering, timeout=START_TIMEOUT_SECONDS, what="Kafka broker start")
        except DeadlineExceededError as error:
            raise failure(
                f"the Kafka broker (pid {pid}) did not answer metadata requests on "
                f"{self.bootstrap_servers}: {error}",
                self.process.log_file,
            ) from None
        return time.monotonic() - started

    def ensure_resources(self) -> list[str]:
        """Create the telemetry topic (sources.kafka.topic/partitions) unless it exists."""
        from confluent_kafka import KafkaError, KafkaException
        from confluent_kafka.admin import NewTopic

        topic = self.config.sources.kafka.topic
        partitions = self.config.sources.kafka.partitions
        admin = admin_client(self.bootstrap_servers)
        created = "exists"
        if topic not in admin.list_topics(timeout=10).topics:
            future = admin.create_topics(
                [NewTopic(topic, num_partitions=partitions, replication_factor=1)],
                request_timeout=TOPIC_TIMEOUT_SECONDS,
            )[topic]
            try:
                future.result(timeout=TOPIC_TIMEOUT_SECONDS)
                created = "created"
            except KafkaException as error:
                if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise WeirError(f"could not create Kafka topic {topic!r}: {error}") from None

        def led_partitions():
            described = admin.list_topics(topic=topic, timeout=5).topics.get(topic)
            if described is None or described.error is not None:
                return None
            if any(p.leader < 0 for p in described.partitions.values()):
                return None
            return len(described.partitions)

        found = wait_until(
            led_partitions, timeout=TOPIC_TIMEOUT_SECONDS, what=f"Kafka topic {topic} leaders"
        )
        if found != partitions:
            raise WeirError(
                f"Kafka topic {topic!r} has {found} partitions but sources.kafka.partitions is "
                f"{partitions}: set the key to {found}, or run `weir infra down` and delete "
                f"{self.data_dir} to start with an empty broker"
            )
        return [f"topic {topic} ({partitions} partitions, {created})"]

    def stop(self) -> Optional[int]:
        return self.process.stop(timeout=STOP_TIMEOUT_SECONDS)

    def status(self) -> ComponentStatus:
        """Running? Answering? Does the telemetry topic exist with its partitions?"""
        pid = self.process.running_pid()
        controller = f"controller :{self.controller_port}"

        def report(state: str, detail: str) -> ComponentStatus:
            return ComponentStatus(self.name, self.endpoint, pid, state, f"{controller}; {detail}")

        if pid is None:
            taken = [p for p in (self.port, self.controller_port) if port_accepts(p, LOCAL_HOST)]
            if taken:
                return report(
                    "port taken", f"port {taken[0]} is in use by a process Weir did not start"
                )
            return report("stopped", "not running")
        metadata = self._metadata()
        if metadata is None:
            return report("unhealthy", "no answer to a metadata request")
        topic = self.config.sources.kafka.topic
        described = metadata.topics.get(topic)
        if described is None or described.error is not None:
            return report("healthy", f"topic {topic} missing")
        return report("healthy", f"topic {topic}: {len(described.partitions)} partitions")


_LOG4J = """\
# Written by `weir infra up`. The broker logs to stdout, which goes to <state_dir>/logs/kafka.log.
log4j.rootLogger={level}, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.KafkaConfig=WARN
log4j.logger.org.apache.kafka.clients=WARN
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
"""
