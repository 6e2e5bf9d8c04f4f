// Drives the official, unmodified npm `convex` clients for the pytest suite (tests/integration/test_official_*.py).
//
//   node driver.mjs <server-url>
//
// Reads one JSON command per stdin line and prints one JSON event per stdout line, so a test can interleave
// client actions with server-side actions (a socket drop, a write from another client) deterministically.
// Commands carry a `tag`; the answer to a command is {"event":"result","tag",...}. Everything the sync client
// observes is reported as it happens: onUpdate values and errors, every frame in and out of its WebSocket.
import { createInterface } from "node:readline";
import WebSocket from "ws";
import { ConvexClient, ConvexHttpClient } from "convex/browser";
import { ConvexError } from "convex/values";
import { anyApi } from "convex/server";

const url = process.argv[2];
const started = Date.now();
const emit = (event) => process.stdout.write(JSON.stringify({ ...event, ms: Date.now() - started }, (_k, v) => (typeof v === "bigint" ? `${v}n` : v)) + "\n");

// The client logs through console.*; keep stdout pure JSON by reporting those lines as events.
for (const level of ["log", "info", "warn", "error", "debug"]) {
  console[level] = (...parts) => emit({ event: "console", level, text: parts.map((p) => (typeof p === "string" ? p : String(p?.stack ?? JSON.stringify(p)))).join(" ") });
}

let socketCount = 0;
let blackhole = false; // while true, incoming frames are swallowed before the client sees them (a lossy network)

// The client's own WebSocket (`ws`, as convex/browser uses under Node), with every frame reported.
class SpyWebSocket extends WebSocket {
  constructor(...args) {
    super(...args);
    const socket = ++socketCount;
    emit({ event: "socket", socket, url: args[0] });
    this.addEventListener("close", (e) => {
      blackhole = false;
      emit({ event: "closed", socket, code: e.code, reason: e.reason });
    });
    this.addEventListener("message", (m) => {
      const msg = JSON.parse(m.data);
      if (msg.type !== "Ping") emit({ event: "frame", dir: "in", socket, dropped: blackhole, msg });
    });
    this.spyNumber = socket;
  }

  set onmessage(handler) {
    super.onmessage = handler === null ? null : (m) => (blackhole ? undefined : handler(m));
  }

  get onmessage() {
    return super.onmessage;
  }

  send(data, ...rest) {
    emit({ event: "frame", dir: "out", socket: this.spyNumber, msg: JSON.parse(data) });
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

// Optimistic updates the tests can ask for by name: the update must be a function, so it lives here.
const optimisticUpdates = {
  incrementCounter: (query) => (store, args) => {
    const current = store.getQuery(ref(query), { name: args.name });
    if (current !== undefined) store.setQuery(ref(query), { name: args.name }, current + (args.by ?? 1));
  },
};

let sync = null;
const syncClient = () => {
  if (sync === null) sync = new ConvexClient(url, { webSocketConstructor: SpyWebSocket });
  return sync;
};
const http = new ConvexHttpClient(url);
const subscriptions = new Map();

const commands = {
  async httpSetAuth({ token }) {
    http.setAuth(token);
  },
  async http({ kind, path, args }) {
    return await http[kind](ref(path), args);
  },
  async setAuth({ token }) {
    return await new Promise((resolve) => syncClient().setAuth(async () => token, (ok) => resolve(ok)));
  },
  async subscribe({ sub, path, args }) {
    const unsubscribe = syncClient().onUpdate(
      ref(path),
      args,
      (value) => emit({ event: "update", sub, value }),
      (error) => emit({ event: "queryError", sub, ...describeError(error) }),
    );
    subscriptions.set(sub, unsubscribe);
  },
  async unsubscribe({ sub }) {
    subscriptions.get(sub)();
    subscriptions.delete(sub);
  },
  // Resolves when the mutation does; `mutation-sent` goes out at once, so a test can act while it is in flight.
  async mutation({ path, args, optimistic, tag }) {
    const options = optimistic ? { optimisticUpdate: optimisticUpdates[optimistic.kind](optimistic.query) } : {};
    const promise = syncClient().mutation(ref(path), args, options);
    emit({ event: "mutation-sent", tag });
    return await promise;
  },
  async action({ path, args }) {
    return await syncClient().action(ref(path), args);
  },
  async blackhole() {
    blackhole = true;
  },
  async exit() {
    for (const unsubscribe of subscriptions.values()) unsubscribe();
    if (sync !== null) await sync.close();
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
  // Commands run concurrently: a pending mutation must not hold up the next command.
  commands[op](command).then(
    (value) => emit({ event: "result", tag, ok: true, value: value === undefined ? null : value }),
    (error) => emit({ event: "result", tag, ok: false, ...describeError(error) }),
  );
});
emit({ event: "ready" });
