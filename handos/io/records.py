"""Writing prediction records as they come: JSONL (one file or shards) or Parquet shards, resumable."""
from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from handos.errors import InputError


class RecordWriter:
    """Append records to `out` (a .jsonl file, or a folder of shards), flushing each; knows what is done."""

    def __init__(self, out: str, shard_size: int = 0, fmt: str = "jsonl", resume: bool = True) -> None:
        """Open `out` for appending; with shard_size > 0 or a folder path, write numbered shards."""
        if fmt not in ("jsonl", "parquet"):
            raise InputError(f"output format must be jsonl or parquet, got {fmt!r}")
        self.out = Path(out)
        self.fmt = fmt
        self.sharded = shard_size > 0 or fmt == "parquet" or out.endswith(os.sep) or self.out.is_dir()
        self.shard_size = shard_size or 10_000
        self.done: set[str] = set()
        self.pending: list[dict[str, Any]] = []
        self.errors_path = Path(str(self.out).rstrip(os.sep) + ".errors.jsonl") if not self.sharded else self.out / "errors.jsonl"
        if self.sharded:
            self.out.mkdir(parents=True, exist_ok=True)
        else:
            self.out.parent.mkdir(parents=True, exist_ok=True)
        if resume:
            self.done = set(done_files(self.out))
        elif self.out.exists():
            raise InputError(f"{out} exists; drop --no-resume to continue it or choose another --out")
        self.shard_index = len(self.shard_paths())
        self.handle = None

    def shard_paths(self) -> list[Path]:
        """Existing shards, in order."""
        if not self.sharded:
            return [self.out] if self.out.exists() else []
        return sorted(self.out.glob(f"preds-*.{self.fmt}"))

    def write(self, record: dict[str, Any]) -> None:
        """Write one record (flushed at once for JSONL, so a crash loses nothing written)."""
        self.done.add(record["file"])
        if self.fmt == "parquet":
            self.pending.append(record)
            if len(self.pending) >= self.shard_size:
                self.flush_parquet()
            return
        if self.handle is None or (self.sharded and self.lines_in_shard >= self.shard_size):
            self.open_next()
        self.handle.write(json.dumps(record, separators=(",", ":")) + "\n")
        self.handle.flush()
        self.lines_in_shard += 1

    def write_error(self, file: str, message: str) -> None:
        """Record an input that could not be processed (kept apart from the predictions)."""
        with open(self.errors_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"file": file, "error": message}) + "\n")

    def open_next(self) -> None:
        """Open the next JSONL shard (or the single output file) for appending."""
        if self.handle is not None:
            self.handle.close()
        path = self.out if not self.sharded else self.out / f"preds-{self.shard_index:05d}.jsonl"
        self.shard_index += 1
        drop_torn_tail(path)
        self.handle = open(path, "a", encoding="utf-8")
        self.lines_in_shard = 0

    def flush_parquet(self) -> None:
        """Write pending records as one Parquet shard (needs pyarrow: pip install 'handos[ray]')."""
        if not self.pending:
            return
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise InputError("Parquet output needs pyarrow: pip install pyarrow (or use --format jsonl)") from None
        rows = [{"file": r["file"], "json": json.dumps(r, separators=(",", ":"))} for r in self.pending]
        path = self.out / f"preds-{self.shard_index:05d}.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path)
        self.shard_index += 1
        self.pending = []

    def close(self) -> None:
        """Flush and close."""
        if self.fmt == "parquet":
            self.flush_parquet()
        if self.handle is not None:
            self.handle.close()
            self.handle = None


def read_records(path: str | Path) -> Iterable[dict[str, Any]]:
    """Yield records from a JSONL file, a folder of JSONL/Parquet shards; a torn last line is skipped."""
    path = Path(path)
    files = sorted(path.glob("preds-*.*")) if path.is_dir() else [path]
    for f in files:
        if f.suffix == ".parquet":
            import pyarrow.parquet as pq

            for row in pq.read_table(f).to_pylist():
                yield json.loads(row["json"])
            continue
        if not f.exists():
            continue
        with open(f, encoding="utf-8") as fh:
            for line in fh:
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by a crash: that input is simply redone


def done_files(path: str | Path) -> Iterable[str]:
    """The `file` of every record already written at `path`."""
    for rec in read_records(path):
        if isinstance(rec, dict) and "file" in rec:
            yield rec["file"]


def drop_torn_tail(path: Path) -> None:
    """Cut a last line left without its newline by a crash, so appending starts on a clean line."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as fh:
        data = fh.read()
        if data.endswith(b"\n"):
            return
        fh.truncate(data.rfind(b"\n") + 1)
