"""tools/board.py helpers, and FakeBoard (host_tests/plugins/fakeboard.py): an in-memory board for the
tools' logic tests.

The mpremote paths themselves run against the virtual board (test_tools_vboard.py); FakeBoard lets
the decisions (refuse, back up, name, record) be tested in milliseconds.
"""

import hashlib
import os
import stat

import pytest

from host_tests.plugins.fakeboard import SECRET, FakeBoard, cred
from tools import board as B

_, store, _ = B.firmware_modules()  # the firmware's own store.py, on CPython


def test_every_board_loads_with_its_overrides():
    assert set(B.board_names()) >= {"ESP32_GENERIC", "ESP32_GENERIC_S3", "ESP32_GENERIC_C3", "VIRTUAL"}
    want = {
        "ESP32_GENERIC": ("esp32", "0x1000", "xtensawin"),
        "ESP32_GENERIC_S3": ("esp32s3", "0x0", "xtensawin"),
        "ESP32_GENERIC_C3": ("esp32c3", "0x0", "rv32imc"),
        "VIRTUAL": (None, None, "x64"),
    }
    for name, (chip, offset, arch) in want.items():
        s = B.load_board(name)
        assert (s["chip"], s["flash_offset"], s["mpy_arch"]) == (chip, offset, arch), name
        assert s["baud"] == 460800 and s["package_dir"] == "lib/aliyun_iot"  # from base.json


def test_board_files_override_only_what_differs():
    import json

    allowed = {"_comment", "chip", "flash_offset", "mpy_arch", "led_pin", "download"}
    for name in B.board_names():
        keys = set(json.loads((B.BOARDS / name / "board.json").read_text()))
        assert keys <= allowed, (name, keys - allowed)


def test_unknown_board_names_the_known_ones():
    with pytest.raises(B.ToolError, match="ESP32_GENERIC_C3"):
        B.load_board("ESP32_NOPE")
    with pytest.raises(B.ToolError):
        B.load_board("../boards")


def test_parse_sha256sum_pairs_paths_and_digests():
    a, b = hashlib.sha256(b"a").hexdigest(), hashlib.sha256(b"b").hexdigest()
    out = "sha256sum :main.py\n%s\nsha256sum :lib/aliyun_iot/x.mpy\n%s\n" % (a, b)
    assert B.parse_sha256sum(out) == {"main.py": a, "lib/aliyun_iot/x.mpy": b}
    assert B.parse_sha256sum("sha256sum :gone.py\nmpremote: sha256sum: No such file\n") == {}


def test_fingerprint_is_length_and_four_hex():
    fp = B.fingerprint(SECRET)
    assert fp == "%d chars, sha256 %s..." % (len(SECRET), hashlib.sha256(SECRET.encode()).hexdigest()[:4])
    assert SECRET not in fp


def test_write_private_is_0600_and_never_replaces(tmp_path):
    p = B.write_private(tmp_path / "x.cred", b"data")
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    with pytest.raises(FileExistsError):
        B.write_private(p, b"other")
    assert p.read_bytes() == b"data"


def test_describe_cred_hides_the_secret():
    line = B.describe_cred(cred())
    assert SECRET not in line and "a1PK/esp32-240ac4000001" in line and "32 chars" in line
    tok = {"kind": "token", "pk": "a1PK", "dn": "dev1", "cid": "c1", "tok": "t0k3nvalue"}
    assert "t0k3nvalue" not in B.describe_cred(tok) and "kind=token" in B.describe_cred(tok)


def test_fake_board_round_trips_store_encoding():
    raw = store.encode(cred())
    board = FakeBoard(files={B.CRED_PATH: raw})
    assert B.read_credential(board) == (raw, cred(), None)
    board.files[B.CRED_PATH] = raw.replace(b"a1PK", b"a1PX")
    assert B.read_credential(board)[2] is not None  # corrupt: the check value no longer matches


def test_redact_keeps_option_names_and_hides_what_was_typed():
    typed = ["--port", "x", "--product-secret=S3cr3tValue", "--mode", "magic", "S3cr3tValue"]
    keep = {"--port", "--mode", "register"}
    msg = "argument --mode: invalid choice: 'magic' (choose from 'register'); unrecognized: S3cr3tValue"
    out = B.redact(msg, typed, keep)
    assert "magic" not in out and "S3cr3tValue" not in out
    assert out == "argument --mode: invalid choice: '<value>' (choose from 'register'); unrecognized: <value>"


def test_say_hook_takes_progress_lines(capsys):
    got = []
    B.say_hook = lambda tool, msg: got.append((tool, msg))
    try:
        B.say("deploy", "[1/2] main.py")
    finally:
        B.say_hook = None
    assert got == [("deploy", "[1/2] main.py")] and capsys.readouterr().err == ""
    B.say("deploy", "done")
    assert capsys.readouterr().err == "deploy: done\n"


def test_files_the_tools_write_are_ignored_by_git(tmp_path):
    import subprocess

    names = ["line-manifest.csv", "provision-manifest.csv", "backups/a1PK.dev.240ac4000001.cred",
             "vboard-flash.img", "emulator-state/ca.der", "x.cred.tmp"]  # fmt: skip
    p = subprocess.run(
        ["git", "check-ignore", "--no-index", *names], cwd=B.REPO, capture_output=True, text=True
    )
    assert sorted(p.stdout.split()) == sorted(names)
