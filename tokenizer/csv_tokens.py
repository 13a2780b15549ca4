"""Tokenize a person CSV locally, streaming (partners pre-tokenize with `exchange tokens`).

Input columns (by header name, any order): first_name, last_name, birth_date, sex, postal_code,
ssn; an absent column or an empty cell means "not known". A `row_id` (or else `record_id`)
column is passed through. Output: that id column if present, then T1..T5, key_id.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterable, Iterator

from tokenizer.keys import ActiveKey
from tokenizer.opentoken import TOKEN_RULES, PersonAttributes, tokenize

PERSON_COLUMNS = ("first_name", "last_name", "birth_date", "sex", "postal_code", "ssn")
ID_COLUMNS = ("row_id", "record_id")


class CsvInputError(ValueError):
    """The input is not a person CSV (messages name columns, never cell values)."""


@dataclass(frozen=True)
class CsvTokensReport:
    rows: int
    seconds: float


def tokenize_rows(lines: Iterable[str], output: IO[str], key: ActiveKey) -> int:
    """Read CSV lines, write token rows; returns the number of data rows."""
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        raise CsvInputError("the input is empty (no header row)")
    header = [name.strip() for name in header]
    positions = {name: index for index, name in enumerate(header)}
    if not any(column in positions for column in PERSON_COLUMNS):
        raise CsvInputError(f"no person columns in the header; expected some of "
                            f"{', '.join(PERSON_COLUMNS)}")
    id_column = next((column for column in ID_COLUMNS if column in positions), None)
    person_index = [positions.get(column) for column in PERSON_COLUMNS]
    id_index = positions[id_column] if id_column else None

    writer = csv.writer(output, lineterminator="\n")
    writer.writerow(([id_column] if id_column else []) + list(TOKEN_RULES) + ["key_id"])
    hasher, key_id = key.hasher, key.key_id
    rows = 0
    for row in reader:
        if not row:
            continue  # a blank line is not a person
        values = [_cell(row, index) for index in person_index]
        tokens = tokenize(PersonAttributes(*values), hasher)
        out = [tokens[rule] for rule in TOKEN_RULES]
        out.append(key_id)
        if id_index is not None:
            out.insert(0, row[id_index] if id_index < len(row) else "")
        writer.writerow(out)
        rows += 1
    return rows


def _cell(row: list[str], index: int | None) -> str | None:
    if index is None or index >= len(row):
        return None
    value = row[index]
    return value if value != "" else None


def tokenize_csv_file(
    input_path: Path, output_path: Path, key: ActiveKey, *, progress: bool = True,
) -> CsvTokensReport:
    """Stream `input_path` to `output_path`; a byte-based progress bar (with ETA) on stderr."""
    from tqdm import tqdm

    started = time.perf_counter()
    total = input_path.stat().st_size if input_path.is_file() else None
    with open(input_path, "rb") as source, \
            open(output_path, "w", encoding="utf-8", newline="") as target, \
            tqdm(total=total, unit="B", unit_scale=True, desc="tokenizing", leave=False,
                 disable=None if progress else True) as bar:  # None: off when not a TTY
        rows = tokenize_rows(_decoded_lines(source, bar.update), target, key)
    return CsvTokensReport(rows=rows, seconds=time.perf_counter() - started)


def _decoded_lines(source: IO[bytes], on_bytes: Callable[[int], None]) -> Iterator[str]:
    """UTF-8 lines (BOM dropped), counting bytes for the progress bar in coarse steps.

    Binary lines end at b"\n", which never splits a UTF-8 sequence; "\r\n" and newlines
    inside quoted cells are handled by the csv reader as with newline="".
    """
    pending = 0
    for number, line in enumerate(source, start=1):
        pending += len(line)
        if pending >= 1 << 16:
            on_bytes(pending)
            pending = 0
        try:
            yield line.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError:
            raise CsvInputError(f"line {number} is not valid UTF-8") from None
    on_bytes(pending)
