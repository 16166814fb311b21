"""`weir chaos`: the whole platform under seeded faults, then reconciled with the ledger.

What runs, each in a process of its own (its own session, so a kill takes its JVM too):

* the simulator, producing with the default fault mix to a private Kafka broker (this
  interpreter, in a thread: it writes the ledger every acknowledged record goes to);
* ``weir stream --source kafka`` (raw archiver + speed layer) and ``weir merge --every``:
  long-running, restarted after every kill and after any exit of their own;
* ``weir batch rebuild --cutoff <now>`` and ``weir maintain`` on a schedule, one of each at
  a time (a killed run is simply followed by the next scheduled one).

At seeded moments (:func:`fault_plan`) one fault: SIGKILL of a running role, by the PID of
its process group, or the broker stopped for a few seconds and started again. With
``--source kinesis`` the simulator writes to the private stack's Kinesis stream, the stream
reads it, and an outage cuts the link to the AWS endpoint instead (every role reaches it
through a :class:`~weir.infra.proxy.CuttableProxy`). Which role a kill hits is drawn, with the
same seeded generator, among the roles running at that moment.

At the end the simulator stops, the broker is up, the stream and the merge loop are stopped
with SIGTERM (each finishes what it was doing), and this process drains and checks
(:func:`reconcile`): the stream once more with ``availableNow`` (everything the broker holds),
a batch run with the cutoff ``now`` and a merge. Then:

* RAW holds every acknowledged record of the ledger exactly once, as sent (CRC of the bytes),
  and nothing else (with Kinesis: but copies of them a retried PutRecords left, counted);
* QUARANTINE holds exactly the ledger's quarantined records, each with the ledger's reason,
  and raw = valid + quarantine;
* the batch view equals a clean full rebuild of the same RAW with the same cutoff, and the
  unified table equals the serving rule applied to that clean view, SPEED and H.

Everything lives under ``<infra.state_dir>/chaos/<run>/`` (lake, logs, broker): the user's
lake and stack are never touched.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

from weir.config import ConfigError, WeirConfig, config_from_mapping
from weir.errors import WeirError
from weir.infra.proxy import CuttableProxy

log = logging.getLogger("weir.chaos")

UTC = timezone.utc

STREAM, MERGE, BATCH, MAINTAIN, BROKER = "stream", "merge", "batch", "maintain", "broker"
AWS_ENDPOINT = "aws-endpoint"  # what an outage cuts when the stream reads Kinesis
KAFKA, KINESIS = "kafka", "kinesis"  # the sources a chaos run can read
SOURCES = (KAFKA, KINESIS)
KILL, OUTAGE = "kill", "outage"
# What a fault hits: a running role (drawn at that moment), or the source's service: the
# broker (Kafka), or the link to the AWS endpoint (Kinesis).
FAULT_KINDS = (KILL, KILL, KILL, OUTAGE)
WARM_SECONDS = 30.0  # a role up this long has started its JVM and is at work
STOP_GRACE_SECONDS = 180  # a SIGTERMed role finishes its micro-batch or merge first
WIND_DOWN_GRACE_SECONDS = 30  # a scheduled run's last chance to finish at the end
# Five JVMs (stream, merge, batch, maintain, the broker) beside this one on a small machine.
ROLE_DRIVER_MEMORY = "1g"


@dataclass(frozen=True)
class ChaosOptions:
    """How long, how hard, and how often (`weir chaos` takes minutes and seed)."""

    minutes: float = 3.0
    seed: int = 1
    rate: float = 50.0  # simulated records per second
    devices: int = 50
    merge_every_s: int = 20
    batch_every_s: float = 60.0
    maintain_every_s: float = 90.0
    fault_every_s: float = 25.0  # mean time between two faults
    restart_after_s: tuple[float, float] = (2.0, 8.0)  # a killed role is down this long
    outage_s: tuple[float, float] = (5.0, 15.0)  # the broker or the AWS link is down this long
    source: str = KAFKA  # kafka | kinesis: what the simulator writes and the stream reads


@dataclass(frozen=True)
class PlannedFault:
    at_s: float  # seconds after the start
    kind: str  # KILL | OUTAGE
    pause_s: float  # how long the role or the broker stays down


def fault_plan(options: ChaosOptions) -> list[PlannedFault]:
    """The seeded faults of a run (pure): exponential gaps, the last one a minute before the
    end so its restart is seen running."""
    rng = random.Random(options.seed)
    end = options.minutes * 60 - 30
    plan, moment = [], 0.0
    while True:
        moment += max(5.0, rng.expovariate(1 / options.fault_every_s))
        if moment >= end:
            return plan
        kind = rng.choice(FAULT_KINDS)
        low, high = options.outage_s if kind == OUTAGE else options.restart_after_s
        plan.append(PlannedFault(round(moment, 1), kind, round(rng.uniform(low, high), 1)))


@dataclass
class Survived:
    """One fault as it happened."""

    at_s: float
    kind: str
    target: str
    detail: str = ""

    def line(self) -> str:
        return f"{self.at_s:7.1f}s  {self.kind:<7} {self.target:<9} {self.detail}".rstrip()


@dataclass
class ChaosReport:
    """What a chaos run survived and what the reconciliation found."""

    seed: int
    minutes: float
    faults: list[Survived] = field(default_factory=list)
    exits: list[str] = field(default_factory=list)  # roles that ended by themselves
    counts: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    acknowledged: int = 0  # records the simulator's broker acknowledged (the ledger's)

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        kills = sum(1 for f in self.faults if f.kind == KILL)
        outages = sum(1 for f in self.faults if f.kind == OUTAGE)
        out = [
            f"weir chaos: seed {self.seed}, {self.minutes:g} min: {kills} kills, {outages} outages"
        ]
        out += [f"  {f.line()}" for f in self.faults]
        out += [f"  exit: {e}" for e in self.exits]
        out += [f"  {k}: {v}" for k, v in self.counts.items()]
        if self.ok:
            out.append("reconciled: nothing lost, nothing duplicated, unified = clean rebuild")
        else:
            out += [f"PROBLEM: {p}" for p in self.problems]
        return out


def weir_command() -> list[str]:
    """The `weir` command of this interpreter's environment."""
    script = Path(sys.executable).parent / "weir"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from weir.cli import run; run()"]


