# The OTA service's hook, imported by an application that takes updates over
# the air (README: OTA); a normal boot without it holds none of this. The
# service itself (ota.py, otajob.py) is in RAM only while it works.
from aliyun_iot import _stage


def start(s, t=None, p=None):
    """Turn on the platform's OTA service for session s, once online: the version reported and a pending
    task asked for now and after every connection (this becomes s.on_up), a pushed task run."""
    s.on_up = start
    _stage("ota", "run", (), s, t, p, lambda t, p: start(s, t, p))
