// Socket authentication with the official npm client (convex@1.48.0) against a running backend.
//
// Usage: AUTH_TEST_CONFIG='{"url":..., "secret":..., "businessId":..., "owner":..., "scenario":...}' node auth.mjs
// Prints one JSON report on stdout; the Python test asserts on it. Frames are recorded by a WebSocket subclass
// handed to the client, so the report holds exactly what the server sent (AuthError fields, identity versions).
//
// Scenarios:
//   confirm   setAuth with a valid token: onChange(true) after an identity-bumping Transition, the refreshed
//             token is confirmed too, and a members-only query starts returning data.
//   giveUp    every fetched token is wrongly signed: the client retries on new sockets, then calls
//             onChange(false) and carries on unauthenticated.
//   expired   the token expires mid-session: the next mutation gets AuthError{authUpdateAttempted:false}, the
//             client fetches a fresh token on a new socket and the mutation then runs exactly once.

import { createHmac, randomUUID } from "node:crypto";
import { ConvexClient } from "convex/browser";
import WebSocket from "ws";

const config = JSON.parse(process.env.AUTH_TEST_CONFIG ?? "{}");
const frames = []; // every server frame except Ping, tagged with the socket it arrived on
const sent = []; // every client frame's type (and baseVersion for Authenticate)
const logs = [];
let sockets = 0;

class RecordingWebSocket extends WebSocket {
  constructor(url, ...rest) {
    super(url, ...rest);
    const socket = ++sockets;
    this.on("message", (data) => {
      const message = JSON.parse(data.toString());
      if (message.type !== "Ping") frames.push({ socket, ...message });
    });
  }
  send(data, ...rest) {
    const message = JSON.parse(data);
    sent.push({ type: message.type, tokenType: message.tokenType, baseVersion: message.baseVersion });
    return super.send(data, ...rest);
  }
}

const logger = {
  logVerbose: () => {},
  log: (...args) => logs.push(["log", args.map(String).join(" ")]),
  warn: (...args) => logs.push(["warn", args.map(String).join(" ")]),
  error: (...args) => logs.push(["error", args.map(String).join(" ")]),
  addLogLineListener: () => () => {},
};

function b64url(value) {
  return Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url");
}

// HS256 like the server's dev tokens; jti makes every token distinct, so the client always sees a new one.
function mint({ sub, secret = config.secret, ttl = 600, now = Date.now() / 1000 }) {
  const iat = Math.floor(now);
  const header = b64url({ alg: "HS256", typ: "JWT" });
  const payload = b64url({ sub, iss: "tidewater-dev", iat, exp: Math.floor(now + ttl), jti: randomUUID() });
  const signature = createHmac("sha256", secret).update(`${header}.${payload}`).digest("base64url");
  return `${header}.${payload}.${signature}`;
}

function makeClient() {
  return new ConvexClient(config.url, { webSocketConstructor: RecordingWebSocket, logger });
}

function until(predicate, what, timeoutMs = 15000) {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const timer = setInterval(() => {
      if (predicate()) {
        clearInterval(timer);
        resolve();
      } else if (Date.now() - started > timeoutMs) {
        clearInterval(timer);
        reject(new Error(`timed out waiting for ${what}`));
      }
    }, 20);
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function bumps() {
  return frames
    .filter((f) => f.type === "Transition" && f.endVersion.identity > f.startVersion.identity)
    .map((f) => [f.socket, f.startVersion.identity, f.endVersion.identity]);
}

function authErrors() {
  return frames
    .filter((f) => f.type === "AuthError")
    .map(({ socket, error, baseVersion, authUpdateAttempted }) => ({ socket, error, baseVersion, authUpdateAttempted }));
}

async function confirm() {
  const client = makeClient();
  const changes = [];
  const fetches = [];
  const values = [];
  const errors = [];
  client.onUpdate("businesses:get", { businessId: config.businessId }, (v) => values.push(v), (e) => errors.push(e.message));
  client.setAuth(async (args) => {
    fetches.push(args.forceRefreshToken);
    return mint({ sub: config.owner });
  }, (ok) => changes.push(ok));
  await until(() => changes.length > 0, "onChange");
  await until(() => values.some((v) => v && v.name === config.businessName), "the business after auth");
  await until(() => bumps().length >= 2, "confirmation of the refreshed token");
  await sleep(200);
  await client.close();
  return { changes, fetches, bumps: bumps(), names: values.map((v) => v && v.name), errors };
}

async function giveUp() {
  const client = makeClient();
  const changes = [];
  const fetches = [];
  const counter = [];
  client.setAuth(async (args) => {
    fetches.push(args.forceRefreshToken);
    return mint({ sub: "mallory", secret: `wrong-${randomUUID()}` });
  }, (ok) => changes.push(ok));
  client.onUpdate("counters:get", { name: config.counter }, (v) => counter.push(v));
  await until(() => changes.length > 0, "onChange(false)");
  // Unauthenticated, the client keeps working: the subscription is answered on a socket without auth.
  await until(() => counter.length > 0, "an unauthenticated query result");
  await sleep(300);
  await client.close();
  const gaveUp = logs.filter(([level, text]) => level === "error" && text.includes("Failed to authenticate"));
  return { changes, fetches, authErrors: authErrors(), sockets, counter, gaveUp: gaveUp.map(([, t]) => t) };
}

async function expired() {
  const client = makeClient();
  const changes = [];
  const fetches = [];
  // The first token lives two seconds; the client re-fetches once right after confirmation and gets the same
  // token back, so nothing refreshes it before it expires. Later fetches return a long-lived token.
  const now = Date.now() / 1000;
  const short = mint({ sub: config.owner, ttl: 2, now });
  const shortExp = Math.floor(now + 2);
  client.setAuth(async (args) => {
    fetches.push(args.forceRefreshToken);
    return fetches.length <= 2 ? short : mint({ sub: config.owner });
  }, (ok) => changes.push(ok));
  await until(() => changes.length > 0 && fetches.length >= 2, "confirmation of the short token");
  await sleep(Math.max(0, shortExp * 1000 - Date.now()) + 250);
  const result = await client.mutation("businesses:create", { name: config.businessName, timezone: "UTC" });
  await sleep(200);
  await client.close();
  return { changes, fetches, authErrors: authErrors(), bumps: bumps(), result, sent };
}

const scenarios = { confirm, giveUp, expired };
const timeout = setTimeout(() => {
  console.log(JSON.stringify({ error: "scenario timed out", frames, logs }));
  process.exit(3);
}, 45000);
try {
  const report = await scenarios[config.scenario]();
  clearTimeout(timeout);
  console.log(JSON.stringify({ ok: true, ...report, logs }));
  process.exit(0);
} catch (error) {
  clearTimeout(timeout);
  console.log(JSON.stringify({ error: String(error && error.stack ? error.stack : error), frames, logs }));
  process.exit(2);
}
