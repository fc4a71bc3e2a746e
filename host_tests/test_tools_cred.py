"""tools/cred.py: backup to a 0600 file (corrupt refused, old backups never overwritten), restore (never
over another credential, never against the board's config), status without the secret. In-memory boards;
the mpremote path is in test_tools_vboard.py."""

import json
import os
import stat

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


def test_backup_refuses_corrupt_or_missing(tmp_path):
    with pytest.raises(B.ToolError, match="corrupt.*refusing"):
        C.backup(FakeBoard(files={B.CRED_PATH: RAW.replace(b"a1PK", b"a1PX")}), tmp_path)
    with pytest.raises(B.ToolError, match="nothing to back up"):
        C.backup(FakeBoard(), tmp_path)
    assert list(tmp_path.iterdir()) == []


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
