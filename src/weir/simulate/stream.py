"""The simulator's record stream: fleet readings with the fault mix applied, tick by tick.

A pure function of its :class:`StreamSpec`: no clock, no I/O. The same spec gives the same
records, byte for byte; ``--count`` or ``--duration`` only take a prefix of it.

Every record knows what it is (:class:`SimRecord`): its sequence number in the stream, the
device that sent it (the transport key), the payload bytes, the event_id and event_time it
carries, the fault injected, and the quarantine reason ``weir.contract`` must give it (None for
a valid event). Copies (``duplicate``, ``conflict``) share a ``group`` with their original: which
copy wins the dedup is decided by the order the sink acknowledges them (weir.simulate.ledger).

A tick's records come as one :class:`Batch`, column by column (no object per record on the hot
path); indexing or iterating a batch gives its :class:`SimRecord` objects.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import repeat
from typing import Any, NamedTuple, Optional

import numpy as np

from weir.config import ConfigError
from weir.simulate import faults as F
from weir.simulate.fleet import Fleet, Tick

STREAM_VERSION = 1
_THREE_DIGITS = [f"{k:03d}" for k in range(1000)]


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


class Batch:
    """Consecutive records of the stream, column by column: record ``i`` has seq ``first + i``.

    What the sinks and the ledger work on (a list per field, no object per record); indexing
    or iterating gives :class:`SimRecord` objects, slicing another batch.
    """

    # The record fields after seq, in SimRecord order.
    _COLUMNS = (
        "devices",
        "keys",
        "payloads",
        "event_ids",
        "event_times",
        "faults",
        "reasons",
        "groups",
        "variants",
    )
    __slots__ = ("first", *_COLUMNS, "_crc32s")

    def __init__(
        self,
        first: int,
        devices: list,
        keys: list,
        payloads: list,
        event_ids: list,
        event_times: list,
        faults: list,
        reasons: list,
        groups: list,
        variants: list,
        crc32s: Optional[list] = None,
    ) -> None:
        self.first = first
        self.devices = devices
        self.keys = keys
        self.payloads = payloads
        self.event_ids = event_ids
        self.event_times = event_times
        self.faults = faults
        self.reasons = reasons
        self.groups = groups
        self.variants = variants
        self._crc32s = crc32s

    @classmethod
    def record_column_names(cls) -> tuple[str, ...]:
        """What each record is, after who sent it and its bytes: event_ids, event_times,
        faults, reasons, groups, variants (the ledger keeps them; a batch made ahead carries
        them across the pipe)."""
        return cls._COLUMNS[3:]

    def record_columns(self) -> tuple[list, ...]:
        """The :meth:`record_column_names` columns."""
        return tuple(getattr(self, name) for name in self.record_column_names())

    def set_crc32s(self, crc32s: Any) -> None:
        """The CRC32s, computed elsewhere (by a process that had the payloads at hand)."""
        self._crc32s = crc32s

    def crc32s(self) -> list[int]:
        """``zlib.crc32`` of every payload (computed once: best while the payloads are still
        in the CPU's caches, i.e. soon after the batch was made)."""
        if self._crc32s is None:
            self._crc32s = list(map(zlib.crc32, self.payloads))
        return self._crc32s

    @classmethod
    def of(cls, records: list[SimRecord]) -> Batch:
        """A batch of consecutive records (tests, and sinks handed a plain list)."""
        if isinstance(records, Batch):
            return records
        if not records:
            return cls(0, [], [], [], [], [], [], [], [], [])
        seqs, *columns = map(list, zip(*records))
        if seqs != list(range(seqs[0], seqs[0] + len(seqs))):
            raise ValueError("a batch holds consecutive records")
        return cls(seqs[0], *columns)

    @classmethod
    def joined(cls, batches: list[Batch]) -> Batch:
        """One batch of consecutive batches, in order."""
        if len(batches) == 1:
            return batches[0]
        for before, after in zip(batches, batches[1:]):
            if before.first + len(before) != after.first:
                raise ValueError("only consecutive batches join")
        columns = [[] for _ in cls._COLUMNS]
        for batch in batches:
            for column, name in zip(columns, cls._COLUMNS):
                column += getattr(batch, name)
        return cls(batches[0].first, *columns)

    @property
    def seqs(self) -> range:
        return range(self.first, self.first + len(self.payloads))

    def __len__(self) -> int:
        return len(self.payloads)

    def __getitem__(self, index):
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self.payloads))
            if step != 1:
                raise ValueError("a batch slice has no step")
            stop = max(start, stop)
            part = Batch(
                self.first + start,
                *[getattr(self, name)[start:stop] for name in self._COLUMNS],
            )
            if self._crc32s is not None:
                part._crc32s = self._crc32s[start:stop]
            return part
        seq = self.seqs[index]  # IndexError like a list's
        i = seq - self.first
        return SimRecord(seq, *[getattr(self, name)[i] for name in self._COLUMNS])

    def __iter__(self) -> Iterator[SimRecord]:
        return map(
            tuple.__new__,  # a SimRecord without NamedTuple's Python-level __new__
            repeat(SimRecord),
            zip(self.seqs, *[getattr(self, name) for name in self._COLUMNS]),
        )


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
        self._rng = F.FaultRandom(f"weir-simulate:{spec.seed}:faults")
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
        # Kinds that only change the event_time member -> what makes its new text.
        self._retime = {kind: getattr(self._injector, "_time_" + kind) for kind in F.TIME_KINDS}
        self._id_prefix = self.tag + "-%07d"  # event number // 1000 -> its ids' prefix
        self._seq = 0
        self._new = 0

    def _event_ids(self, first: int, count: int) -> list[str]:
        """The ids of events ``first`` to ``first + count - 1``: ``<tag>-%010d`` of the event
        number, made as a prefix per thousand plus a 3-digit text from a table."""
        ids: list[str] = []
        number, end = first, first + count
        while number < end:
            thousand, low = divmod(number, 1000)
            stop = min(end, (thousand + 1) * 1000)
            ids += map(
                (self._id_prefix % thousand).__add__, _THREE_DIGITS[low : low + stop - number]
            )
            number = stop
        return ids

    def ticks(self) -> Iterator[tuple[Tick, Batch]]:
        """Endless: one tick after another, each with every device's record plus copies."""
        while True:
            tick = self.fleet.step()
            yield tick, self._records(tick)

    def timed_batches(self) -> Iterator[tuple[int, Batch]]:
        """:meth:`ticks` as ``(tick time, batch)``: what a sender needs of a tick."""
        for tick, batch in self.ticks():
            yield tick.time_us, batch

    def _records(self, tick: Tick) -> Batch:
        """Every device's record in device order, then this tick's copies (retries come soon).

        The clean records are built in bulk, column by column (one str.join makes every
        payload); only faulty ones take a per-record path, and faults that only change the
        event_time fill the device's template instead of editing members. Fault and copy
        draws come from one numpy generator, a vector per tick, so the records depend on the
        spec alone.
        """
        fleet, size = self.fleet, self.fleet.size
        first, seq = self._new, self._seq
        start = seq
        event_ids = self._event_ids(first, size)
        payloads = fleet.payloads(tick, event_ids)
        event_times = list(tick.event_time_us)
        faults = [F.NONE] * size
        reasons: list = [None] * size
        groups = [False] * size
        variants = list(range(seq, seq + size))
        devices = list(range(size))
        keys = list(fleet.device_ids)
        if self._fault_cut:
            draws = self._draws.random(size)
            kinds, cuts, injector = self._kinds, self._cuts, self._injector
            retime = self._retime
            faulty = np.flatnonzero(draws < self._fault_cut)
            columns, clock_us = tick.columns, tick.time_us
            for device, draw in zip(faulty.tolist(), draws[faulty].tolist()):
                kind = kinds[bisect.bisect_right(cuts, draw)]
                event_id = event_ids[device]
                if kind in retime:  # only the event_time member changes: fill the template
                    text, claimed, reason = retime[kind](event_times[device], clock_us)
                    payload = fleet.retimed_payload(device, event_id, text, columns)
                    payloads[device] = payload.encode()
                else:
                    row = (event_id, *[column[device] for column in columns])
                    injected = injector.inject(
                        kind,
                        fleet.fields(device, row),
                        event_id,
                        event_times[device],
                        clock_us,
                    )
                    payloads[device] = injected.payload
                    event_ids[device] = injected.event_id
                    claimed, reason = injected.event_time_us, injected.reason
                event_times[device] = claimed
                faults[device] = kind
                reasons[device] = reason
        seq += size
        if self._copy_probability:
            draws = self._draws.random(size)
            for device in np.flatnonzero(draws < self._copy_probability).tolist():
                if reasons[device] is not None:
                    continue  # only valid events are retried
                groups[device] = True
                if self._draws.random() < self._duplicate_share:
                    payload, kind, variant = payloads[device], F.DUPLICATE, variants[device]
                else:
                    payload = F.conflicting_copy(payloads[device], self._rng)
                    kind, variant = F.CONFLICT, seq
                devices.append(device)
                keys.append(keys[device])
                payloads.append(payload)
                event_ids.append(event_ids[device])
                event_times.append(event_times[device])
                faults.append(kind)
                reasons.append(None)
                groups.append(True)
                variants.append(variant)
                seq += 1
        self._new, self._seq = first + size, seq
        return Batch(
            start,
            devices,
            keys,
            payloads,
            event_ids,
            event_times,
            faults,
            reasons,
            groups,
            variants,
        )


def stream_records(spec: StreamSpec, count: int) -> list[SimRecord]:
    """The first ``count`` records of a spec's stream (tests, small samples)."""
    out: list[SimRecord] = []
    for _, records in RecordStream(spec).ticks():
        out.extend(records[: count - len(out)])
        if len(out) >= count:
            return out
    return out  # pragma: no cover (the stream is endless)
