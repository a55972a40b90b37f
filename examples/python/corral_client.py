#!/usr/bin/env python3
"""A Corral integrator client: follows the event log on NATS JetStream and a group's
effective membership over the GraphQL websocket, and resumes both after a restart exactly
where it stopped.

Each feed is appended to a file of JSON lines; the file is also the client's stored position:
at start the client reads its last complete line (a line cut short by a crash is dropped) and
asks for what follows it. A line is written with one write() and fsync'd, so every event and
every membership change lands exactly once, whenever the client is stopped or killed.

    pip install -r requirements.txt
    python corral_client.py --token crl_... --group <group id> --out ./state

Events: the stream's sequence n is position n (a never-purged stream), so the client starts
its consumer at the stored position + 1, and checks the Corral-Position header anyway.
Membership: the `membershipChanges` subscription with `after: <cursor of the last change>`
(or `fromPosition` on the first run).
"""

import argparse
import asyncio
import json
import os
import signal
import sys

import nats
from nats.js.api import ConsumerConfig, DeliverPolicy
import websockets


class JsonLines:
    """An append-only JSON-lines file that is also the stored position."""

    def __init__(self, path):
        self.path = path
        self.last = None
        if os.path.exists(path):
            with open(path, "rb") as f:
                data = f.read()
            complete = data[: data.rfind(b"\n") + 1]
            if len(complete) != len(data):
                # A line cut short by a crash: drop it, it was never acknowledged.
                with open(path, "wb") as f:
                    f.write(complete)
            lines = complete.splitlines()
            if lines:
                self.last = json.loads(lines[-1])
        self.file = open(path, "ab")

    def append(self, record):
        self.file.write((json.dumps(record, separators=(",", ":")) + "\n").encode())
        self.file.flush()
        os.fsync(self.file.fileno())
        self.last = record


async def follow_events(args, out):
    """The event log from NATS, from the stored position on."""
    nc = await nats.connect(args.nats_url)
    js = nc.jetstream()
    start = (out.last["position"] + 1) if out.last else args.from_position
    sub = await js.subscribe(
        args.events_subject,
        stream=args.events_stream,
        ordered_consumer=True,
        config=ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start
        ),
    )
    try:
        async for msg in sub.messages:
            position = int(msg.headers["Corral-Position"])
            if out.last and position <= out.last["position"]:
                continue  # already stored (never happens with seq == position)
            event = json.loads(msg.data)
            out.append(
                {
                    "position": position,
                    "aggregateType": event["aggregateType"],
                    "aggregateId": event["aggregateId"],
                    "eventType": event["eventType"],
                    "ceType": msg.headers.get("ce-type"),
                }
            )
    finally:
        await nc.close()


SUBSCRIPTION = """
subscription Members($group: ID!, $from: Position, $after: String) {
  membershipChanges(groupId: $group, includeDescendants: true,
                    fromPosition: $from, after: $after) {
    cursor position index change memberId groupId source cause
  }
}"""


async def follow_membership(args, out):
    """A group's effective membership changes over graphql-transport-ws."""
    variables = {"group": args.group}
    if out.last:
        variables["after"] = out.last["cursor"]
    else:
        variables["from"] = args.from_position
    async with websockets.connect(
        args.graphql_ws, subprotocols=["graphql-transport-ws"]
    ) as ws:
        await ws.send(
            json.dumps(
                {
                    "type": "connection_init",
                    "payload": {"Authorization": f"Bearer {args.token}"},
                }
            )
        )
        ack = json.loads(await ws.recv())
        if ack.get("type") != "connection_ack":
            raise RuntimeError(f"connection refused: {ack}")
        await ws.send(
            json.dumps(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {"query": SUBSCRIPTION, "variables": variables},
                }
            )
        )
        async for raw in ws:
            msg = json.loads(raw)
            if msg["type"] == "ping":
                await ws.send(json.dumps({"type": "pong"}))
            elif msg["type"] == "next":
                if msg["payload"].get("errors"):
                    raise RuntimeError(f"subscription error: {msg['payload']['errors']}")
                out.append(msg["payload"]["data"]["membershipChanges"])
            elif msg["type"] in ("error", "complete"):
                raise RuntimeError(f"subscription ended: {msg}")


async def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--graphql-ws", default="ws://127.0.0.1:8080/graphql/ws")
    p.add_argument("--token", default=os.environ.get("CORRAL_TOKEN"), required=False)
    p.add_argument("--nats-url", default=os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))
    p.add_argument("--events-stream", default="CORRAL_EVENTS")
    p.add_argument("--events-subject", default="corral.events.>")
    p.add_argument("--group", required=True, help="the group whose effective membership to follow")
    p.add_argument("--from-position", type=int, default=1, help="where a first run starts")
    p.add_argument("--out", default=".", help="directory of events.ndjson and membership.ndjson")
    args = p.parse_args()
    if not args.token:
        p.error("--token (or CORRAL_TOKEN) is required")
    os.makedirs(args.out, exist_ok=True)
    events = JsonLines(os.path.join(args.out, "events.ndjson"))
    members = JsonLines(os.path.join(args.out, "membership.ndjson"))
    print(
        f"resuming events after {events.last and events.last['position']}, "
        f"membership after {members.last and members.last['cursor']}",
        flush=True,
    )
    tasks = [
        asyncio.create_task(follow_events(args, events)),
        asyncio.create_task(follow_membership(args, members)),
    ]
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: [t.cancel() for t in tasks])
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    for t in done:
        if not t.cancelled() and t.exception():
            print(f"error: {t.exception()}", file=sys.stderr, flush=True)
            sys.exit(1)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except asyncio.CancelledError:
        pass
