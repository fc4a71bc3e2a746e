"""The emulator's signer, clientId parser, verdicts, registry and fault bookkeeping, without a network."""

import json
import os
import stat

import pytest

from tools.emulator import auth, faults, registry
from tools.emulator.sign import ClientIdError, check, parse_client_id, plaintext, sign


def test_known_answer_hmacsha1_from_protocol():
    params = {"clientId": "12345", "deviceName": "device", "productKey": "pk", "timestamp": "789"}
    assert plaintext(params) == "clientId12345deviceNamedeviceproductKeypktimestamp789"
    assert sign("hmacsha1", "secret", params) == "FAFD82A3D602B37FB0FA8B7892F24A477F851A14".lower()


def test_known_answer_hmacsha256_from_protocol():
    params = {"deviceName": "Example_dyn1", "productKey": "a1ExpAkj9Hi", "random": "7y4Jg5xdKCy9W2i"}
    assert sign("hmacsha256", "ffFnFlKQW3HYjjPR", params) == (
        "d3b560d5be0c9c19749470e85d912b65685fa4b20edcbd179ccfe98fcca23d5e")


def test_check_accepts_either_hex_case_and_rejects_others():
    params = {"a": "1"}
    good = sign("hmacmd5", "k", params)
    assert check("hmacmd5", "k", params, good) and check("hmacMD5", "k", params, good.upper())
    assert not check("hmacmd5", "k", params, good[:-1] + ("0" if good[-1] != "0" else "1"))
    assert not check("hmacsha1", "k", params, good)
    assert not check("hmacsha512", "k", params, good)
    assert not check("hmacmd5", "k", params, None)


def test_parse_client_id():
    assert parse_client_id("pk.dn|securemode=2,signmethod=hmacsha256,timestamp=1|") == (
        "pk.dn", {"securemode": "2", "signmethod": "hmacsha256", "timestamp": "1"})
    assert parse_client_id("abc|authType=connwl,securemode=-2,_ss=1,ext=3|")[1]["securemode"] == "-2"
    for bad in ("pk.dn", "pk.dn|securemode=2", "pk.dn|", "a|b|c|", "a|flag|", None):
        with pytest.raises(ClientIdError):
            parse_client_id(bad)


@pytest.mark.parametrize("client_id,keepalive,tls,code", [
    ("dn.pk|securemode=2,authType=register,signmethod=hmacsha256,random=1|", 60, True, 0),
    ("dn.pk|securemode=-2,authType=regnwl,signmethod=hmacsha1,random=x,instanceId=i|", 60, True, 0),
    ("dn.pk|securemode=2,authType=register,signmethod=hmacsha256,random=1|", 60, False, 2),
    ("dn.pk|securemode=2,authType=register,signmethod=hmacsha256|", 60, True, 2),
    ("dn.pk|securemode=2,authType=register,signmethod=hmacsha512,random=1|", 60, True, 2),
    ("dn.pk|securemode=2,authType=nope,signmethod=hmacsha256,random=1|", 60, True, 2),
    ("pk.dn|securemode=2,signmethod=hmacsha1,timestamp=1|", 60, True, 0),
    ("pk.dn|securemode=3,signmethod=hmacsha1,timestamp=1|", 60, False, 0),
    ("pk.dn|securemode=3,signmethod=hmacsha1,timestamp=1|", 60, True, 2),
    ("pk.dn|securemode=2,signmethod=hmacsha1,timestamp=1|", 60, False, 2),
    ("pk.dn|signmethod=hmacsha1|", 60, True, 2),
    ("pk.dn|securemode=2,signmethod=hmacsha1|", 29, True, 2),
    ("pk.dn|securemode=2,signmethod=hmacsha1|", 1201, True, 2),
    ("pk.dn|securemode=2,signmethod=hmacsha1|", 1200, True, 0),
    ("x" * 65 + "|securemode=2,signmethod=hmacsha1|", 60, True, 2),
    ("cid|securemode=-2,authType=connwl|", 60, True, 0),
    ("cid|securemode=-2,authType=connwl|", 60, False, 2),
    ("no options", 60, True, 2),
])
def test_classify(client_id, keepalive, tls, code):
    c = auth.classify(client_id, "dev1&pk", keepalive, tls)
    assert c.code == code, c.reason


