# aliyun_iot.link.Link.recv() against a raw TCP server (argv[1]: its port)
# that answers each connection with the bytes of one case, named by the
# first line the device sends. Plain sockets: the parsing is the same under
# TLS, where the soak and fault tests run it.
import socket
import sys

import devkit

from aliyun_iot import IotError
from aliyun_iot.link import Link

PORT = int(sys.argv[1])


def recv(case, max_read=4096):
    """(header, a, b) of the first packet of `case`, or the IotError code it raised."""
    s = socket.socket()
    s.connect(socket.getaddrinfo("127.0.0.1", PORT)[0][-1])
    s.settimeout(2)
    s.write((case + "\n").encode())
    link = Link(s, 2000, max_read, s)
    try:
        hdr, a, b = link.recv()
        return hdr, bytes(a), None if b is None else bytes(b)
    except IotError as e:
        return e.code
    finally:
        s.close()


devkit.equal("qos0 publish", recv("qos0"), (0x30, b"a/b", b"hi"))
devkit.equal("qos1 publish", recv("qos1"), (0x32, b"t", b"p1"))
devkit.equal("empty payload", recv("empty"), (0x30, b"top", b""))
devkit.equal("suback", recv("suback"), (0x90, b"\x00\x01\x00", None))
devkit.equal("pingresp", recv("pingresp"), (0xD0, b"", None))
devkit.equal("publish in pieces", recv("pieces"), (0x30, b"a/b", b"x" * 300))
devkit.equal("over max_read", recv("over"), "bad_reply")
devkit.equal("topic longer than the packet", recv("badtopic"), "bad_reply")
devkit.equal("length over 4 bytes", recv("varint"), "bad_reply")
devkit.equal("cut in the payload", recv("cut"), "closed")
devkit.equal("cut in the length", recv("cutlen"), "closed")
