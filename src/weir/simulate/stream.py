"""The simulator's record stream: fleet readings with the fault mix applied, tick by tick.

A pure function of its :class:`StreamSpec`: no clock, no I/O. The same spec gives the same
records, byte for byte; ``--count`` or ``--duration`` only take a prefix of it.

Every record knows what it is (:class:`SimRecord`): its sequence number in the stream, the
device that sent it (the transport key), the payload bytes, the event_id and event_time it
carries, the fault injected, and the quarantine reason ``weir.contract`` must give it (None for
a valid event). Copies (``duplicate``, ``conflict``) share a ``group`` with their original: which
copy wins the dedup is decided by the order the sink acknowledges them (weir.simulate.ledger).
"""

from __future__ import annotations

import bisect
import hashlib
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import repeat
from typing import NamedTuple, Optional

import numpy as np

from weir.config import ConfigError
from weir.simulate import faults as F
from weir.simulate.fleet import Fleet, Tick

STREAM_VERSION = 1


class SimRecord(NamedTuple):
    seq: int  # position in the stream, from 0
    device: int  # index of the sending device in the fleet
    key: str  # transport key: the sending device's id (Kafka key, Kinesis partition key)
    payload: bytes
    event_id: Optional[str]  # as the payload carries it (None: absent, null or unparseable)
    event_time_us: Optional[int]  # the instant the payload claims, when it is a valid time
    fault: str  # weir.simulate.faults kind, or "none"
    reason: Optional[str]  # expected quarantine reason; None for a valid event
    group: bool  # an original that has a copy, or a copy
    variant: int  # copies with equal variants have equal content


@dataclass(frozen=True)
class StreamSpec:
    """Everything the records depend on. Equal specs give equal records."""

    seed: int
    devices: int
    start_us: int  # the first tick, epoch microseconds (UTC)
    interval_us: int  # between two reports of one device
    faults: F.FaultMix
    allowed_lateness_us: int

    @property
    def tag(self) -> str:
        """8 hex digits naming this spec: the prefix of every event_id it generates.

        Runs with different specs never share event ids, so they never look like duplicates
        of each other; rerunning the same spec repeats its ids on purpose (a replay).
        """
        identity = json.dumps(
            {
                "version": STREAM_VERSION,
                "seed": self.seed,
                "devices": self.devices,
                "start_us": self.start_us,
                "interval_us": self.interval_us,
                "faults": self.faults.as_dict(),
                "lateness_us": self.allowed_lateness_us,
            },
            sort_keys=True,
        )
        return hashlib.blake2b(identity.encode(), digest_size=4).hexdigest()


class RecordStream:
    """Iterate :meth:`ticks` for ``(tick, records)``; every device reports once per tick."""

    def __init__(self, spec: StreamSpec) -> None:
        self.spec = spec
        self.tag = spec.tag
        self.fleet = Fleet(spec.devices, spec.seed, spec.start_us, spec.interval_us)
        self._rng = random.Random(f"weir-simulate:{spec.seed}:faults")
        self._injector = F.FaultInjector(self._rng, spec.allowed_lateness_us, spec.interval_us)

        mix = spec.faults
        copy_rate = mix.copy_rate
        invalid_rate = sum(mix.rate(kind) for kind in F.INVALID_KINDS)
        # Rates are shares of all records. Copies are extra records, so per new record a
        # kind's probability is rate / (1 - copy_rate), and each valid new record gets a copy
        # with probability copy_rate / (1 - copy_rate - invalid_rate).
        new_share = 1.0 - copy_rate
        self._kinds: list[str] = []
        self._cuts: list[float] = []
        cumulative = 0.0
        for kind in F.VALID_KINDS + F.INVALID_KINDS:
            rate = mix.rate(kind)
            if rate:
                cumulative += rate / new_share
                self._kinds.append(kind)
                self._cuts.append(cumulative)
        self._fault_cut = cumulative
        valid_share = new_share - invalid_rate
        self._copy_probability = copy_rate / valid_share if copy_rate else 0.0
        if self._copy_probability > 1.0:
            raise ConfigError(
                "--faults",
                f"copies ({copy_rate:.3f}) need as many valid originals; lower duplicate/conflict "
                f"or the invalid kinds ({invalid_rate:.3f})",
            )
        self._duplicate_share = mix.rate(F.DUPLICATE) / copy_rate if copy_rate else 0.0
        self._draws = np.random.default_rng([spec.seed, 3])
        self._event_id = (self.tag + "-%010d").__mod__  # event number -> event_id
        self._seq = 0
        self._new = 0

    def ticks(self) -> Iterator[tuple[Tick, list[SimRecord]]]:
        """Endless: one tick after another, each with every device's record plus copies."""
        while True:
            tick = self.fleet.step()
            yield tick, self._records(tick)

    def _records(self, tick: Tick) -> list[SimRecord]:
        """Every device's record in device order, then this tick's copies (retries come soon).

        The clean records are built in bulk (C-level map over zipped columns); only faulty
        ones take the slow path. Fault and copy draws come from one numpy generator, a vector
        per tick, so the records depend on the spec alone.
        """
        fleet, size = self.fleet, self.fleet.size
        first, seq = self._new, self._seq
        event_ids = list(map(self._event_id, range(first, first + size)))
        payloads = [
            (template % (event_id, *row)).encode()
            for template, event_id, row in zip(fleet.templates, event_ids, tick.rows)
        ]
        seqs = range(seq, seq + size)
        records: list[SimRecord] = list(
            map(
                tuple.__new__,  # a SimRecord without NamedTuple's Python-level __new__
                repeat(SimRecord),
                zip(
                    seqs,
                    range(size),
                    fleet.device_ids,
                    payloads,
                    event_ids,
                    tick.event_time_us,
                    repeat(F.NONE),
                    repeat(None),
                    repeat(False),
                    seqs,
                ),
            )
        )
        if self._fault_cut:
            draws = self._draws.random(size)
            for device in np.flatnonzero(draws < self._fault_cut).tolist():
                kind = self._kinds[bisect.bisect_right(self._cuts, draws[device])]
                event_id = event_ids[device]
                injected = self._injector.inject(
                    kind,
                    fleet.fields(device, (event_id, *tick.rows[device])),
                    event_id,
                    tick.event_time_us[device],
                    tick.time_us,
                )
                records[device] = records[device]._replace(
                    payload=injected.payload,
                    event_id=injected.event_id,
                    event_time_us=injected.event_time_us,
                    fault=kind,
                    reason=injected.reason,
                )
        seq += size
        if self._copy_probability:
            draws = self._draws.random(size)
            for device in np.flatnonzero(draws < self._copy_probability).tolist():
                original = records[device]
                if original.reason is not None:
                    continue  # only valid events are retried
                original = records[device] = original._replace(group=True)
                if self._draws.random() < self._duplicate_share:
                    payload, kind, variant = original.payload, F.DUPLICATE, original.variant
                else:
                    payload = F.conflicting_copy(original.payload, self._rng)
                    kind, variant = F.CONFLICT, seq
                records.append(
                    original._replace(seq=seq, payload=payload, fault=kind, variant=variant)
                )
                seq += 1
        self._new, self._seq = first + size, seq
        return records


def stream_records(spec: StreamSpec, count: int) -> list[SimRecord]:
    """The first ``count`` records of a spec's stream (tests, small samples)."""
    out: list[SimRecord] = []
    for _, records in RecordStream(spec).ticks():
        out.extend(records[: count - len(out)])
        if len(out) >= count:
            return out
    return out  # pragma: no cover (the stream is endless)
