"""tools/cred.py: backup to a 0600 file (corrupt refused, old backups never overwritten), restore (never
over another credential, never against the board's config), status without the secret. In-memory boards;
the mpremote path is in test_tools_vboard.py."""

import json
import os
import stat
import subprocess
import sys

import pytest

from host_tests.plugins.fakeboard import SECRET, FakeBoard, cred
from tools import board as B
from tools import cred as C

_, STORE, _ = B.firmware_modules()
RAW = STORE.encode(cred())


def test_backup_writes_a_0600_file_named_after_the_device(tmp_path):
    board = FakeBoard(files={B.CRED_PATH: RAW})
    path = C.backup(board, tmp_path / "backups")
    assert path.name == "a1PK.esp32-240ac4000001.240ac4000001.cred"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert path.read_bytes() == RAW
    assert C.backup(board, tmp_path / "backups") == path  # identical: reused, not duplicated


def test_backup_never_overwrites_an_older_different_backup(tmp_path):
    C.backup(FakeBoard(files={B.CRED_PATH: RAW}), tmp_path)
    newer = STORE.encode(cred(ds="AnotherSecretValue0000000000000"))
    path = C.backup(FakeBoard(files={B.CRED_PATH: newer}), tmp_path)
    assert path.name.startswith("a1PK.esp32-240ac4000001.240ac4000001.") and path.read_bytes() == newer
    assert sorted(p.read_bytes() for p in tmp_path.glob("*.cred")) == sorted([RAW, newer])


def test_backup_keeps_a_corrupt_credential_raw_and_refuses_only_a_missing_one(tmp_path):
    bad = RAW.replace(b"a1PK", b"a1PX")  # the check value no longer matches
    path = C.backup(FakeBoard(files={B.CRED_PATH: bad}), tmp_path)
    assert path.parent == tmp_path and path.name.startswith("corrupt.240ac4000001.")
    assert path.read_bytes() == bad and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert C.backup(FakeBoard(files={B.CRED_PATH: bad}), tmp_path) == path  # identical: reused
    assert len(list(tmp_path.iterdir())) == 1
    with pytest.raises(B.ToolError, match="nothing to back up"):
        C.backup(FakeBoard(), tmp_path / "none")
    assert not list((tmp_path / "none").iterdir())


def test_backup_name_never_leaves_the_folder(tmp_path):
    out = tmp_path / "backups"
    escaped = tmp_path / "escaped"
    for pk, dn in ((str(escaped), "dev-0001"), ("a1PK", "../../x"), ("..", "dev/0001")):
        raw = STORE.encode(cred(pk=pk, dn=dn))
        path = C.backup(FakeBoard(files={B.CRED_PATH: raw}), out)
        assert path.parent == out and path.name.startswith("badname.240ac4000001.")
        assert path.read_bytes() == raw
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backups"]


def test_backup_dir_that_is_a_file_is_one_line(tmp_path):
    f = tmp_path / "backups"
    f.write_text("not a folder")
    with pytest.raises(B.ToolError, match="is a file"):
        C.backup(FakeBoard(files={B.CRED_PATH: RAW}), f)
    p = subprocess.run(
        [sys.executable, "-m", "tools.cred", "backup", "--port", "socket://127.0.0.1:9", "--dir", str(f)],
        cwd=B.REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert p.returncode == 1 and p.stderr.splitlines() == [
        "cred: error: backups folder %s is a file: give a folder with --dir" % f
    ]
    assert f.read_text() == "not a folder"


def test_restore_refuses_another_boards_backup_unless_told(tmp_path, capsys):
    f = B.write_private(tmp_path / "a1PK.esp32-240ac4000001.240ac4000001.20250101T000000.cred", RAW)
    assert C.mac_of_backup(f) == "240ac4000001"
    other = FakeBoard(mac="240ac40000ff")
    with pytest.raises(B.ToolError, match="mac 240ac4000001, this board is 240ac40000ff.*--other-board"):
        C.restore(other, f)
    assert B.CRED_PATH not in other.files
    C.restore(other, f, other_board=True)
    assert other.files[B.CRED_PATH] == RAW and "--other-board" in capsys.readouterr().err
    unnamed = B.write_private(tmp_path / "renamed.cred", RAW)
    C.restore(FakeBoard(), unnamed)  # no MAC in the name: restored with a warning
    assert "does not name the board" in capsys.readouterr().err


def test_restore_onto_an_empty_board_and_refusals(tmp_path):
    f = B.write_private(tmp_path / "b.cred", RAW)
    board = FakeBoard()
    assert C.restore(board, f) == cred()
    assert board.files[B.CRED_PATH] == RAW
    other = FakeBoard(files={B.CRED_PATH: STORE.encode(cred(dn="esp32-other"))})
    with pytest.raises(B.ToolError, match="holds the credential of a1PK/esp32-other; pass --force"):
        C.restore(other, f)
    C.restore(other, f, force=True)
    assert other.files[B.CRED_PATH] == RAW
    bad = tmp_path / "bad.cred"
    bad.write_bytes(RAW[:-20])
    with pytest.raises(B.ToolError, match="corrupt"):
        C.restore(FakeBoard(), bad)


def test_restore_checks_the_boards_config(tmp_path):
    f = B.write_private(tmp_path / "b.cred", RAW)
    cfg = {"product_key": "a1PK", "product_secret": "ps"}
    ok = FakeBoard(mac="240ac4000001", files={B.CONFIG_PATH: json.dumps(cfg).encode()})
    C.restore(ok, f)  # the name derives from this board's MAC: it matches the credential
    moved = FakeBoard(mac="240ac40000ff", files={B.CONFIG_PATH: json.dumps(cfg).encode()})
    with pytest.raises(B.ToolError, match="code=mismatch"):
        C.restore(moved, f)


def test_status_names_the_device_never_the_secret():
    cfg = {"product_key": "a1PK", "product_secret": "PsValue123", "host": "127.0.0.1", "port": 8883}
    board = FakeBoard(files={B.CRED_PATH: RAW, B.CONFIG_PATH: json.dumps(cfg).encode()})
    text = "\n".join(C.status(board))
    assert "credential: present a1PK/esp32-240ac4000001 kind=secret" in text
    assert B.fingerprint(SECRET) in text and "host=127.0.0.1" in text
    assert SECRET not in text and "PsValue123" not in text
    assert "credential: none" in "\n".join(C.status(FakeBoard()))
    board.files[B.CRED_PATH] = b"\x00garbage"
    assert "credential: CORRUPT" in "\n".join(C.status(board))
