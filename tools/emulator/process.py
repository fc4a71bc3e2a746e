"""Start and drive a `python -m tools.emulator` process: used by the tests, the demo and the benchmark."""

import json
import re
import select
import shutil
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_READY = re.compile(
    r"^emulator listening on (\S+):(\d+) tcp=\S+:(\d+) https=\S+:(\d+) ca=(\S+) ca_der=(\S+)$"
)
_START_TIMEOUT = 30
_CA_FILES = ("ca.pem", "ca-key.pem")


def registry_args(products=None, devices=(), regnwl=(), no_dynreg=()):
    """Command-line options that add products ({pk: ps}), devices ("pk/dn"), regnwl and no-dynreg products."""
    argv = []
    for pk, ps in (products or {}).items():
        argv += ["--product", "%s=%s" % (pk, ps)]
    for dev in devices:
        argv += ["--device", dev]
    for pk in regnwl:
        argv += ["--regnwl", pk]
    for pk in no_dynreg:
        argv += ["--no-dynreg", pk]
    return argv


class EmulatorProcess:
    """A running emulator: addresses, CA files, and helpers that drive its command line."""

    def __init__(self, state_dir, log_path, args=(), ca_seed=None):
        self.state_dir = Path(state_dir)
        self.log_path = Path(log_path)
        self.base_args = list(args)
        self.proc = None
        self.host = None
        self.port = self.tcp_port = self.https_port = None
        self.ca_pem = self.ca_der = None
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if ca_seed is not None:
            for name in _CA_FILES:
                shutil.copy(Path(ca_seed) / name, self.state_dir / name)

    # ---- process ----

    def start(self, *extra):
        if self.proc is not None:
            raise RuntimeError("emulator already running")
        cmd = [
            sys.executable,
            "-m",
            "tools.emulator",
            "--state",
            str(self.state_dir),
            "--port",
            "0",
            "--tcp-port",
            "0",
            "--https-port",
            "0",
            *self.base_args,
            *extra,
        ]
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True)
        finally:
            log.close()
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stdout], [], [], max(left, 0))
            if not ready:
                self.stop()
                raise RuntimeError("emulator not ready within %d s; log:\n%s" % (_START_TIMEOUT, self.log()))
            line = self.proc.stdout.readline()
            if not line:
                self.stop()
                raise RuntimeError("emulator exited before it was ready; log:\n%s" % self.log())
            m = _READY.match(line.strip())
            if m:
                break
        self.ready_line = line.strip()
        self.host = m.group(1)
        self.port, self.tcp_port, self.https_port = (int(m.group(i)) for i in (2, 3, 4))
        self.ca_pem, self.ca_der = Path(m.group(5)), Path(m.group(6))
        return self

    def stop(self):
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        proc.stdout.close()

    def restart(self, *extra):
        self.stop()
        return self.start(*extra)

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # ---- registry and command line ----

    def cli(self, *args, check=True):
        """Run `python -m tools.emulator --state DIR ARGS...`; returns the CompletedProcess (text)."""
        res = subprocess.run(
            [sys.executable, "-m", "tools.emulator", "--state", str(self.state_dir), *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
        )
        if check and res.returncode != 0:
            raise AssertionError("emulator %s failed (%d): %s" % (" ".join(args), res.returncode, res.stderr))
        return res

    def registry(self):
        with open(self.state_dir / "registry.json", encoding="utf-8") as f:
            return json.load(f)

    def device(self, pk, dn):
        return self.registry()["devices"].get("%s/%s" % (pk, dn))

    def seed(self, products=None, devices=(), regnwl=(), no_dynreg=()):
        """Add products/devices in one command (the emulator sees them on its next connection)."""
        self.cli(*registry_args(products, devices, regnwl, no_dynreg), "fault", "list")

    def add_product(self, pk, ps, dynreg=True, regnwl=False):
        self.cli(
            "product",
            "%s=%s" % (pk, ps),
            "--dynreg",
            "on" if dynreg else "off",
            "--regnwl",
            "on" if regnwl else "off",
        )

    def add_device(self, pk, dn, secret=None):
        self.cli("device", "%s/%s%s" % (pk, dn, "=" + secret if secret else ""))

    def reset(self, pk, dn):
        self.cli("reset", "%s/%s" % (pk, dn))

    def fault(self, target, *switches):
        self.cli("fault", "set", target, *switches)

    def clear_faults(self):
        self.cli("fault", "clear", "--all")

    def client_context(self):
        """A verifying client SSLContext that trusts this emulator's CA."""
        ctx = ssl.create_default_context(cafile=str(self.ca_pem))
        return ctx
