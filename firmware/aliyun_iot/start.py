# Bringing the device online, what aliyun_iot.connect() runs: the boot stages
# (each in a frame of its own: aliyun_iot._stage), registration on the first
# boot only, the session and its first connection. Dropped once online.
from aliyun_iot import IotError, _stage, log, state


def run(cfg_path, cred_path):
    s = _session(cfg_path, cred_path)
    while not s.online:
        s.check(1000)
    state("connected")
    try:
        s.post_property({"online": 1})
    except IotError as e:  # the session stays; the application sees the next post's fate
        log("online post failed (%s)" % e.code)
    state("online")
    if s.led:
        s.led.value(0)
    return s


def _session(cfg_path, cred_path):
    # A frame of its own: once it returns, nothing on the stack points at the config or the credential.
    cfg, dn, cred, led = _stage("boot_flow", "run", (), cfg_path, cred_path)
    if cred is None:  # the first boot: registration's code is dropped once the credential is stored
        cred = _stage("register", "obtain", ("https", "reply", "store", "creds", "dial", "link", "tls",
                                                        "neterr"),
                      cfg, dn, cred_path)
    state("connecting")
    from aliyun_iot.session import Session

    s = Session(cfg, cred)
    s.led = led  # on until online
    return s
