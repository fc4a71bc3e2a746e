# One of two boards that hold the same credential (a cloned flash): the
# firmware's boot (aliyun_iot.connect(), the stored credential), then the
# application's loop, check(1000), for argv[1] seconds. The session's hooks
# are set as soon as it is made (inside connect(): the other board may kick
# this one off before connect() returns). Each kick-off the session reports
# through on_error is printed with the board's ticks, the session's failure
# count and the delay it chose; each connection through on_up.
# host_tests/test_two_boards.py reads the lines:
#   TWO up n=<connection> t=<ticks>
#   TWO kicked t=<ticks> fails=<n> delay=<ms>
#   TWO error <code>                        (any other report)
#   TWO end connects=<n> kicked=<n> online=<0|1>
import sys
import time

import aliyun_iot
from aliyun_iot import session

kicks = []
s = None


def on_error(e):
    code = getattr(e, "code", type(e).__name__)
    if code != "kicked":
        print("TWO error %s" % code)
        return
    now = time.ticks_ms()
    kicks.append(now)
    # Reported from the session's lost-link handling, once the next connection is scheduled (s.next).
    print("TWO kicked t=%d fails=%d delay=%d" % (now, s.fails, time.ticks_diff(s.next, now)))


def on_up(s):
    print("TWO up n=%d t=%d" % (s.connects, time.ticks_ms()))


_init = session.Session.__init__


def init(self, cfg, cred):
    global s
    _init(self, cfg, cred)
    s = self
    self.on_error = on_error
    self.on_up = on_up


session.Session.__init__ = init
run_ms = int(sys.argv[1]) * 1000
aliyun_iot.connect()
print("TWO ready")
t0 = time.ticks_ms()
while time.ticks_diff(time.ticks_ms(), t0) < run_ms:
    s.check(1000)  # as main.py's loop does
print("TWO end connects=%d kicked=%d online=%d" % (s.connects, len(kicks), s.online))
s.close()
