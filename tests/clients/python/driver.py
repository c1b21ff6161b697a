#!/usr/bin/env python3
"""redis-py `Sentinel.master_for` with default options; see ../README.md.

Usage: driver.py SENTINELS KEY SECONDS [--protocol 2|3]
"""

import argparse
import json
import os
import sys
import time

import redis
from redis.sentinel import Sentinel


def emit(ev, **fields):
    print(json.dumps({"ev": ev, "t": int(time.time() * 1000), **fields}), flush=True)


def tcp_port(info):
    # RESP3 parses INFO into a dict too; both give tcp_port.
    return int(info["tcp_port"])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("sentinels")
    parser.add_argument("key")
    parser.add_argument("seconds", type=float)
    parser.add_argument("--protocol", type=int, choices=[2, 3], default=2)
    args = parser.parse_args()
    addrs = [tuple(a.rsplit(":", 1)) for a in args.sentinels.split(",")]
    addrs = [(h, int(p)) for h, p in addrs]
    options = {"protocol": args.protocol}
    password = os.environ.get("REDIS_PASSWORD")
    if password:
        options["password"] = password
    sentinel = Sentinel(addrs, sentinel_kwargs=dict(options), **options)
    master = sentinel.master_for("mymaster")

    emit("start", lib=f"redis-py {redis.__version__} RESP{args.protocol}")
    deadline = time.monotonic() + args.seconds
    writes = 0
    last_port = None
    after_error = True
    while time.monotonic() < deadline:
        try:
            master.incr(args.key)
            port = tcp_port(master.info("server"))
        except Exception as e:  # every error the library surfaces is counted
            emit("err", msg=f"{type(e).__name__}: {e}")
            after_error = True
        else:
            writes += 1
            if after_error or port != last_port or writes % 100 == 0:
                emit("ok", port=port, n=writes)
            last_port = port
            after_error = False
        time.sleep(0.01)
    return 0


if __name__ == "__main__":
    sys.exit(main())
