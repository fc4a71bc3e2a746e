# The boot to a session, what aliyun_iot.connect() runs first, each stage in
# a frame of its own (aliyun_iot._stage): config, Wi-Fi, clock, the stored
# credential (registering on the first boot only). connect() then connects
# the session without this module in RAM.
from aliyun_iot import _stage, state


def run(cfg_path, cred_path):
    """The session, not yet connected."""
    cfg, dn, cred, led = _stage("boot_flow", "run", (), cfg_path, cred_path)
    if cred is None:  # the first boot: registration's code is dropped once the credential is stored
        cred = _stage("register", "obtain", ("https", "reply", "store", "creds", "dial", "link", "tls",
                                                 "neterr"),
                      cfg, dn, cred_path)
    state("connecting")
    from aliyun_iot.session import Session

    s = Session(cfg, cred)
    s.led = led  # on until connected
    return s
