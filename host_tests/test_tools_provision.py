"""tools/provision.py: config from a file and flags, validated by the firmware's rules, secrets never
shown; DeviceNames from the MAC or a CSV; the batch manifest; the guard for another device's credential.
Runs on in-memory boards; the real mpremote path is in test_tools_vboard.py."""

import csv
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from host_tests.plugins.fakeboard import SECRET, FakeBoard, cred
from tools import board as B
from tools import provision as P

PS = "ProdSecretQ1w2e3r4"
WIFI_PW = "wifi-Pa55word!"
_, STORE, _ = B.firmware_modules()


def run_tool(*args, env=None, cwd=None):
    e = {k: v for k, v in os.environ.items() if k not in ("ALIYUN_PRODUCT_SECRET", "WIFI_PASSWORD")}
    e.update(env or {})
    e["PYTHONPATH"] = str(B.REPO)
    return subprocess.run(
        [sys.executable, "-m", "tools.provision", *args],
        cwd=cwd or B.REPO,
        env=e,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


def secret_file(tmp_path, name, value, mode=0o600):
    p = tmp_path / name
    p.write_text(value + "\n")
    os.chmod(p, mode)
    return p


def test_dry_run_summary_redacts_secrets(tmp_path):
    psf = secret_file(tmp_path, "ps", PS)
    p = run_tool(
        "--dry-run",
        "--product-key",
        "a1PK",
        "--product-secret-file",
        str(psf),
        "--wifi-ssid",
        "lab",
        env={"WIFI_PASSWORD": WIFI_PW},
    )
    assert p.returncode == 0, p.stderr
    for s in (PS, WIFI_PW):
        assert s not in p.stdout + p.stderr
    assert (
        "product_secret=<%s>" % B.fingerprint(PS) in p.stdout
    )  # the trailing newline of the file is not part
    assert "wifi_password=<%s>" % B.fingerprint(WIFI_PW) in p.stdout
    assert '"led_pin"' not in p.stdout and "led_pin=2" in p.stdout  # the board's LED filled in


def test_config_file_and_flags_merge_and_invalid_config_names_the_key(tmp_path):
    cfgf = tmp_path / "product.json"
    cfgf.write_text(json.dumps({"product_key": "a1PK", "product_secret": PS, "mode": "regnwl"}))
    os.chmod(cfgf, 0o644)
    p = run_tool("--dry-run", "--config", str(cfgf), "--board", "ESP32_GENERIC_S3", "--mqtt-port", "8883")
    assert p.returncode == 0, p.stderr
    assert 'mode="regnwl"' in p.stdout and "port=8883" in p.stdout and "led_pin" not in p.stdout
    assert "readable by others" in p.stderr  # a secret-holding file left at 0644
    os.chmod(cfgf, 0o600)
    p = run_tool("--dry-run", "--config", str(cfgf), "--keepalive", "5")
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr.strip().splitlines() == [
        "provision: error: invalid config: keepalive must be an integer from 30 to 1200, got 5"
    ]
    p = run_tool("--dry-run", "--config", str(cfgf), "--mode", "magic")
    assert p.returncode == 1 and "mode must be one of register, regnwl, https" in p.stderr


def test_missing_secret_is_one_clear_line(tmp_path):
    p = run_tool("--dry-run", "--product-key", "a1PK")
    assert p.returncode == 1
    assert (
        p.stderr.strip() == "provision: error: no ProductSecret: give --product-secret-file or set "
        "ALIYUN_PRODUCT_SECRET"
    )
    p = run_tool(
        "--dry-run", "--product-key", "a1PK", "--wifi-ssid", "lab", env={"ALIYUN_PRODUCT_SECRET": PS}
    )
    assert p.returncode == 1 and "no Wi-Fi password" in p.stderr


def test_names_csv(tmp_path):
    f = tmp_path / "names.csv"
    f.write_text("mac,device_name\n24:0A:C4:00:00:01,line1-0001\n240ac4000002,line1-0002\n")
    assert P.read_names(f) == {"240ac4000001": "line1-0001", "240ac4000002": "line1-0002"}
    for body, why in (
        ("mac,device_name\n24:0a,dev-1\n", "12 hex"),
        ("mac,device_name\n240ac4000001,a b\n", "not a valid DeviceName"),
        ("mac,device_name\n240ac4000001,dev-1\n240ac4000001,dev-2\n", "twice"),
    ):
        f.write_text(body)
        with pytest.raises(B.ToolError, match=why):
            P.read_names(f)


RAW = {"product_key": "a1PK", "product_secret": PS, "led_pin": 2}


def test_provision_board_writes_config_and_derives_the_name():
    board = FakeBoard(mac="240ac4000001")
    assert P.provision_board(board, RAW) == ("240ac4000001", "esp32-240ac4000001")
    assert json.loads(board.files[B.CONFIG_PATH]) == RAW  # the name is left to the firmware's derivation
    assert board.puts == [B.CONFIG_PATH]
    board = FakeBoard(mac="240ac4000009")
    P.provision_board(board, RAW, names={"240ac4000009": "line1-0009"})
    assert json.loads(board.files[B.CONFIG_PATH])["device_name"] == "line1-0009"
    with pytest.raises(B.ToolError, match="not in the names CSV"):
        P.provision_board(FakeBoard(mac="240ac4000010"), RAW, names={})


def test_provision_refuses_a_board_holding_another_devices_credential():
    held = STORE.encode(cred(pk="a1OLD", dn="esp32-240ac4000001"))
    board = FakeBoard(files={B.CRED_PATH: held})
    with pytest.raises(B.ToolError, match="a1OLD/esp32-240ac4000001; provisioning it as a1PK/.*orphan"):
        P.provision_board(board, RAW)
    assert B.CONFIG_PATH not in board.files
    P.provision_board(board, RAW, force=True)
    assert board.files[B.CRED_PATH] == held  # --force rewrites the config, never the credential
    same = FakeBoard(files={B.CRED_PATH: STORE.encode(cred())})
    P.provision_board(same, RAW)  # the same device: rewriting its config (e.g. new Wi-Fi) is fine
    assert B.CONFIG_PATH in same.files


def test_provision_refuses_a_config_naming_a_file_the_board_lacks_or_puts_it_there(tmp_path):
    # It used to write the config, and the board then stopped at its first boot (code=config) and slept
    # for 3,090 s.
    raw = dict(RAW, ca="ca.der")
    board = FakeBoard()
    with pytest.raises(B.ToolError, match="^the config names ca ca.der, which the board does not hold: "):
        P.provision_board(board, raw)
    assert board.puts == []
    ca = tmp_path / "emulator-ca.der"
    ca.write_bytes(b"\x30\x03\x02\x01\x00")
    P.provision_board(board, raw, ca_local=ca)
    assert board.puts == ["ca.der", B.CONFIG_PATH] and board.files["ca.der"] == ca.read_bytes()
    held = FakeBoard(files={"ca.der": b"\x30\x00"})
    P.provision_board(held, raw)  # the board holds it: fine
    assert held.puts == [B.CONFIG_PATH]


def test_batch_records_every_board_and_goes_on_after_a_failure(tmp_path, monkeypatch, capsys):
    boards = {
        "fake://1": FakeBoard("fake://1", mac="240ac4000001"),
        "fake://2": FakeBoard("fake://2", broken=True),
        "fake://3": FakeBoard(
            "fake://3", mac="240ac4000003", files={B.CRED_PATH: STORE.encode(cred(pk="a1OLD"))}
        ),
        "fake://4": FakeBoard("fake://4", mac="240ac4000004"),
    }
    monkeypatch.setattr(B, "Board", lambda port, tool="", timeout=0: boards[port])
    manifest = tmp_path / "manifest.csv"
    a = SimpleNamespace(ports=list(boards), port=None, count=0, wait=1, manifest=str(manifest), force=False)
    with pytest.raises(B.ToolError, match="2 of 4 boards failed"):
        P.batch(a, RAW, None)
    rows = list(csv.DictReader(manifest.open()))
    assert [r["port"] for r in rows] == list(boards)
    assert [r["result"].split(":")[0] for r in rows] == ["ok", "failed", "failed", "ok"]
    assert rows[0]["mac"] == "240ac4000001" and rows[0]["device_name"] == "esp32-240ac4000001"
    assert rows[3]["device_name"] == "esp32-240ac4000004" and all(r["time"].endswith("Z") for r in rows)
    assert "orphan" in rows[2]["result"]
    text = manifest.read_text() + capsys.readouterr().err
    for s in (PS, SECRET):
        assert s not in text
    assert manifest.read_text().splitlines()[0] == ",".join(P.MANIFEST_FIELDS)


def test_single_port_batch_waits_for_a_new_mac(monkeypatch):
    seq = iter([None, "240ac4000001", "240ac4000001", "240ac4000002"])

    class Slot(FakeBoard):
        def mac(self):
            m = next(seq)
            if m is None:
                raise B.ToolError("no board")
            return m

    board, mac = P.wait_for_board("fake://0", {"240ac4000001"}, wait_s=5, poll_s=0, board_cls=Slot)
    assert mac == "240ac4000002"
    with pytest.raises(B.ToolError, match="no new board"):
        P.wait_for_board(
            "fake://0", {"x"}, wait_s=0, poll_s=0, board_cls=lambda *a, **k: FakeBoard(broken=True)
        )


def test_batch_refuses_one_device_name_for_all(tmp_path):
    p = run_tool(
        "--batch",
        "--ports",
        "a",
        "b",
        "--product-key",
        "a1PK",
        "--device-name",
        "dev-0001",
        env={"ALIYUN_PRODUCT_SECRET": PS},
    )
    assert p.returncode == 1 and "--names CSV" in p.stderr


# ---------------------------------------------------------------- careless use


@pytest.mark.parametrize(
    "argv",
    [
        ("tools.provision", "--port", "x", "--product-secret", PS),  # abbreviation of --product-secret-file
        ("tools.provision", "--port", "x", "--product-secret=" + PS),
        ("tools.provision", "--port", "x", "--product-secrets-file", PS),
        ("tools.provision", "--port", "x", "--mqtt-port", PS),
        ("tools.provision", "--port", "x", PS),
        ("tools.deploy", "--port", "x", "--ca-file", PS),
        ("tools.cred", "restore", "--port", "x", "f.cred", "--forc", PS),
        ("tools.cred", PS),
        ("tools.line", "--ports", "x", "--config", "c", "--product-secret", PS),
    ],
)
def test_no_option_value_is_echoed_in_an_error(argv):
    p = subprocess.run(
        [sys.executable, "-m", *argv], cwd=B.REPO, capture_output=True, text=True, timeout=60,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert p.returncode == 2, p.stderr
    assert PS not in p.stdout + p.stderr
    assert "error:" in p.stderr.splitlines()[-1]


def test_abbreviations_are_off_in_every_tool_parser():
    for module in ("provision", "deploy", "cred", "line"):
        ap = __import__("tools." + module, fromlist=["parse_args"]).parse_args
        with pytest.raises(SystemExit):
            ap(["--port", "x", "--product-secret", "v", "--ports", "x", "--config", "c"])


def test_secret_file_flags_win_over_the_config_file(tmp_path):
    cfgf = tmp_path / "product.json"
    cfgf.write_text(json.dumps({"product_key": "a1PK", "product_secret": "FromTheConfig1", "wifi_ssid": "lab",
                                "wifi_password": "WifiFromConfig1"}))  # fmt: skip
    os.chmod(cfgf, 0o600)
    psf = secret_file(tmp_path, "ps", PS)
    wpf = secret_file(tmp_path, "wifi", WIFI_PW)
    p = run_tool("--dry-run", "--config", str(cfgf), "--product-secret-file", str(psf),
                 "--wifi-password-file", str(wpf))  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert "product_secret=<%s>" % B.fingerprint(PS) in p.stdout
    assert "wifi_password=<%s>" % B.fingerprint(WIFI_PW) in p.stdout
    assert "ProductSecret from --product-secret-file, not from the --config file" in p.stderr
    for s in (PS, WIFI_PW, "FromTheConfig1", "WifiFromConfig1"):
        assert s not in p.stdout + p.stderr
    p = run_tool("--dry-run", "--config", str(cfgf))  # without the flags the config's values stand
    assert "product_secret=<%s>" % B.fingerprint("FromTheConfig1") in p.stdout


class Slot(FakeBoard):
    """One USB port of a single-port station: each call of Board(port) sees the board plugged in now."""

    def __init__(self, boards):
        super().__init__()
        self.boards = boards

    def __call__(self, port, tool="", timeout=0):
        return self.boards[0] if len(self.boards) == 1 else self.boards.pop(0)


def test_single_port_batch_records_a_failed_board_once_with_its_mac_and_name(tmp_path, monkeypatch):
    held = STORE.encode(cred(pk="a1OLD"))
    bad = FakeBoard(mac="240ac4000001", files={B.CRED_PATH: held})  # another device's credential: refused
    good = FakeBoard(mac="240ac4000002")
    # the failed board stays plugged in for a few polls before the operator swaps it
    monkeypatch.setattr(B, "Board", Slot([bad, bad, bad, bad, good]))
    monkeypatch.setattr(P.time, "sleep", lambda s: None)
    manifest = tmp_path / "m.csv"
    a = SimpleNamespace(ports=None, port="fake://0", count=2, wait=5, manifest=str(manifest), force=False)
    with pytest.raises(B.ToolError, match="1 of 2 boards failed"):
        P.batch(a, RAW, None)
    rows = list(csv.DictReader(manifest.open()))
    assert [(r["mac"], r["device_name"], r["result"].split(":")[0]) for r in rows] == [
        ("240ac4000001", "esp32-240ac4000001", "failed"),
        ("240ac4000002", "esp32-240ac4000002", "ok"),
    ]
    assert "orphan" in rows[0]["result"]


def test_batch_rerun_skips_boards_already_done(tmp_path, monkeypatch, capsys):
    boards = {
        "fake://1": FakeBoard("fake://1", mac="240ac4000001"),
        "fake://2": FakeBoard(
            "fake://2", mac="240ac4000002", files={B.CRED_PATH: STORE.encode(cred(pk="a1OLD"))}
        ),
        "fake://3": FakeBoard("fake://3", mac="240ac4000003"),
    }
    monkeypatch.setattr(B, "Board", lambda port, tool="", timeout=0: boards[port])
    manifest = tmp_path / "m.csv"
    a = SimpleNamespace(ports=list(boards), port=None, count=0, wait=1, manifest=str(manifest), force=False)
    with pytest.raises(B.ToolError, match="1 of 3 boards failed"):
        P.batch(a, RAW, None)
    del boards["fake://2"].files[B.CRED_PATH]  # the operator fixed board 2
    P.batch(a, RAW, None)
    rows = list(csv.DictReader(manifest.open()))
    got = [(r["mac"][-1], r["result"].split(":")[0]) for r in rows]
    assert got == [("1", "ok"), ("2", "failed"), ("3", "ok"), ("2", "ok")]
    assert boards["fake://1"].puts == [B.CONFIG_PATH] and boards["fake://3"].puts == [B.CONFIG_PATH]
    assert "batch: 1 boards provisioned, 0 failed, 2 already done" in capsys.readouterr().out


def test_manifest_rows_stay_whole_under_parallel_writers(tmp_path):
    m = P.Manifest(tmp_path / "m.csv")
    import threading

    def write(k):
        for i in range(50):
            m.add("port%d" % k, "%012x" % (k * 100 + i), "dev-%d-%d" % (k, i), 'failed: a, "quoted"\nreason')

    threads = [threading.Thread(target=write, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    m.close()
    rows = list(csv.DictReader((tmp_path / "m.csv").open()))
    assert len(rows) == 400 and len({r["mac"] for r in rows}) == 400
    assert all(r["result"] == 'failed: a, "quoted" reason' for r in rows)
    (tmp_path / "m.csv").open("a").write("port9,240ac4000009,dev-9,o")  # a row torn by a power cut
    m = P.Manifest(tmp_path / "m.csv")
    m.add("port9", "240ac4000009", "dev-9", "ok")
    m.close()
    rows = list(csv.DictReader((tmp_path / "m.csv").open()))
    assert rows[-1]["result"] == "ok" and rows[-2]["result"] == "o"
    assert P.Manifest(tmp_path / "m.csv").done == {"240ac4000009"}


def one_line_error(p, *want):
    assert p.returncode == 1, p.stdout + p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    for w in want:
        assert w in lines[0], lines[0]
    return lines[0]


def test_bad_manifest_paths_are_one_line_and_touch_no_board(tmp_path):
    env = {"ALIYUN_PRODUCT_SECRET": PS}
    base = ("--batch", "--ports", "socket://127.0.0.1:9", "--product-key", "a1PK", "--manifest")
    one_line_error(run_tool(*base, str(tmp_path / "missing" / "m.csv"), env=env), "does not exist")
    one_line_error(run_tool(*base, str(tmp_path), env=env), "is a folder")
    f = tmp_path / "file"
    f.write_text("x")
    one_line_error(run_tool(*base, str(f / "m.csv"), env=env), "is not a folder")
    other = tmp_path / "other.csv"
    other.write_text("name,size\nx,1\n")
    one_line_error(run_tool(*base, str(other), env=env), "has the columns")
    assert other.read_text() == "name,size\nx,1\n"


def test_names_csv_encodings_and_headers(tmp_path):
    f = tmp_path / "names.csv"
    want = {"240ac4000001": "line1-0001", "240ac4000002": "line1-0002"}
    for body in (
        "\ufeffmac,device_name\r\n24:0A:C4:00:00:01,line1-0001\r\n240ac4000002,line1-0002\r\n",  # Excel
        "240ac4000001,line1-0001\n\n240ac4000002,line1-0002\n",  # no header
        "MAC,DeviceName\n240ac4000001,line1-0001\n240ac4000002,line1-0002\n",
    ):
        f.write_bytes(body.encode("utf-8"))
        assert P.read_names(f) == want, body
    env = {"ALIYUN_PRODUCT_SECRET": PS}
    for body, why in (
        ("mac,device_name\n240ac4000001,gerät-1\n".encode("latin-1"), "line 2: not UTF-8"),
        (b"serial,name\n240ac4000001,line1-0001\n", "line 1: want the header mac,device_name"),
        (b"mac,device_name\n", "lists no board"),
        (b"mac,device_name\n240ac4000001,a\x00b\n", "names CSV"),
    ):
        f.write_bytes(body)
        one_line_error(run_tool("--dry-run", "--product-key", "a1PK", "--names", str(f), env=env), why)
    one_line_error(
        run_tool("--dry-run", "--product-key", "a1PK", "--names", str(tmp_path), env=env), "cannot read"
    )


def test_a_secret_on_the_command_line_points_to_its_file_option_and_abbreviations_to_the_option():
    def last(*argv):
        p = subprocess.run(
            [sys.executable, "-m", *argv], cwd=B.REPO, capture_output=True, text=True, timeout=60,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert p.returncode == 2 and PS not in p.stdout + p.stderr
        return p.stderr.strip().splitlines()[-1]

    want = (
        "--product-secret (values not shown); a secret never goes on the command line (make, the shell "
        "history and `ps` show it): put it in a file and give --product-secret-file FILE"
    )
    assert last("tools.provision", "--port", "x", "--product-secret", PS).endswith(want)
    assert last("tools.line", "--ports", "x", "--config", "c", "--product-secret", PS).endswith(want)
    assert last("tools.line", "--port", "x", "--config", "c").endswith(
        "unrecognized option(s): --port (values not shown); did you mean --ports?"
    )
    assert last("tools.flash", "--port", "x", "--firmware", "f", "--backup", "b").endswith(
        "--backup (values not shown); did you mean --backups?"
    )
    assert last("tools.deploy", "--port", "x", "--no-pack").endswith(
        "--no-pack (values not shown); options are never abbreviated: did you mean --no-package?"
    )
