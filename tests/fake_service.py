"""Stands in for procd's `service` object on a real ubus: fake_service.py SOCKET OUTFILE.

Used by tests/test_openwrt_real.py only where procd itself is not available:
it records every `service event` call it receives, one JSON line each.
"""

import json
import sys

import ubus

sock, out = sys.argv[1], sys.argv[2]


def event(handler, data):
    with open(out, "a") as f:
        f.write(json.dumps(data) + "\n")
    handler.reply({})


ubus.connect(socket_path=sock)
ubus.add(
    "service",
    {
        "event": {
            "method": event,
            "signature": {"type": ubus.BLOBMSG_TYPE_STRING, "data": ubus.BLOBMSG_TYPE_TABLE},
        }
    },
)
while True:
    ubus.loop(1000)
