// Light watchers for bench/sync.py's scoped phase, on Node's `ws`: the same protocol as
// `_sync_clients.py --stream-prefix` (auth, one live query `{stream: run}` per socket, wait
// for its replay_complete, heartbeat every 20 s), and the same stdio contract (`READY n`,
// `mark` -> `MARK {rows, errors}`, any other line -> close and write `--result-file`).
//
// Why Node: the scoped phase must not be bounded by its load generator, and a watcher
// here costs less CPU per delivered update than the Python one (bench/sync.py prints both
// in the "watcher µs / update" column; `--watcher python` runs the other).
// Live frames are never JSON-parsed: two regexes find each update's doc key and version.
"use strict";

const fs = require("fs");
const readline = require("readline");
const { performance } = require("perf_hooks");
const WebSocket = require("ws");

const RUNS = "runtime.run_summaries";
const SUMMARY = "runtime/run_summary:";
const KEY = /"doc_key":"([^"]*)"/g;
const VERSION = /"doc_version":(\d+)/g;

function arg(name) {
  const i = process.argv.indexOf(name);
  if (i < 0 || i + 1 >= process.argv.length) throw new Error(`${name} is required`);
  return process.argv[i + 1];
}

const config = JSON.parse(fs.readFileSync(arg("--config"), "utf8")); // {url, tokens, streams}
const resultFile = arg("--result-file");
const now = () => (performance.timeOrigin + performance.now()) / 1000; // seconds, wall clock

const subs = config.streams.map((stream, i) => ({
  stream, token: config.tokens[i], ws: null, frames: 0, rows: 0, errors: [], seen: [], closed: false,
}));

function listen(s, data) {
  const t = now();
  s.frames += 1;
  const text = data.toString("latin1"); // a byte copy: keys and digits are ASCII
  if (text.startsWith('{"type":"error"')) {
    s.errors.push(text.slice(0, 200));
    return;
  }
  if (!text.startsWith('{"type":"update_batch"')) return;
  const keys = [...text.matchAll(KEY)];
  const versions = [...text.matchAll(VERSION)];
  s.rows += versions.length;
  for (let i = 0; i < versions.length && i < keys.length; i++) {
    if (keys[i][1].startsWith(SUMMARY)) s.seen.push([s.stream, Number(versions[i][1]), t]);
  }
}

function open(s) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(config.url, { perMessageDeflate: false, maxPayload: 1 << 26 });
    let state = "auth";
    const fail = (err) => {
      clearTimeout(timer);
      if (state !== "live") {
        state = "failed";
        ws.terminate();
        reject(err);
      } else {
        s.errors.push(String(err).slice(0, 200));
      }
    };
    const timer = setTimeout(() => fail(new Error("no replay_complete within 60 s")), 60000);
    ws.on("open", () => ws.send(JSON.stringify({ type: "auth", token: s.token })));
    ws.on("message", (data) => {
      if (state === "live") return listen(s, data);
      const msg = JSON.parse(data.toString("utf8"));
      if (msg.type === "error") return fail(new Error(JSON.stringify(msg).slice(0, 200)));
      if (state === "auth" && msg.type === "ready") {
        state = "subscribe";
        ws.send(JSON.stringify({ type: "subscribe", sub: "r", topic: RUNS, scope: { stream: s.stream }, request_id: "b" }));
      } else if (state === "subscribe" && msg.type === "update_batch" && msg.replay_complete) {
        state = "live";
        clearTimeout(timer);
        s.ws = ws;
        resolve();
      }
    });
    ws.on("error", (err) => fail(err));
    ws.on("close", () => {
      s.closed = true;
      if (state !== "live") fail(new Error("closed before replay_complete"));
    });
  });
}

async function main() {
  const failures = [];
  const t0 = now();
  let next = 0;
  async function worker() {
    while (next < subs.length) {
      const s = subs[next++];
      for (let attempt = 0; attempt < 3; attempt++) {
        try {
          await open(s);
          break;
        } catch (err) {
          if (attempt === 2) failures.push(String(err).slice(0, 200));
          await new Promise((r) => setTimeout(r, 200 * (attempt + 1)));
        }
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(64, subs.length) }, worker));
  const connectS = now() - t0;
  const live = subs.filter((s) => s.ws !== null);
  const beat = JSON.stringify({ type: "heartbeat" });
  const heartbeats = setInterval(() => live.forEach((s) => !s.closed && s.ws.send(beat)), 20000);
  process.stdout.write(`READY ${live.length}\n`);

  const rl = readline.createInterface({ input: process.stdin });
  let finished = false;
  const finish = async () => {
    if (finished) return;
    finished = true;
    clearInterval(heartbeats);
    const stillOpen = live.filter((s) => !s.closed).length;
    live.forEach((s) => s.ws.close());
    await new Promise((r) => setTimeout(r, 200));
    const errors = live.flatMap((s) => s.errors);
    const result = {
      sockets: live.length,
      connect_failures: failures.length,
      first_connect_failure: failures[0] || null,
      connect_s: Math.round(connectS * 1000) / 1000,
      still_open: stillOpen,
      frames: live.reduce((n, s) => n + s.frames, 0),
      rows: live.map((s) => s.rows),
      errors: errors.length,
      first_error: errors[0] || null,
      seen: live.filter((s) => s.seen.length).map((s) => s.seen),
    };
    const tmp = `${resultFile}.${process.pid}.tmp`; // all or nothing, as benchlib.write_json_atomic
    fs.writeFileSync(tmp, JSON.stringify(result));
    fs.renameSync(tmp, resultFile);
    process.exit(0);
  };
  rl.on("line", (line) => {
    if (line.trim() !== "mark") return finish();
    const rows = live.reduce((n, s) => n + s.rows, 0);
    const errs = live.reduce((n, s) => n + s.errors.length, 0);
    process.stdout.write(`MARK ${JSON.stringify({ rows, errors: errs })}\n`);
  });
  rl.on("close", finish);
}

main().catch((err) => {
  process.stderr.write(`${err.stack || err}\n`);
  process.exit(1);
});
