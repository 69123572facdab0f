'use strict';

// JSON.stringify and JSON.parse in JavaScript for the values alova stores (a 250 B entry, 10 KB,
// 1 MB): the share of an adapter call that is JSON, and the figure serde_json would have to beat
// if the JSON moved into Rust. `npm run bench` runs it in a child process; it also runs alone:
//   node bench/json.js            (BENCH_QUICK=1 for a short run)

const { entry, SIZES } = require('./values');

const now = () => process.hrtime.bigint();

/** Calls `fn` in batches for about `ms` ms (after a warm-up); returns ops/s and µs per op. */
function timeIt(fn, ms) {
  const warmEnd = now() + BigInt(Math.round(ms * 0.2 * 1e6));
  while (now() < warmEnd) fn();
  let ops = 0;
  let batch = 1;
  const t0 = now();
  const end = t0 + BigInt(Math.round(ms * 1e6));
  let t = t0;
  while (t < end) {
    for (let i = 0; i < batch; i += 1) fn();
    ops += batch;
    t = now();
    if (batch < 1024 && t - t0 < 50000000n) batch *= 2;
  }
  const seconds = Number(t - t0) / 1e9;
  return { ops, opsPerSec: ops / seconds, usPerOp: (seconds * 1e6) / ops };
}

function runJsonBench({ ms = 1000 } = {}) {
  const results = [];
  let sink = 0;
  for (const size of Object.keys(SIZES)) {
    const value = entry(size);
    const text = JSON.stringify(value);
    const bytes = Buffer.byteLength(text);
    const perSize = ms * (size === '1MB' ? 2 : 1); // fewer, longer calls: give them more time
    const stringify = timeIt(() => {
      sink += JSON.stringify(value).length;
    }, perSize);
    const parse = timeIt(() => {
      sink += JSON.parse(text).length;
    }, perSize);
    results.push({
      size,
      bytes,
      stringify: { ...stringify, mbPerSec: (stringify.opsPerSec * bytes) / 1e6 },
      parse: { ...parse, mbPerSec: (parse.opsPerSec * bytes) / 1e6 },
    });
  }
  if (sink === 0) console.log(''); // keeps the calls from being optimised away
  return results;
}

function format(results) {
  const lines = ['size      bytes      stringify ops/s   µs/op     MB/s | parse ops/s   µs/op     MB/s'];
  for (const r of results) {
    lines.push(
      `${r.size.padEnd(6)} ${String(r.bytes).padStart(9)}  ${r.stringify.opsPerSec.toFixed(0).padStart(16)} ${r.stringify.usPerOp
        .toFixed(2)
        .padStart(7)} ${r.stringify.mbPerSec.toFixed(0).padStart(8)} | ${r.parse.opsPerSec.toFixed(0).padStart(11)} ${r.parse.usPerOp
        .toFixed(2)
        .padStart(7)} ${r.parse.mbPerSec.toFixed(0).padStart(8)}`,
    );
  }
  return lines.join('\n');
}

module.exports = { runJsonBench, format };

if (require.main === module) {
  const quick = process.env.BENCH_QUICK === '1';
  const results = runJsonBench({ ms: Number(process.env.BENCH_JSON_MS) || (quick ? 200 : 1000) });
  if (process.send) {
    process.send({ ok: true, result: results }, () => process.exit(0));
  } else {
    console.log(format(results));
  }
}
