"""The soak's feeder: files of random sizes dropped into raw/, plain and gzip, some with
malformed lines, an occasional corrupt or truncated .gz -- each recorded with what the
pipeline must make of it (its lines, or quarantine), so the end check does not rely on
the code under test to know what came in.

Sizes follow a modest mix so a 2-core machine keeps up: mostly up to ~20k lines, a few
up to 100k, and a rare big file (up to `max_lines`, 1M by default).
"""

from __future__ import annotations

import gzip
import random
from dataclasses import asdict, dataclass
from typing import Any

from ctr import layout
from ctr.storage import Store
from ctr_infra.invariants import source_with_rejects

SOAK_PREFIX = layout.RAW_PREFIX + "soak/"
# (weight, min lines, max lines): the default mix
SIZE_MIX = ((5, 1, 1), (30, 10, 1_000), (45, 1_000, 20_000), (17, 20_000, 100_000),
            (3, 200_000, 1_000_000))


@dataclass(frozen=True)
class Fed:
    key: str
    kind: str                  # plain | gzip | corrupt-gz | truncated-gz
    lines: int                 # lines in the file (for a broken .gz: before breaking it)
    malformed: int             # malformed lines among them
    bytes: int
    at: float                  # time.time() when uploaded

    @property
    def must_quarantine(self) -> bool:
        return self.kind in ("corrupt-gz", "truncated-gz")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Feeder:
    def __init__(self, store: Store, seed: int, max_lines: int = 1_000_000,
                 broken_share: float = 0.06, malformed_share: float = 0.3,
                 heavy_share: float = 0.04) -> None:
        self.store = store
        self.rng = random.Random(seed)
        self.max_lines = max_lines
        self.broken_share = broken_share
        self.malformed_share = malformed_share
        self.heavy_share = heavy_share
        self.fed: list[Fed] = []
        self._row = 0          # rows of the synthetic stream used so far (distinct data)

    def size(self) -> int:
        weights = [w for w, _, _ in SIZE_MIX]
        _, low, high = self.rng.choices(SIZE_MIX, weights=weights)[0]
        low, high = min(low, self.max_lines), min(high, self.max_lines)
        return self.rng.randint(low, high)

    def drop(self, now: float, kind: str | None = None, lines: int | None = None,
             heavy: bool | None = None) -> Fed:
        """Make one file and upload it under raw/soak/ (keys sort in arrival order).
        `heavy`: 10% malformed lines (None: at random, `heavy_share`)."""
        n = lines if lines is not None else self.size()
        if kind is None:
            r = self.rng.random()
            kind = ("corrupt-gz" if r < self.broken_share / 2 else
                    "truncated-gz" if r < self.broken_share else
                    "gzip" if r < 0.5 + self.broken_share / 2 else "plain")
        # mostly at most ~1% malformed; now and then 10% (`heavy_share`), so that the
        # chunks holding such a file go over MaxRejectShare (5%) and are quarantined
        r = self.rng.random()
        if heavy is not None:
            r = 0.0 if heavy else max(r, self.heavy_share)
        bad_every = (9 if r < self.heavy_share else
                     self.rng.choice((97, 499, 1009)) if r < self.malformed_share else 10**9)
        # n lines in all: valid ones plus one malformed after every `bad_every` valid
        valid = max(1, n - n // (bad_every + 1)) if n > 1 else 1
        data = source_with_rejects(valid, seed=self.rng.randrange(2**31), bad_every=bad_every,
                                   start_row=self._row)
        self._row += valid
        total = data.count(b"\n")
        malformed = total - valid
        body = data
        if kind != "plain":
            body = gzip.compress(data, compresslevel=1)
            if kind == "corrupt-gz":             # flip bytes inside the deflate stream
                mid = len(body) // 2
                body = body[:mid] + bytes(b ^ 0x5A for b in body[mid:mid + 8]) + body[mid + 8:]
            elif kind == "truncated-gz":         # cut off as an interrupted upload would
                body = body[: max(20, len(body) * 2 // 3)]
        key = f"{SOAK_PREFIX}{len(self.fed):05d}-{kind}-{total}.txt" + (
            "" if kind == "plain" else ".gz")
        self.store.s3.put_object(Bucket=self.store.bucket, Key=key, Body=body)
        fed = Fed(key=key, kind=kind, lines=total, malformed=malformed, bytes=len(body), at=now)
        self.fed.append(fed)
        return fed

    def expected_lines(self) -> int:
        """Lines that must end as a Parquet row or a reject."""
        return sum(f.lines for f in self.fed if not f.must_quarantine)
