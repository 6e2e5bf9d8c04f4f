// Drives the official npm `convex` sync client for the fault test (tests/integration/test_faults.py).
//
//   node fault_driver.mjs <server-url>
//
// One JSON command per stdin line, one JSON event per stdout line. Unlike driver.mjs it does not report every
// frame; it reports each Transition's end timestamp and, for the subscriptions named in `watch`, the values
// they hold right after that Transition was applied (read from the frames, so two queries updated by one
// Transition are seen together, as the client applies them). `drop` destroys the socket without a close
// handshake, as a network failure would.
import { createInterface } from "node:readline";
import WebSocket from "ws";
import { ConvexClient } from "convex/browser";
import { ConvexError } from "convex/values";
import { anyApi } from "convex/server";

const url = process.argv[2];
const emit = (event) => process.stdout.write(JSON.stringify(event, (_k, v) => (typeof v === "bigint" ? `${v}n` : v)) + "\n");
for (const level of ["log", "info", "warn", "error", "debug"]) {
  console[level] = () => {}; // reconnect chatter is expected under faults; stdout stays pure JSON
}

const canonical = (value) => JSON.stringify(value, (_k, v) => (v && typeof v === "object" && !Array.isArray(v)
  ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, v[k]])) : v));
const plainPath = (path) => path.replace(/\.js:/, ":").replace(/\.js$/, "");
const tsOf = (text) => Buffer.from(text, "base64").readBigUInt64LE(0).toString();

const watched = new Map(); // sub -> key (path + canonical args)
let current = null;

class WatchedWebSocket extends WebSocket {
  constructor(...args) {
    super(...args);
    current = this;
    this.queries = new Map(); // queryId -> key
    this.values = new Map(); // queryId -> value
    this.addEventListener("message", (m) => {
      const msg = JSON.parse(m.data);
      if (msg.type !== "Transition") return;
      for (const mod of msg.modifications) {
        if (mod.type === "QueryUpdated") this.values.set(mod.queryId, mod.value);
        else this.values.delete(mod.queryId);
      }
      const values = {};
      for (const [sub, key] of watched) {
        for (const [queryId, k] of this.queries) if (k === key && this.values.has(queryId)) values[sub] = this.values.get(queryId);
      }
      emit({ event: "transition", ts: tsOf(msg.endVersion.ts), values });
    });
  }

  send(data, ...rest) {
    const msg = JSON.parse(data);
    if (msg.type === "ModifyQuerySet") {
      for (const mod of msg.modifications) {
        if (mod.type === "Add") this.queries.set(mod.queryId, plainPath(mod.udfPath) + canonical(mod.args[0] ?? {}));
        else { this.queries.delete(mod.queryId); this.values.delete(mod.queryId); }
      }
    }
    return super.send(data, ...rest);
  }
}

const ref = (path) => {
  const [module, name] = path.split(":");
  return module.split("/").reduce((r, part) => r[part], anyApi)[name];
};
const describeError = (error) => ({
  kind: error instanceof ConvexError ? "ConvexError" : "Error",
  message: String(error.message ?? error),
  data: error instanceof ConvexError ? error.data : undefined,
});

const client = new ConvexClient(url, { webSocketConstructor: WatchedWebSocket });
const subscriptions = new Map();
const latest = new Map();

const commands = {
  async setAuth({ token }) {
    return await new Promise((resolve) => client.setAuth(async () => token, (ok) => resolve(ok)));
  },
  async subscribe({ sub, path, args, watch }) {
    if (watch) watched.set(sub, path + canonical(args));
    const unsubscribe = client.onUpdate(ref(path), args, (value) => latest.set(sub, value),
      (error) => latest.set(sub, { error: describeError(error) }));
    subscriptions.set(sub, unsubscribe);
  },
  async view({ sub }) {
    return latest.has(sub) ? { value: latest.get(sub) } : null;
  },
  async mutation({ path, args }) {
    return await client.mutation(ref(path), args);
  },
  async drop() {
    if (current !== null) current.terminate(); // no close frame: the server sees the TCP connection vanish
  },
  async exit() {
    for (const unsubscribe of subscriptions.values()) unsubscribe();
    await client.close();
    emit({ event: "bye" });
    process.exit(0);
  },
};

process.on("uncaughtException", (error) => {
  emit({ event: "uncaught", message: String(error?.stack ?? error) });
  process.exit(3);
});

createInterface({ input: process.stdin }).on("line", (line) => {
  const command = JSON.parse(line);
  const { op, tag } = command;
  commands[op](command).then(
    (value) => emit({ event: "result", tag, ok: true, value: value === undefined ? null : value }),
    (error) => emit({ event: "result", tag, ok: false, ...describeError(error) }),
  );
});
emit({ event: "ready" });
