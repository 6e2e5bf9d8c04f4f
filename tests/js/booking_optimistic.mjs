// The official npm client (convex@1.48.0) booking a class with an optimistic update, against a running backend.
//
// Usage: BOOKING_TEST_CONFIG='{"url", "token", "otherToken", "businessId", "from", "to", "first", "second"}' \
//        node booking_optimistic.mjs
// Prints one JSON report on stdout; tests/integration/test_booking_optimistic.py asserts on it.
//
// Phase "single": a customer subscribed to one week of `classes:list_instances` books `first` with an
// optimistic update that adds one to its `booked`. Every value the subscription delivers for that class is
// recorded: the sequence must be old, old+1 and never back to old (the server's answer replaces the guess
// with the same number), never old+2 (the guess applied on top of the server's answer).
// Phase "live": a second customer books `first` on another connection; the first client sees it arrive.
// Phase "race": both customers book `second` at the same moment, the first one optimistically; the first
// client's values for `second` must never go down.

import { ConvexClient } from "convex/browser";
import { anyApi } from "convex/server";

const config = JSON.parse(process.env.BOOKING_TEST_CONFIG ?? "{}");
const listInstances = anyApi.classes.list_instances;
const book = anyApi.bookings.book;
const logs = [];
const logger = {
  logVerbose: () => {},
  log: (...args) => logs.push(["log", args.map(String).join(" ")]),
  warn: (...args) => logs.push(["warn", args.map(String).join(" ")]),
  error: (...args) => logs.push(["error", args.map(String).join(" ")]),
  addLogLineListener: () => () => {},
};

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
    }, 5);
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Add one to `booked` of the class being booked, in every cached week of the schedule that shows it.
function incrementBooked(store, args) {
  for (const { args: queryArgs, value } of store.getAllQueries(listInstances)) {
    if (value === undefined) continue;
    store.setQuery(listInstances, queryArgs,
      value.map((c) => (c._id === args.instanceId ? { ...c, booked: c.booked + 1 } : c)));
  }
}

function signedIn(token) {
  const client = new ConvexClient(config.url, { logger });
  client.setAuth(async () => token);
  return client;
}

async function main() {
  const client = signedIn(config.token);
  const other = signedIn(config.otherToken);
  const seen = { [config.first]: [], [config.second]: [] }; // every delivered `booked`, per class
  const args = { businessId: config.businessId, from: config.from, to: config.to };
  client.onUpdate(listInstances, args, (classes) => {
    for (const c of classes) if (c._id in seen) seen[c._id].push(c.booked);
  }, (error) => logs.push(["queryError", String(error.message ?? error)]));
  await until(() => seen[config.first].length > 0, "the schedule");
  await sleep(200); // let the authenticated result settle before booking

  // single: one optimistic booking
  const singleStart = seen[config.first].length;
  const result = await client.mutation(book, { instanceId: config.first }, { optimisticUpdate: incrementBooked });
  const single = seen[config.first].slice(singleStart - 1); // from the last value before the booking
  await sleep(500); // anything delivered late (a flicker after the promise resolved) is caught here
  const singleSettled = seen[config.first].slice(singleStart - 1);

  // live: a booking on another connection arrives on this one
  const liveStart = seen[config.first].length;
  const otherResult = await other.mutation(book, { instanceId: config.first });
  const expected = singleSettled[singleSettled.length - 1] + 1;
  await until(() => seen[config.first][seen[config.first].length - 1] === expected, "the other booking");
  const live = seen[config.first].slice(liveStart - 1);

  // race: both book `second` at once, this client optimistically
  const raceStart = seen[config.second].length;
  const [mine, theirs] = await Promise.all([
    client.mutation(book, { instanceId: config.second }, { optimisticUpdate: incrementBooked }),
    other.mutation(book, { instanceId: config.second }),
  ]);
  const raceBase = seen[config.second][raceStart - 1];
  await until(() => seen[config.second][seen[config.second].length - 1] === raceBase + 2, "both race bookings");
  await sleep(300);
  const race = seen[config.second].slice(raceStart - 1);

  await client.close();
  await other.close();
  return { result, single, singleSettled, otherResult, live, race, raceResults: [mine, theirs] };
}

const timeout = setTimeout(() => {
  console.log(JSON.stringify({ error: "timed out", logs }));
  process.exit(3);
}, 45000);
try {
  const report = await main();
  clearTimeout(timeout);
  console.log(JSON.stringify({ ok: true, ...report, logs }));
  process.exit(0);
} catch (error) {
  clearTimeout(timeout);
  console.log(JSON.stringify({ error: String(error && error.stack ? error.stack : error), logs }));
  process.exit(2);
}
