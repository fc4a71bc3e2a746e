"""python -m tools.tlsmem: mbedTLS's own memory through a normal and a first boot on the unix port."""

import argparse
import json
import sys
import tempfile

from tools import tlsmem


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tools.tlsmem", allow_abbrev=False,
                                 description=tlsmem.__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print every phase of both runs as JSON")
    a = ap.parse_args(argv)
    print("tlsmem: measuring on the unix port (about 15 s)...", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="tlsmem-") as work:
        try:
            r = tlsmem.figures(work, tlsmem.build(work))
        except (tlsmem.Unavailable, RuntimeError) as e:
            print("tlsmem: %s" % e, file=sys.stderr)
            return 1
    if a.json:
        print(json.dumps(r, indent=2))
    else:
        from tools.bench import tls_table

        print(tls_table(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
