// A Corral integrator client: follows the event log on NATS JetStream and a group's effective
// membership over the GraphQL websocket (graphql-ws), and resumes both after a restart exactly
// where it stopped.
//
// Each feed is appended to a file of JSON lines; the file is also the stored position: at
// start the client reads its last complete line (a line cut short by a crash is dropped) and
// asks for what follows it. A line is written with one write and fsync'd, so every event and
// every membership change lands exactly once, whenever the client is stopped or killed.
//
//   npm ci && npm run build
//   node dist/client.js --token crl_... --group <group id> --out ./state
//
// Events: the stream's sequence n is position n (a never-purged stream), so the consumer
// starts at the stored position + 1, and the Corral-Position header is checked anyway.
// Membership: `membershipChanges` with `after: <cursor of the last change>` (or `fromPosition`
// on the first run).

import * as fs from "node:fs";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { connect, DeliverPolicy } from "nats";
import { createClient } from "graphql-ws";
import WebSocket from "ws";

type Json = Record<string, unknown>;

/** An append-only JSON-lines file that is also the stored position. */
class JsonLines {
  last: Json | null = null;
  private fd: number;

  constructor(file: string) {
    if (fs.existsSync(file)) {
      const data = fs.readFileSync(file);
      const complete = data.subarray(0, data.lastIndexOf(0x0a) + 1);
      if (complete.length !== data.length) {
        // A line cut short by a crash: drop it, it was never acknowledged.
        fs.writeFileSync(file, complete);
      }
      const lines = complete.toString("utf8").split("\n").filter((l) => l.length > 0);
      if (lines.length > 0) this.last = JSON.parse(lines[lines.length - 1]) as Json;
    }
    this.fd = fs.openSync(file, "a");
  }

  append(record: Json): void {
    fs.writeSync(this.fd, JSON.stringify(record) + "\n");
    fs.fsyncSync(this.fd);
    this.last = record;
  }
}

const { values: args } = parseArgs({
  options: {
    "graphql-ws": { type: "string", default: "ws://127.0.0.1:8080/graphql/ws" },
    token: { type: "string", default: process.env.CORRAL_TOKEN },
    "nats-url": { type: "string", default: process.env.NATS_URL ?? "nats://127.0.0.1:4222" },
    "events-stream": { type: "string", default: "CORRAL_EVENTS" },
    "events-subject": { type: "string", default: "corral.events.>" },
    group: { type: "string" },
    "from-position": { type: "string", default: "1" },
    out: { type: "string", default: "." },
  },
});
if (!args.token || !args.group) {
  console.error("usage: client --token <token> --group <group id> [--out dir] [--graphql-ws url] [--nats-url url]");
  process.exit(2);
}
const fromPosition = Number(args["from-position"]);

/** The event log from NATS, from the stored position on. */
async function followEvents(out: JsonLines): Promise<void> {
  const nc = await connect({ servers: args["nats-url"] });
  try {
    const js = nc.jetstream();
    const last = out.last ? Number(out.last.position) : 0;
    const consumer = await js.consumers.get(args["events-stream"]!, {
      filterSubjects: args["events-subject"]!,
      deliver_policy: DeliverPolicy.StartSequence,
      opt_start_seq: last > 0 ? last + 1 : fromPosition,
    });
    const messages = await consumer.consume();
    for await (const m of messages) {
      const position = Number(m.headers?.get("Corral-Position"));
      if (out.last && position <= Number(out.last.position)) continue;
      const event = m.json<Json>();
      out.append({
        position,
        aggregateType: event.aggregateType,
        aggregateId: event.aggregateId,
        eventType: event.eventType,
        ceType: m.headers?.get("ce-type") ?? null,
      });
    }
  } finally {
    await nc.close();
  }
}

const SUBSCRIPTION = `
subscription Members($group: ID!, $from: Position, $after: String) {
  membershipChanges(groupId: $group, includeDescendants: true,
                    fromPosition: $from, after: $after) {
    cursor position index change memberId groupId source cause
  }
}`;

/** A group's effective membership changes over graphql-ws. */
async function followMembership(out: JsonLines): Promise<void> {
  const variables: Json = { group: args.group };
  if (out.last) variables.after = out.last.cursor;
  else variables.from = fromPosition;
  const client = createClient({
    url: args["graphql-ws"]!,
    webSocketImpl: WebSocket,
    connectionParams: { Authorization: `Bearer ${args.token}` },
    retryAttempts: 0,
  });
  try {
    for await (const result of client.iterate({ query: SUBSCRIPTION, variables })) {
      if (result.errors) throw new Error(`subscription error: ${JSON.stringify(result.errors)}`);
      out.append((result.data as Json).membershipChanges as Json);
    }
    throw new Error("subscription ended");
  } finally {
    await client.dispose();
  }
}

fs.mkdirSync(args.out!, { recursive: true });
const events = new JsonLines(path.join(args.out!, "events.ndjson"));
const members = new JsonLines(path.join(args.out!, "membership.ndjson"));
console.log(
  `resuming events after ${events.last?.position ?? null}, membership after ${members.last?.cursor ?? null}`,
);
for (const sig of ["SIGTERM", "SIGINT"] as const) process.on(sig, () => process.exit(0));
Promise.all([followEvents(events), followMembership(members)]).catch((err) => {
  console.error(`error: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
