"""`exchange tokens`: the vectors CSV through the real command, byte for byte."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.vectors import EXPECTED_ROWS, VECTORS

REPO_ROOT = Path(__file__).resolve().parents[3]
TOKEN_COLUMNS = ["T1", "T2", "T3", "T4", "T5"]
VECTOR_SECRET = "HashingKey-for-tests-0001"


def run_tokens(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TOKENIZER_HMAC_SECRET_FILE"}
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "exchange_core.cli", "tokens", *args],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def plain_secret(tmp_path: Path) -> Path:
    path = tmp_path / "secret.txt"
    path.write_text(VECTOR_SECRET + "\n")
    return path


def test_vectors_csv_tokens_match_byte_for_byte(tmp_path, plain_secret):
    output = tmp_path / "tokens.csv"
    result = run_tokens("--input", str(VECTORS), "--output", str(output),
                        "--secret-file", str(plain_secret))

    assert result.returncode == 0, result.stderr
    expected = read_csv(VECTORS)
    produced = read_csv(output)
    assert list(produced[0]) == ["row_id", *TOKEN_COLUMNS, "key_id"]
    assert len(produced) == len(expected) == EXPECTED_ROWS
    for want, got in zip(expected, produced):
        assert got["row_id"] == want["row_id"]
        assert [got[c] for c in TOKEN_COLUMNS] == [want[c] for c in TOKEN_COLUMNS], want["row_id"]
        assert got["key_id"] == "default"
    assert f"{EXPECTED_ROWS} rows" in result.stderr
    assert VECTOR_SECRET not in result.stderr + result.stdout


def test_json_key_file_from_the_environment_uses_its_active_key(tmp_path):
    key_file = tmp_path / "keys.json"
    key_file.write_text(json.dumps({"active_key_id": "k7",
                                    "keys": {"k6": "other-secret", "k7": VECTOR_SECRET}}))
    source = tmp_path / "persons.csv"
    source.write_text(
        "record_id,first_name,last_name,birth_date,sex,postal_code\n"
        "r-1,Clara,Montañez,1967-07-31,female,01772\n"
        "r-2,,,,,\n"
    )
    output = tmp_path / "tokens.csv"
    result = run_tokens("--input", str(source), "--output", str(output),
                        env_extra={"TOKENIZER_HMAC_SECRET_FILE": str(key_file)})

    assert result.returncode == 0, result.stderr
    rows = read_csv(output)
    assert [row["record_id"] for row in rows] == ["r-1", "r-2"]
    assert rows[0]["T1"] == "sjD/6HuiNZ81xyVhkeV3AQBnegIrnN6utbbebfrlgoY="  # vectors row S001
    assert rows[0]["T4"] == "0" * 64  # no ssn column: blank
    assert all(rows[1][c] == "0" * 64 for c in TOKEN_COLUMNS)
    assert {row["key_id"] for row in rows} == {"k7"}


def test_no_id_column_means_tokens_and_key_id_only(tmp_path, plain_secret):
    source = tmp_path / "persons.csv"
    source.write_text("last_name,first_name,sex\nLovelace,Ada,F\n")
    output = tmp_path / "tokens.csv"
    assert run_tokens("--input", str(source), "--output", str(output),
                      "--secret-file", str(plain_secret)).returncode == 0
    assert output.read_text().splitlines()[0] == "T1,T2,T3,T4,T5,key_id"


def test_without_any_secret_the_command_refuses(tmp_path):
    result = run_tokens("--input", str(VECTORS), "--output", str(tmp_path / "out.csv"))
    assert result.returncode == 2
    assert "TOKENIZER_HMAC_SECRET_FILE" in result.stderr


def test_a_csv_without_person_columns_is_refused_without_echoing_cells(tmp_path, plain_secret):
    source = tmp_path / "other.csv"
    source.write_text("colour,size\nZqsecretcell,9\n")
    result = run_tokens("--input", str(source), "--output", str(tmp_path / "out.csv"),
                        "--secret-file", str(plain_secret))
    assert result.returncode == 1
    assert "no person columns" in result.stderr and "Zqsecretcell" not in result.stderr