class Role:
    """One `weir` command in its own process group, logging to ``<logs>/<name>-<n>.log``."""

    def __init__(self, name: str, argv: Callable[[], list[str]], folder: Path) -> None:
        self.name = name
        self.argv = argv
        self.folder = folder
        self.process: Optional[subprocess.Popen] = None
        self.starts = 0
        self.started_at = 0.0

    def up_for(self) -> float:
        """Seconds since the role's current process started."""
        return time.monotonic() - self.started_at

    def start(self) -> None:
        self.starts += 1
        self.started_at = time.monotonic()
        log_path = self.folder / "logs" / f"{self.name}-{self.starts}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        environment = {k: v for k, v in os.environ.items() if not k.startswith("WEIR")}
        with log_path.open("w") as out:
            self.process = subprocess.Popen(
                [*weir_command(), *self.argv()],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.folder,
                start_new_session=True,
                env=environment,
            )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> Optional[int]:
        return None if self.process is None else self.process.poll()

    def kill(self) -> int:
        """SIGKILL to the role's process group (the driver and its JVM); its PID."""
        assert self.process is not None
        pid = self.process.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        self.process.wait(timeout=60)
        return pid

    def stop(self, grace_s: float = STOP_GRACE_SECONDS) -> Optional[int]:
        """SIGTERM (the role finishes its step and exits), SIGKILL after ``grace_s``; the
        exit code."""
        if not self.running:
            return self.returncode
        assert self.process is not None
        # To the driver only: it stops its queries or lets its merge finish, then its JVM.
        # (SIGTERM to the group would take the JVM from under it mid-step.)
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            code = self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.returncode
        # Anything left in the group (a JVM whose driver died before it could stop it) must
        # not write beside the drain that follows.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        return code


def chaos_config(base: WeirConfig, folder: Path) -> WeirConfig:
    """``base`` with the lake and the stack's state under ``folder``, and small drivers."""
    document = base.model_dump()
    document["env"] = "local"
    document["lake"] = {"root": f"file://{folder / 'lake'}", "landing": None}
    document["infra"] = {**document["infra"], "state_dir": str(folder / "state")}
    settings = {**document["spark"]["settings"], "spark.ui.enabled": "false"}  # five UIs: no
    document["spark"] = {
        **document["spark"],
        "driver_memory": ROLE_DRIVER_MEMORY,
        "settings": settings,
    }
    return config_from_mapping(document, environ={})


