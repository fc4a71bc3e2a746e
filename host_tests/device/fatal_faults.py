# The fatal path cannot fail: whatever raises inside aliyun_iot.recover() (the report, the config, the
# LED's Pin, an LED write, the wait, loading fatal itself), it ends in machine.reset(). Each case injects
# one failure; machine.reset is replaced by one that raises _Reset, which no `except Exception` can catch.
# The flash (cwd) holds a valid config.json with led_pin 2 and refused_cap_s 1.
import devkit
import machine

import aliyun_iot
from aliyun_iot import IotError, fatal


class _Reset(BaseException):
    pass


def _reset():
    raise _Reset()


def raiser(exc):
    def f(*args, **kwargs):
        raise exc

    return f


machine.reset = _reset
real = {"state": fatal.state, "log": fatal.log, "sleep_ms": fatal.sleep_ms, "Pin": machine.Pin}


def case(name, e, setup):
    setup()
    try:
        aliyun_iot.recover(e)
        devkit.fail(name, "recover() returned")
    except _Reset:
        devkit.ok(name)
    except BaseException as x:  # noqa: BLE001 - anything but the reset is the failure reported
        devkit.fail(name, "%s escaped: %r" % (type(x).__name__, x))
    finally:
        fatal.state, fatal.log, fatal.sleep_ms = real["state"], real["log"], real["sleep_ms"]
        machine.Pin = real["Pin"]
        aliyun_iot.fatal = fatal


def no_fault():
    pass


def report_fails():
    fatal.state = raiser(OSError(5))  # the console is gone
    fatal.log = raiser(OSError(5))


def config_fails():
    from aliyun_iot import config

    config.load = raiser(MemoryError())


def config_back():
    import sys

    sys.modules.pop("aliyun_iot.config", None)
    aliyun_iot.__dict__.pop("config", None)


class _InputOnly:
    OUT = 3

    def __init__(self, *args):
        raise ValueError("pin can only be input")  # Pin(34, Pin.OUT) on an ESP32


def pin_fails():
    config_back()
    machine.Pin = _InputOnly


class _BadLed:
    OUT = 3

    def __init__(self, *args):
        pass

    def value(self, v):
        raise OSError(5)


def led_fails():
    machine.Pin = _BadLed


def wait_fails():
    fatal.sleep_ms = raiser(MemoryError())


class _Broken:
    def recover(self, e):
        raise MemoryError()


def fatal_fails():
    aliyun_iot.fatal = _Broken()


case("reset after a normal report", MemoryError(), no_fault)
case("reset when the report raises", MemoryError(), report_fails)
case("reset when the config raises MemoryError", MemoryError(), config_fails)
case("reset when the LED Pin raises", IotError("x", "config"), pin_fails)
case("reset when an LED write raises", IotError("x", "config"), led_fails)
case("reset when the wait raises MemoryError", IotError("x", "config"), wait_fails)
case("reset when fatal cannot be loaded", MemoryError(), fatal_fails)
# Ctrl-C (mpremote, someone at the console) is the one way to the REPL
fatal.sleep_ms = raiser(KeyboardInterrupt())
try:
    aliyun_iot.recover(IotError("x", "config"))
    devkit.fail("ctrl-c gets the REPL", "recover() returned")
except KeyboardInterrupt:
    devkit.ok("ctrl-c gets the REPL")
except _Reset:
    devkit.fail("ctrl-c gets the REPL", "the board was reset")
finally:
    fatal.sleep_ms = real["sleep_ms"]