def test_classify_bad_username_is_4():
    c = auth.classify("pk.dn|securemode=2,signmethod=hmacsha1|", "no-ampersand", 60, True)
    assert c.code == auth.BAD_CREDENTIALS


def _data():
    data = registry.empty()
    registry.put_product(data, "pk1", "ps-one")
    registry.put_device(data, "pk1", "dev1")
    return data


def test_registration_rules():
    data = _data()
    prod, dev = data["products"]["pk1"], data["devices"]["pk1/dev1"]
    good = sign("hmacsha256", "ps-one", {"deviceName": "dev1", "productKey": "pk1", "random": "r"})
    assert auth.check_registration("register", prod, dev, "pk1", "dev1", "r", "hmacsha256", good)[0] == 0
    assert auth.check_registration("register", prod, dev, "pk1", "dev1", "r2", "hmacsha256", good)[0] == 4
    assert auth.check_registration("register", prod, None, "pk1", "dev1", "r", "hmacsha256", good)[0] == 4
    assert auth.check_registration("regnwl", prod, None, "pk1", "dev1", "r", "hmacsha256", good)[0] == 4
    prod["regnwl"] = True
    assert auth.check_registration("regnwl", prod, None, "pk1", "dev1", "r", "hmacsha256", good)[0] == 0
    dev["activated"] = True
    assert auth.check_registration("register", prod, dev, "pk1", "dev1", "r", "hmacsha256", good)[1] == (
        "device already activated")
    dev["activated"] = False
    prod["dynreg"] = False
    assert auth.check_registration("register", prod, dev, "pk1", "dev1", "r", "hmacsha256", good)[0] == 4


def test_last_secret_wins_and_timestamp_optional():
    data = _data()
    first = registry.issue_secret(data, "pk1", "dev1")
    second = registry.issue_secret(data, "pk1", "dev1")
    assert first != second and len(second) == 32
    for ts in ("2524608000000", None):
        opts = ",timestamp=" + ts if ts else ""
        c = auth.classify("pk1.dev1|securemode=2,signmethod=hmacsha256%s|" % opts, "dev1&pk1", 60, True)
        params = {"clientId": "pk1.dev1", "deviceName": "dev1", "productKey": "pk1"}
        if ts:
            params["timestamp"] = ts
        assert auth.verify(c, sign("hmacsha256", second, params), data)[0] == 0
        assert auth.verify(c, sign("hmacsha256", first, params), data)[0] == 4


def test_store_is_private_atomic_and_reloads(tmp_path):
    store = registry.Store(tmp_path)
    with store.edit() as data:
        registry.put_product(data, "pk1", "ps-one")
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    assert store.read()["products"]["pk1"]["dynreg"] is True
    other = registry.Store(tmp_path)  # as the CLI would
    with other.edit() as data:
        data["products"]["pk1"]["dynreg"] = False
    assert store.read()["products"]["pk1"]["dynreg"] is False
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_redacted_has_no_secrets():
    data = _data()
    secret = registry.issue_secret(data, "pk1", "dev1")
    _, token = registry.issue_token(data, "pk1", "dev2")
    text = json.dumps(registry.redacted(data))
    assert secret not in text and token not in text and "ps-one" not in text
    assert "sha256:%s" % registry.fingerprint(secret) in text


def test_fault_merge_consume_and_rate():
    data = _data()
    data["faults"]["pk1"] = faults.make(refuse=3)
    data["faults"]["pk1/dev1"] = faults.make(after="quiet", times=1)
    data["faults"]["pk1/dev9"] = faults.make(on=["connect"], double=True)
    active = faults.lookup(data, "pk1", "dev1", "register")
    assert active.get("refuse") == 3 and active.get("after") == "quiet" and active.keys == ["pk1", "pk1/dev1"]
    assert not faults.lookup(data, "pk1", "dev9", "https").get("double")
    assert faults.lookup(data, "pk1", "dev9", "connect").get("double")
    faults.consume(data, active.keys)
    assert "pk1/dev1" not in data["faults"] and "pk1" in data["faults"]
    limiter = faults.RateLimiter()
    allowed = [limiter.allow("k", 2, now=t) for t in (0.0, 0.1, 0.2, 1.05, 1.2)]
    assert allowed == [True, True, False, True, True]
    with pytest.raises(faults.FaultError):
        faults.make()
    with pytest.raises(faults.FaultError):
        faults.make(on=["bogus"], refuse=3)