def through_link(config: WeirConfig, url: str) -> WeirConfig:
    """``config`` with its AWS clients (Kinesis included) pointed at ``url``."""
    document = config.model_dump()
    document["aws"]["endpoint_url"] = url
    document["sources"]["kinesis"]["endpoint_url"] = url
    return config_from_mapping(document, environ={})


def write_conf(config: WeirConfig, path: Path) -> Path:
    path.write_text(yaml.safe_dump(config.model_dump()), "utf-8")
    return path


class Chaos:
    """One chaos run: the roles, the schedules, the faults (module doc)."""

    def __init__(
        self,
        config: WeirConfig,
        options: ChaosOptions,
        folder: Path,
        aws_link: Optional[CuttableProxy] = None,
    ) -> None:
        self.config = config  # the stack's own endpoints, for `weir infra up` and `down`
        self.options = options
        # With Kinesis, every role reaches the AWS endpoint through this proxy, which an
        # outage cuts (moto keeps its state in memory: stopping it would lose the stream).
        self.aws_link = aws_link
        self.role_config = config if aws_link is None else through_link(config, aws_link.url)
        self.folder = folder
        self.conf = str(write_conf(self.role_config, folder / "weir.yaml"))
        self.report = ChaosReport(options.seed, options.minutes)
        self.rng = random.Random(options.seed * 7919 + 1)
        conf = ["--conf", self.conf]
        self.roles = {
            STREAM: Role(STREAM, lambda: ["stream", *conf, "--source", options.source], folder),
            MERGE: Role(
                MERGE, lambda: ["merge", *conf, "--every", str(options.merge_every_s)], folder
            ),
            BATCH: Role(BATCH, lambda: ["batch", "rebuild", *conf, "--cutoff", _now_iso()], folder),
            MAINTAIN: Role(MAINTAIN, lambda: ["maintain", *conf], folder),
        }
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def keep_up(self, restart_at: dict[str, float]) -> None:
        """Restart the long-running roles that are down (killed: after their pause)."""
        for name in (STREAM, MERGE):
            role = self.roles[name]
            if role.running or self.elapsed() < restart_at.get(name, 0):
                continue
            if role.process is not None and name not in restart_at:
                self.report.exits.append(
                    f"{name} exited by itself with {role.returncode} at {self.elapsed():.0f}s, "
                    "restarted "
                    f"(log {role.folder / 'logs' / f'{name}-{role.starts}.log'})"
                )
            restart_at.pop(name, None)
            role.start()

    def schedule(self, name: str, every: float, last: dict[str, float]) -> None:
        """Start a scheduled role when its interval has passed and it is not running."""
        role = self.roles[name]
        if not role.running and self.elapsed() - last.get(name, -every) >= every:
            if role.process is not None and role.returncode not in (0, -signal.SIGKILL):
                self.report.exits.append(f"{name} exit {role.returncode} at {self.elapsed():.0f}s")
            last[name] = self.elapsed()
            role.start()

    def inflict(self, fault: PlannedFault, restart_at: dict[str, float]) -> None:
        if fault.kind == OUTAGE:
            self.outage(fault.pause_s)
            return
        running = [name for name, role in self.roles.items() if role.running]
        # Roles past their start-up (a JVM takes tens of seconds here) are at work: prefer them.
        working = [name for name in running if self.roles[name].up_for() >= WARM_SECONDS]
        if not running:
            return
        name = self.rng.choice(working or running)
        pid = self.roles[name].kill()
        if name in (STREAM, MERGE):
            restart_at[name] = self.elapsed() + fault.pause_s
        detail = f"pid {pid}, start #{self.roles[name].starts}"
        self.report.faults.append(Survived(round(self.elapsed(), 1), KILL, name, detail))
        log.info("chaos: killed %s (%s)", name, detail)

    def outage(self, seconds: float) -> None:
        from weir.infra import down, up

        at = round(self.elapsed(), 1)
        if self.aws_link is not None:
            self.aws_link.cut()
            log.info("chaos: link to the AWS endpoint cut for %.0fs", seconds)
            time.sleep(seconds)
            self.aws_link.restore()
            self.report.faults.append(Survived(at, OUTAGE, AWS_ENDPOINT, f"{seconds:.0f}s cut"))
            return
        down(self.config, only=["kafka"])
        log.info("chaos: broker stopped for %.0fs", seconds)
        time.sleep(seconds)
        up(self.config, stop_with_parent=True)
        self.report.faults.append(Survived(at, OUTAGE, BROKER, f"{seconds:.0f}s down"))

    def run(self, simulate: Callable[[threading.Event], Any]) -> Any:
        """The chaos phase: returns the simulator's result once it and the faults are over."""
        stop = threading.Event()
        result: dict[str, Any] = {}
        producer = threading.Thread(
            target=lambda: result.update(run=simulate(stop)), name="weir-chaos-simulator"
        )
        producer.start()
        plan = fault_plan(self.options)
        restart_at: dict[str, float] = {}
        last: dict[str, float] = {BATCH: 0.0, MAINTAIN: 0.0}  # the first runs after one period
        end = self.options.minutes * 60
        try:
            while self.elapsed() < end:
                self.keep_up(restart_at)
                self.schedule(BATCH, self.options.batch_every_s, last)
                self.schedule(MAINTAIN, self.options.maintain_every_s, last)
                while plan and plan[0].at_s <= self.elapsed():
                    self.inflict(plan.pop(0), restart_at)
                time.sleep(0.5)
        finally:
            stop.set()
            producer.join(timeout=300)
        self.keep_up({})  # the broker is up: every long-running role runs again
        return result.get("run")

    def wind_down(self) -> None:
        """Give scheduled runs a short while to finish, then stop the stream and the merge loop
        with SIGTERM.

        A scheduled run still going after WIND_DOWN_GRACE_SECONDS is killed: one more fault of
        the kind the run exists to survive (batch and maintain are safe to kill at any moment;
        the drain's batch run repairs what it left), counted with the others, not a problem.
        Waiting it out would make the run's length depend on how slow OPTIMIZE and VACUUM are
        on a busy machine (minutes for a small lake under chaos).
        """
        for name in (BATCH, MAINTAIN):
            role = self.roles[name]
            if role.running:
                assert role.process is not None
                try:
                    role.process.wait(timeout=WIND_DOWN_GRACE_SECONDS)
                except subprocess.TimeoutExpired:
                    pid = role.kill()
                    detail = f"pid {pid}, start #{role.starts}, still running at the end"
                    self.report.faults.append(
                        Survived(round(self.elapsed(), 1), KILL, name, detail)
                    )
                    log.info("chaos: killed %s (%s)", name, detail)
        for name in (MERGE, STREAM):
            code = self.roles[name].stop()
            if code not in (0, None):
                self.report.exits.append(f"{name} stopped with exit {code}")

    def kill_all(self) -> None:
        for role in self.roles.values():
            if role.running:
                role.kill()


