#!/usr/bin/env python3
"""Stock-client check of redis-orchestrator's Sentinel-compatible endpoint.

Uses the Python `redis` package the way an application does:
`Sentinel([...]).master_for(name)` to write, and a pub/sub subscription to
`+switch-master` on the endpoint. Driven by tests/sentinel_endpoint.rs; it talks
back with one JSON object per line on stdout:

  {"event": "ready", ...}  subscribed, and the first writes were acknowledged;
                           it keeps writing while the test fails the master over
  {"event": "done", ...}   +switch-master received, and writes acknowledged
                           after it; `last_key`/`last_value` must be on the new master
  {"event": "error", ...}  gave up (timeout); exit status 1

Usage: sentinel_client.py HOST:PORT [--master-name NAME] [--protocol default|2|3]
The Redis password (also the endpoint's) comes from $REDIS_PASSWORD, if set.
"""

import argparse
import json
import os
import sys
import time

import redis
from redis.exceptions import ConnectionError, ReadOnlyError, TimeoutError
from redis.sentinel import Sentinel


def emit(event, **fields):
    print(json.dumps({"event": event, **fields}), flush=True)


def text(value):
    return value.decode() if isinstance(value, bytes) else value


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("sentinel", help="HOST:PORT of the Sentinel endpoint")
    parser.add_argument("--master-name", default="mymaster")
    parser.add_argument("--protocol", choices=["default", "2", "3"], default="default")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--writes-before", type=int, default=20)
    parser.add_argument("--writes-after-switch", type=int, default=20)
    args = parser.parse_args()
    host, port = args.sentinel.rsplit(":", 1)

    # --- the client snippet (README) ---------------------------------------
    options = {"socket_timeout": 1.0}
    if os.environ.get("REDIS_PASSWORD"):
        options["password"] = os.environ["REDIS_PASSWORD"]
    if args.protocol != "default":
        options["protocol"] = int(args.protocol)
    sentinel = Sentinel([(host, int(port))], sentinel_kwargs=options, **options)
    master = sentinel.master_for(args.master_name)
    master.set("hello", "world")
    # -------------------------------------------------------------------------

    # Master changes, as Sentinel announces them, from the same endpoint.
    pubsub = sentinel.sentinels[0].pubsub()
    pubsub.subscribe("+switch-master")
    deadline = time.monotonic() + args.timeout
    while True:
        confirmation = pubsub.get_message(timeout=1.0)
        if confirmation and confirmation["type"] == "subscribe":
            break
        if time.monotonic() > deadline:
            emit("error", reason="no subscribe confirmation")
            return 1

    i = 0
    for i in range(1, args.writes_before + 1):
        master.set(f"k:{i}", i)
    emit(
        "ready",
        redis_py=redis.__version__,
        protocol=args.protocol,
        master=list(sentinel.discover_master(args.master_name)),
        writes=i,
    )

    switch = None
    writes_after_switch = 0
    errors = []
    last_key = None
    while writes_after_switch < args.writes_after_switch:
        if time.monotonic() > deadline:
            emit("error", reason="timeout", switch=switch, errors=errors, writes=i)
            return 1
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.02)
        if message and message["type"] == "message":
            switch = text(message["data"])
        i += 1
        key = f"k:{i}"
        try:
            master.set(key, i)
        except (ConnectionError, ReadOnlyError, TimeoutError) as e:
            # Expected while the old master steps down: redis-py drops the
            # connection and asks the endpoint for the master again.
            errors.append(f"{type(e).__name__}: {e}")
            time.sleep(0.05)
            continue
        if switch is not None:
            writes_after_switch += 1
            last_key = key

    emit(
        "done",
        switch=switch,
        master=list(sentinel.discover_master(args.master_name)),
        replicas=[list(r) for r in sentinel.discover_slaves(args.master_name)],
        last_key=last_key,
        last_value=i,
        writes=i,
        errors=errors,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
