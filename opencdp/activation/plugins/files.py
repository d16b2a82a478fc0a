"""Files: one CSV or Parquet file per sync (a batch of deliveries) into a directory, written atomically (a
temporary file, fsync'd, then renamed), so a reader never sees half a file.

A file is named after the batch's first and last delivery ids, so a batch sent again after a crash overwrites
the file it may have left rather than adding another. Columns: ``idempotency_key``, ``type``, ``audience``,
``change``, ``event``, ``profile_id``, ``happened_at``, then one column per trait (``trait_<name>``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from opencdp.activation.plugins.base import Delivery, DeliveryFailed, DeliveryRefused
from opencdp.model.destinations import FilesDestination

FIXED = ("idempotency_key", "type", "audience", "change", "event", "profile_id", "happened_at")


@dataclass(frozen=True)
class SyncFile:
    name: str
    table: pa.Table


def _text(value: object) -> str | None:
    return None if value is None else str(value)


class Files:
    def __init__(self, config: FilesDestination) -> None:
        self.config = config
        self.directory = Path(config.directory)

    def prepare(self, batch: Sequence[Delivery]) -> SyncFile:
        traits = sorted({t for d in batch for t in d.payload.get("traits", {})})
        columns: dict[str, list[str | None]] = {c: [] for c in FIXED}
        columns.update({f"trait_{t}": [] for t in traits})
        for d in batch:
            p = d.payload
            for c in FIXED:
                columns[c].append(_text(d.key if c == "idempotency_key" else p.get(c)))
            for t in traits:
                columns[f"trait_{t}"].append(_text(p.get("traits", {}).get(t)))
        name = f"{self.config.name}-{batch[0].delivery_id:012d}-{batch[-1].delivery_id:012d}.{self.config.format}"
        return SyncFile(name, pa.table({c: pa.array(v, pa.string()) for c, v in columns.items()}))

    def send(self, prepared: object) -> None:
        assert isinstance(prepared, SyncFile)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.directory)
        except PermissionError as exc:
            raise DeliveryRefused(f"files {self.config.name}: cannot write to the directory ({exc.strerror})") from exc
        except OSError as exc:
            raise DeliveryFailed(f"files {self.config.name}: cannot write ({exc.strerror})") from exc
        try:
            with os.fdopen(fd, "wb") as out:
                if self.config.format == "parquet":
                    pq.write_table(prepared.table, out)
                else:
                    pa_csv.write_csv(prepared.table, out)
                out.flush()
                os.fsync(out.fileno())
            Path(tmp).replace(self.directory / prepared.name)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise DeliveryFailed(f"files {self.config.name}: writing failed ({exc.strerror})") from exc

    def check(self) -> None:
        if self.directory.exists() and not self.directory.is_dir():
            raise DeliveryRefused(f"files {self.config.name}: {self.directory} is not a directory")

    def close(self) -> None:
        pass