def _now_iso() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


# --- The reconciliation --------------------------------------------------------------------------


# Averages are sums of doubles, and an incremental run adds them in another order than a full
# one: the last bits may differ. Rounding both sides is not enough (a value near a rounding
# boundary rounds apart: 21.6859375 became 21.685937 and 21.685938 in a 30-minute run).
RELATIVE_TOLERANCE = 1e-9


def minute_differences(left: Any, right: Any) -> dict[str, int]:
    """How two minute tables differ, keyed by ``weir.schemas.MINUTE_KEY``: rows only in
    ``left``, only in ``right``, and in both with another value (doubles within
    ``RELATIVE_TOLERANCE``, every other column exactly, ``computed_at`` not at all: it is the
    run's clock). All zero when they hold the same minutes."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import DoubleType

    from weir.quality.metrics import values_close
    from weir.schemas import MINUTE_KEY, MINUTE_SCHEMA

    values = [f for f in MINUTE_SCHEMA.fields if f.name not in (*MINUTE_KEY, "computed_at")]
    a = left.select(*MINUTE_KEY, *(F.col(f.name).alias(f"a_{f.name}") for f in values))
    b = right.select(*MINUTE_KEY, *(F.col(f.name).alias(f"b_{f.name}") for f in values))
    joined = a.withColumn("_in_a", F.lit(True)).join(
        b.withColumn("_in_b", F.lit(True)), list(MINUTE_KEY), "full_outer"
    )

    def same(column: Any) -> Any:
        x, y = F.col(f"a_{column.name}"), F.col(f"b_{column.name}")
        if isinstance(column.dataType, DoubleType):
            return values_close(x, y, RELATIVE_TOLERANCE)
        return x.eqNullSafe(y)

    all_same = F.lit(True)
    for column in values:
        all_same = all_same & same(column)
    counts = joined.agg(
        F.count(F.when(F.col("_in_b").isNull(), 1)).alias("only_left"),
        F.count(F.when(F.col("_in_a").isNull(), 1)).alias("only_right"),
        F.count(F.when(F.col("_in_a") & F.col("_in_b") & ~all_same, 1)).alias("changed"),
    ).first()
    return counts.asDict()


def reconcile(
    spark: Any, config: WeirConfig, ledger_dir: Path, cutoff: datetime, source: str = KAFKA
) -> tuple[dict, list[str]]:
    """Compare the lake with the ledger and with a clean rebuild (module doc); the counts
    and the problems found (none: nothing lost or duplicated)."""
    import zlib

    from weir.contract import classify_records, valid_events
    from weir.control import COMPLETE_MODES, MODE_FULL, latest_batch_run
    from weir.lake import LakeLayout
    from weir.layers.batch import RebuildRequest, rebuild_batch
    from weir.schemas import MINUTE_SCHEMA
    from weir.serving.rule import serving_rule
    from weir.simulate.ledger import read_ledger
    from weir.speed_table import read_speed

    lake = LakeLayout.from_config(config)
    problems: list[str] = []
    ledger = {(row["partition"], row["offset"]): row for row in read_ledger(ledger_dir).to_pylist()}
    raw = spark.read.format("delta").load(lake.raw)
    rows = raw.select("source_partition", "source_offset", "payload", "payload_bytes").collect()
    archived = Counter((str(r.source_partition), str(r.source_offset)) for r in rows)
    keys = {(str(p), str(o)): row for (p, o), row in ledger.items()}
    crc_of = {
        (str(r.source_partition), str(r.source_offset)): zlib.crc32(
            bytes(r.payload_bytes) if r.payload_bytes is not None else r.payload.encode()
        )
        for r in rows
    }
    twice = [c for c, n in archived.items() if n > 1]
    lost = set(keys) - set(archived)
    foreign = set(archived) - set(keys)
    # Kinesis: a PutRecords whose response a cut link lost is sent again by the producer, and
    # the first call's records are in the stream too — copies of records the ledger names,
    # under sequence numbers it never saw (Kinesis producers are at-least-once). Counted, not
    # a loss or a duplicate of the platform's; the batch layer deduplicates them by event_id.
    resent: dict[tuple[str, str], tuple[str, str]] = {}
    if source == KINESIS:
        sent = {row["payload_crc32"]: key for key, row in keys.items()}
        resent = {c: sent[crc_of[c]] for c in foreign if crc_of[c] in sent}
        foreign -= set(resent)
    changed = [c for c, crc in crc_of.items() if c in keys and crc != keys[c]["payload_crc32"]]
    for what, found in (
        ("archived more than once", twice),
        ("acknowledged but not in RAW (lost)", lost),
        ("in RAW but never acknowledged", foreign),
        ("archived with other bytes than sent", changed),
    ):
        if found:
            problems.append(f"{len(found)} records {what}, e.g. {sorted(found)[:3]}")

    quarantine = spark.read.format("delta").load(lake.quarantine)
    quarantined = Counter(
        (str(r.source_partition), str(r.source_offset), r.reason)
        for r in quarantine.select("source_partition", "source_offset", "reason").collect()
    )
    expected = Counter(
        (p, o, row["reason"]) for (p, o), row in keys.items() if row["fate"] == "quarantine"
    )
    for (p, o), original in resent.items():
        if keys[original]["fate"] == "quarantine":
            expected[(p, o, keys[original]["reason"])] += 1
    if quarantined != expected:
        problems.append(
            f"QUARANTINE differs from the ledger: {sum((quarantined - expected).values())} "
            f"unexpected, {sum((expected - quarantined).values())} missing, e.g. "
            f"{sorted((quarantined - expected) + (expected - quarantined))[:3]}"
        )
    valid = valid_events(classify_records(raw)).count()
    if valid + sum(quarantined.values()) != len(rows):
        problems.append(
            f"raw {len(rows)} != valid {valid} + quarantine {sum(quarantined.values())}"
        )

    # A clean rebuild of the same RAW: RAW copied into a lake of its own, one full run.
    clean = config.model_copy(
        update={"lake": config.lake.model_copy(update={"root": f"{lake.root.rstrip('/')}-clean"})}
    )
    clean_lake = LakeLayout.from_config(clean)
    raw.write.format("delta").mode("overwrite").save(clean_lake.raw)
    rebuild_batch(spark, clean, RebuildRequest(cutoff=cutoff, mode=MODE_FULL))
    view = spark.read.format("delta").load(lake.batch)
    clean_view = spark.read.format("delta").load(clean_lake.batch)
    differing = minute_differences(view, clean_view)
    if any(differing.values()):
        problems.append(
            f"the batch view differs from a clean full rebuild of the same RAW: {differing}"
        )
    run = latest_batch_run(spark, lake, COMPLETE_MODES)
    horizon = None if run is None else run.horizon
    wanted = serving_rule(
        clean_view.select(*MINUTE_SCHEMA.fieldNames()), read_speed(spark, lake.speed), horizon
    )
    unified = spark.read.format("delta").load(lake.serving)
    differing = minute_differences(unified, wanted)
    if any(differing.values()):
        problems.append(
            f"the unified table differs from the rule over a clean rebuild: {differing}"
        )
    fates = Counter(row["fate"] for row in keys.values())
    counts = {
        "acknowledged": len(keys),
        "raw": len(rows),
        **({"copies sent again by the producer": len(resent)} if source == KINESIS else {}),
        "fates": dict(sorted(fates.items())),
        "unified rows": unified.count(),
        "horizon": None if horizon is None else horizon.isoformat(),
    }
    return counts, problems


def run_chaos(
    base: WeirConfig,
    options: ChaosOptions,
    folder: Path,
    say: Callable[[str], None] = print,
) -> ChaosReport:
    """One chaos run under ``folder`` (created; removed first if it exists): module doc."""
    from weir.infra import private_stack

    if options.source not in SOURCES:
        raise ConfigError(
            "--source", f"unknown source {options.source!r}; choose from {' | '.join(SOURCES)}"
        )
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    config = chaos_config(base, folder)
    with contextlib.ExitStack() as stack:
        config = stack.enter_context(private_stack(config, Path(config.infra.state_dir)))
        link = None
        if options.source == KINESIS:
            link = stack.enter_context(CuttableProxy(config.aws.endpoint_url))
        chaos = Chaos(config, options, folder, link)
        config = chaos.role_config  # what the roles, the simulator and the drain talk to
        where = (
            f"Kinesis {config.sources.kinesis.stream} via {link.url}"
            if link is not None
            else f"broker {config.sources.kafka.bootstrap_servers}"
        )
        say(f"weir chaos: {folder} ({where})")
        try:
            simulation = chaos.run(lambda stop: _simulate(config, options, stop))
            chaos.wind_down()
        except BaseException:
            chaos.kill_all()
            raise
        if simulation is None:
            raise WeirError("the simulator did not finish (see the log above)")
        say(
            f"chaos phase over: {simulation.acknowledged} records acknowledged, "
            f"{len(chaos.report.faults)} faults; draining and reconciling"
        )
        chaos.report.acknowledged = simulation.acknowledged
        chaos.report.counts["simulator"] = (
            f"{simulation.status}, {simulation.acknowledged} acknowledged, "
            f"{simulation.failed} failed, {simulation.unconfirmed} unconfirmed"
        )
        if link is not None:
            link.restore()  # an outage cannot be under way here; the drain needs the link
        counts, problems = _drain_and_reconcile(config, options.source, simulation.ledger_dir)
        chaos.report.counts.update(counts)
        chaos.report.problems += problems
    return chaos.report


def _simulate(config: WeirConfig, options: ChaosOptions, stop: threading.Event) -> Any:
    from weir.simulate.run import SimulateOptions, run_simulation

    return run_simulation(
        config,
        SimulateOptions(
            devices=options.devices,
            rate=options.rate,
            duration_s=options.minutes * 60,
            sink=options.source,
            seed=options.seed,
        ),
        stop=stop,
    )


def _drain_and_reconcile(
    config: WeirConfig, source: str, ledger_dir: Path
) -> tuple[dict, list[str]]:
    """The last stream run (everything the broker holds), batch run and merge, here; then
    :func:`reconcile`."""
    from weir.layers.batch import RebuildRequest, rebuild_batch
    from weir.layers.streaming import run_stream
    from weir.serving.merge import run_merge
    from weir.spark import build_session

    spark = build_session(config, app_name="weir-chaos-reconcile")
    run_stream(spark, config, source, available_now=True)
    time.sleep(1.0)  # the cutoff strictly after the last ingest time
    cutoff = datetime.now(UTC).replace(microsecond=0)
    rebuild_batch(spark, config, RebuildRequest(cutoff=cutoff))
    run_merge(spark, config)
    return reconcile(spark, config, ledger_dir, cutoff, source)


__all__ = ["ChaosOptions", "ChaosReport", "fault_plan", "reconcile", "run_chaos"]
