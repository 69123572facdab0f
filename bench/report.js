'use strict';

// Turns the figures of a run (bench/run.js) into BENCHMARKS.md and bench/chart.svg.

const fs = require('node:fs');
const path = require('node:path');
const { median, range } = require('./stats');
const { TIMEOUT_OPTIONS, CLUSTER, BATCH } = require('./cases');

const NAMES = { ours: 'ours (native)', reference: 'reference (ioredis + redlock)' };
/** The pipeline / multi cases compare the clients themselves: RedisClient against ioredis's. */
const BATCH_NAMES = { ours: 'ours (RedisClient)', reference: 'reference (ioredis)' };
const nameOf = (g, a) => (g.case.kind === 'batch' ? BATCH_NAMES : NAMES)[a];

// ---------------------------------------------------------------------------------------------
// Aggregation
// ---------------------------------------------------------------------------------------------

function aggregate(data) {
  const out = new Map();
  for (const c of data.cases) {
    const byAdapter = {};
    for (const adapter of ['ours', 'reference']) {
      const rs = data.measurements.filter((m) => m.id === c.id && m.adapter === adapter).map((m) => m.result);
      if (rs.length === 0) continue;
      const pick = (k) => rs.map((r) => r[k]);
      byAdapter[adapter] = {
        rounds: rs.length,
        ops: median(pick('opsPerSec')),
        opsRange: range(pick('opsPerSec')),
        commandsPerSec: median(pick('commandsPerSec')),
        p50: median(pick('p50')),
        p99: median(pick('p99')),
        cpu: median(pick('cpuUsPerOp')),
        kernelCpu: median(pick('kernelCpuUsPerOp')),
        ctx: median(pick('ctxSwitchesPerOp')),
        busiestShare: median(pick('busiestShare')),
        idleCallers: median(pick('idleCallers')),
        redisCpu: median(pick('redisCpuUsPerOp')),
        rssBefore: median(pick('rssBefore')),
        rssAfter: median(pick('rssAfter')),
        rest: median(pick('restCores')),
        errors: pick('errors').reduce((s, x) => s + (x || 0), 0),
        firstError: rs.map((r) => r.firstError).find(Boolean) || null,
        exhausted: rs.some((r) => r.exhausted),
        maxGapMs: Math.max(...rs.map((r) => r.maxGapMs ?? 0)),
        gapMedianMs: median(pick('maxGapMs')),
        overlaps: pick('overlaps').reduce((s, x) => s + (x || 0), 0),
        leaked: pick('leakedLocks').reduce((s, x) => s + (x || 0), 0),
        leakedPerRound: pick('leakedLocks'),
        restMax: Math.max(...pick('restCores').map((x) => x || 0)),
        drainMs: Math.max(...rs.map((r) => r.drainMs ?? 0)),
        networkRequests: pick('networkRequests').reduce((s, x) => s + (x || 0), 0),
      };
      if (c.kind === 'contended-procs') Object.assign(byAdapter[adapter], procsFigures(rs));
      if (c.kind === 'handoff') Object.assign(byAdapter[adapter], handoffFigures(rs));
    }
    out.set(c.id, { case: c, ...byAdapter });
  }
  return out;
}

/** Across processes (bench/procs.js): shares per round, the worst process, exclusion, the line. */
function procsFigures(rs) {
  const pick = (k) => rs.map((r) => r[k]);
  return {
    sharesPerRound: pick('processShares'),
    cyclesPerRound: pick('processCycles'),
    minShare: Math.min(...pick('minProcessShare')),
    minShareMedian: median(pick('minProcessShare')),
    worstProcessP99: median(rs.map((r) => Math.max(...r.processP99.filter((x) => x !== null)))),
    processFailures: rs.map((r) => r.processFailures),
    crossOverlaps: pick('crossOverlaps').reduce((s, x) => s + (x || 0), 0),
    worstOverlapUs: Math.max(0, ...pick('worstOverlapUs').map((x) => x || 0)),
    waitersLeft: pick('waitersLeft').reduce((s, x) => s + (x || 0), 0),
    switchesPerCycle: median(pick('switchesPerCycle')),
    clockSkewUs: Math.max(...rs.map((r) => r.clock.skewUs)),
    clockUncertaintyUs: Math.max(...rs.map((r) => r.clock.uncertaintyUs)),
  };
}

/** Hand-offs: every round's samples pooled (a round measures only a share of them). */
function handoffFigures(rs) {
  const all = rs.flatMap((r) => r.samplesMs).sort((a, b) => a - b);
  const at = (q) => (all.length ? all[Math.min(all.length - 1, Math.floor(q * all.length))] * 1000 : null);
  return {
    handoffs: all.length,
    p50: at(0.5),
    p90: at(0.9),
    p99: at(0.99),
    min: all.length ? all[0] * 1000 : null,
    max: all.length ? all[all.length - 1] * 1000 : null,
    mean: all.length ? (all.reduce((s, x) => s + x, 0) / all.length) * 1000 : null,
    early: rs.reduce((s, r) => s + (r.early || 0), 0),
    unlockMs: median(rs.flatMap((r) => r.unlockMs)),
    waitersLeft: rs.reduce((s, r) => s + (r.waitersLeft || 0), 0),
    clockSkewUs: Math.max(...rs.map((r) => r.clock.skewUs)),
    clockUncertaintyUs: Math.max(...rs.map((r) => r.clock.uncertaintyUs)),
  };
}

/** Cases whose ops/s is a rate (every case but the hand-off, which is a latency only). */
const hasRate = (g) => g.case.kind !== 'handoff';

const ratio = (a, b) => (a !== null && b !== null && a !== undefined && b !== undefined && b !== 0 ? a / b : null);

// ---------------------------------------------------------------------------------------------
// Formatting
// ---------------------------------------------------------------------------------------------

function fmtOps(x) {
  if (x === null || x === undefined) return '-';
  return x >= 100 ? Math.round(x).toLocaleString('en-US') : x.toFixed(1);
}

function fmtUs(x) {
  if (x === null || x === undefined) return '-';
  if (x >= 10000) return `${(x / 1000).toFixed(1)} ms`;
  if (x >= 1000) return `${(x / 1000).toFixed(2)} ms`;
  if (x >= 100) return `${x.toFixed(0)} µs`;
  return `${x.toFixed(1)} µs`;
}

const fmtX = (x) => (x === null ? '-' : x < 0.1 ? `${x.toPrecision(2)}x` : `${x.toFixed(2)}x`);
const mb = (bytes) => (bytes === null || bytes === undefined ? '-' : (bytes / 2 ** 20).toFixed(1));
const cores = (x) => (x === null || x === undefined ? '-' : x.toFixed(2));

// ---------------------------------------------------------------------------------------------
// Targets
// ---------------------------------------------------------------------------------------------

/** ops/s of ours / the reference wanted for set and get of 250 B, by operations in flight. */
const THROUGHPUT_TARGETS = [[256, 2], [16, 1.5]];
const wantAt = (inflight) => (THROUGHPUT_TARGETS.find(([n]) => n === inflight) || [])[1] ?? null;

/** The connections the throughput targets are checked on: case id suffix, wording. */
const VARIANTS = [
  { suffix: '', text: '' },
  { suffix: '-timeout', text: ' with `commandTimeout` set' },
  { suffix: '-cluster', text: ' on a cluster' },
];

function targets(agg, data) {
  const lines = [];
  const mark = (ok) => (ok === null ? 'not measured' : ok ? 'met' : 'NOT met');
  const get = (id) => agg.get(id);
  const has = (id) => get(id) && get(id).ours && get(id).reference;

  // The throughput targets, on one server with default options and in the variants (issue 9):
  // with `commandTimeout` set and on a cluster.
  for (const variant of VARIANTS) {
    for (const [inflight, want] of THROUGHPUT_TARGETS) {
      for (const op of ['set', 'get']) {
        const id = `${op}-250B-${inflight}${variant.suffix}`;
        if (!has(id)) {
          lines.push({ ok: null, text: `${op} 250 B ops/s >= ${want}x the reference at ${inflight} in flight${variant.text}` });
          continue;
        }
        const r = ratio(get(id).ours.ops, get(id).reference.ops);
        lines.push({
          ok: r >= want,
          text: `${op} 250 B ops/s >= ${want}x the reference at ${inflight} in flight${variant.text}: ${fmtOps(get(id).ours.ops)} vs ${fmtOps(get(id).reference.ops)} = ${fmtX(r)}`,
        });
      }
    }
  }

  for (const op of ['set', 'get']) {
    const parts = [];
    let ok = true;
    let any = false;
    for (const inflight of [1, 16, 256]) {
      const id = `${op}-250B-${inflight}`;
      if (!has(id)) continue;
      any = true;
      const o = get(id).ours.p99;
      const r = get(id).reference.p99;
      if (!(o <= r)) ok = false;
      parts.push(`${inflight} in flight ${fmtUs(o)} vs ${fmtUs(r)}${o <= r ? '' : ' (worse)'}`);
    }
    lines.push({ ok: any ? ok : null, text: `${op} 250 B p99 no worse than the reference at any concurrency: ${parts.join('; ')}` });
  }

  {
    const parts = [];
    let ok = true;
    let any = false;
    for (const op of ['set', 'get']) {
      for (const inflight of [1, 16, 256]) {
        const id = `${op}-250B-${inflight}`;
        if (!has(id)) continue;
        any = true;
        const r = ratio(get(id).ours.cpu, get(id).reference.cpu);
        if (!(r <= 0.5)) ok = false;
        parts.push(`${op}@${inflight} ${fmtUs(get(id).ours.cpu)} vs ${fmtUs(get(id).reference.cpu)} = ${fmtX(r)}`);
      }
    }
    lines.push({ ok: any ? ok : null, text: `node CPU per operation <= 0.5x the reference (set/get 250 B): ${parts.join('; ')}` });
  }

  if (has('contended-1') && has('contended-16')) {
    const o = get('contended-1').ours;
    const ref = get('contended-16').reference;
    const r = ratio(o.ops, ref.ops);
    const ok = r >= 2 && o.maxGapMs <= 10;
    lines.push({
      ok,
      text: `contended lock, one adapter: >= 2x the reference's separate-adapter cycles/s with no gap > 10 ms: ${fmtOps(o.ops)} vs ${fmtOps(ref.ops)} cycles/s = ${fmtX(r)}, longest gap ${o.maxGapMs.toFixed(1)} ms (worst round)`,
    });
  } else {
    lines.push({ ok: null, text: 'contended lock, one adapter: >= 2x the reference (separate adapters), no gap > 10 ms' });
  }

  // Across processes (issue 10): 3 processes x 8 callers, one adapter per process.
  if (has('contended-3x8')) {
    const o = get('contended-3x8').ours;
    const ref = get('contended-3x8').reference;
    const r = ratio(o.ops, ref.ops);
    const sep = get('contended-3x8-separate');
    const sepText = sep && sep.reference
      ? ` (for comparison, the reference with one adapter per caller, which avoids its lock-map leak: ${fmtOps(sep.reference.ops)} cycles/s, ours / that = ${fmtX(ratio(o.ops, sep.reference.ops))}; its shares: ${sharesText(sep.reference)})`
      : '';
    lines.push({
      ok: r >= 3,
      text: `contended lock, 3 processes x 8 callers (one adapter per process): >= 3x the reference's cycles/s: ${fmtOps(o.ops)} vs ${fmtOps(ref.ops)} = ${fmtX(r)}${sepText}`,
    });
  } else {
    lines.push({ ok: null, text: 'contended lock, 3 processes x 8 callers: >= 3x the reference\'s cycles/s' });
  }
  if (get('contended-3x8') && get('contended-3x8').ours) {
    const o = get('contended-3x8').ours;
    lines.push({
      ok: o.minShare >= 0.25 && o.errors === 0,
      text: `contended lock, 3 processes x 8 callers, ours: every process >= 25% of the cycles and no lock() fails: smallest share ${(100 * o.minShare).toFixed(1)}% (worst round; shares ${sharesText(o)}), ${o.errors} failed lock() calls`,
    });
  } else {
    lines.push({ ok: null, text: 'contended lock, 3 processes x 8 callers, ours: every process >= 25% of the cycles, no lock() fails' });
  }
  if (get('handoff') && get('handoff').ours) {
    const o = get('handoff').ours;
    const ref = get('handoff').reference;
    lines.push({
      ok: o.p50 < 2000 && o.errors === 0 && o.early === 0,
      text: `cross-process hand-off p50 < 2 ms: ours p50 ${fmtUs(o.p50)}, p99 ${fmtUs(o.p99)} over ${o.handoffs} hand-offs${o.errors ? `, ${o.errors} failed` : ''}${o.early ? `, ${o.early} resolved before the unlock` : ''}${ref ? ` (reference: p50 ${fmtUs(ref.p50)}, p99 ${fmtUs(ref.p99)})` : ''}`,
    });
  } else {
    lines.push({ ok: null, text: 'cross-process hand-off p50 < 2 ms' });
  }

  if (data.rss && data.rss.ours) {
    const r = data.rss.ours;
    const growth = r.rssEnd - r.rssStart;
    const peak = r.rssPeak - r.rssStart;
    const full = r.ops >= 1000000;
    lines.push({
      ok: growth < 50 * 2 ** 20 && peak < 50 * 2 ** 20,
      text: `RSS growth < 50 MB over ${full ? '1M' : r.ops.toLocaleString('en-US')} set/get operations: ${mb(growth)} MB at the end, ${mb(peak)} MB at the peak (${mb(r.rssStart)} -> ${mb(r.rssEnd)} MB)${full ? '' : ' (fewer operations than the target\'s 1M: a quick run)'}`,
    });
  } else {
    lines.push({ ok: null, text: 'RSS growth < 50 MB over 1M set/get operations' });
  }
  return lines.map((l) => ({ ...l, line: `- **${mark(l.ok)}**: ${l.text}` }));
}

/** Each process's share of the cycles, per round: `34/33/33%, ...`. */
function sharesText(s) {
  return s.sharesPerRound.map((round) => `${round.map((x) => (100 * (x || 0)).toFixed(0)).join('/')}%`).join(', ');
}

// ---------------------------------------------------------------------------------------------
// Observations
// ---------------------------------------------------------------------------------------------

/** A few facts drawn from the figures, so that the report says where the time goes. */
function whereTimeGoes(agg, data) {
  const notes = [];
  const both = (id) => {
    const g = agg.get(id);
    return g && g.ours && g.reference ? g : null;
  };
  const one = ['set-250B-1', 'get-250B-1'].map(both).filter(Boolean);
  if (one.length) {
    const kernel = (s) => (s.kernelCpu == null ? '' : ` (${fmtUs(s.kernelCpu)} of it in the kernel)`);
    const moreWakes = one.some((g) => g.ours.ctx > 1.5 * g.reference.ctx);
    notes.push(
      'One call at a time: ' +
        one
          .map((g) => `${g.case.op} costs ours ${fmtUs(g.ours.cpu)} of CPU${kernel(g.ours)} and ${g.ours.ctx.toFixed(1)} context switches per call, the reference ${fmtUs(g.reference.cpu)}${kernel(g.reference)} and ${g.reference.ctx.toFixed(1)}`)
          .join('; ') +
        (moreWakes
          ? '. The native path wakes more threads per call (JavaScript thread to the Rust I/O threads and back); with nothing else in flight that hand-off is the cost, not the JSON (under 1 µs at 250 B, below) nor Redis.'
          : '. Both make one round trip with one wake-up of the JavaScript thread per call, and most of the CPU is the kernel\'s share of that round trip (sending, sleeping, waking), which is the same for any client; the difference is the user-space part.'),
    );
  }
  const many = ['set-250B-256', 'get-250B-256'].map(both).filter(Boolean);
  if (many.length) {
    notes.push(
      'redis-server CPU per call at 256 in flight: ' +
        many.map((g) => `${g.case.op} ${fmtUs(g.ours.redisCpu)} with ours, ${fmtUs(g.reference.redisCpu)} with the reference`).join('; ') +
        '. Pipelining on one socket lets Redis read and answer many commands per system call; on 2 cores the node process and redis-server compete, so Redis CPU saved is throughput available to the client.',
    );
    const setG = both('set-250B-256');
    const getG = both('get-250B-256');
    if (setG && getG && setG.ours.cpu > 1.3 * getG.ours.cpu && setG.reference.cpu < 1.3 * getG.reference.cpu) {
      notes.push(
        `At 256 in flight ours spends ${fmtUs(setG.ours.cpu)} per \`set\` against ${fmtUs(getG.ours.cpu)} per \`get\` (the reference: ${fmtUs(setG.reference.cpu)} and ${fmtUs(getG.reference.cpu)}): the write path carries the extra cost.`,
      );
    }
  }
  const spread = (a) => {
    const ids = [...agg.values()].filter((g) => g.case.kind === 'op' && g[a] && g[a].opsRange && g[a].rounds > 1);
    if (!ids.length) return null;
    return median(ids.map((g) => g[a].opsRange[1] / g[a].opsRange[0]));
  };
  const so = spread('ours');
  const sr = spread('reference');
  if (so && sr) {
    notes.push(
      `Round-to-round spread (max/min ops/s over the storage cases, median): ours ${so.toFixed(2)}, reference ${sr.toFixed(2)}. With ${data.info.cores} cores for the JavaScript thread, the Rust I/O threads and redis-server, where the scheduler puts them moves single rounds a lot: compare medians, and ratios within one run rather than across runs.`,
    );
  }
  const big = both('get-1MB-16');
  const j = data.json && data.json.find((r) => r.size === '1MB');
  if (big && j) {
    const r = ratio(big.ours.cpu, big.reference.cpu);
    notes.push(
      `1 MB values: \`JSON.parse\` alone takes ${fmtUs(j.parse.usPerOp)} and \`JSON.stringify\` ${fmtUs(j.stringify.usPerOp)} per call here, against ${fmtUs(big.ours.cpu)} (ours) and ${fmtUs(big.reference.cpu)} (reference) of CPU per \`get\`` +
        (r > 0.8 && r < 1.25 ? ': large values are mostly JSON and copies, whichever adapter carries them.' : '.'),
    );
  }
  const c1 = both('contended-1');
  if (c1) {
    notes.push(
      'Contended, one adapter: ' +
        `ours hands the lock to the next caller in FIFO order (busiest caller ${(100 * c1.ours.busiestShare).toFixed(0)}% of cycles, longest gap ${c1.ours.maxGapMs.toFixed(1)} ms); ` +
        (c1.reference.leaked > 0
          ? `the reference leaked ${c1.reference.leaked} lock(s) over ${c1.reference.rounds} round(s) (its unlock deletes the map entry of the caller that locked in the meantime), each stalling every caller until \`redlockTTL\` ran out (longest gap ${(c1.reference.maxGapMs / 1000).toFixed(1)} s)`
          : `the reference leaked no lock (longest gap ${c1.reference.maxGapMs.toFixed(1)} ms)`) +
        `, and ${c1.reference.errors} of its \`lock()\` calls failed.`,
    );
  }
  return notes;
}

// ---------------------------------------------------------------------------------------------
// Chart
// ---------------------------------------------------------------------------------------------

function esc(s) {
  return String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

function chartSvg(agg) {
  const rows = [...agg.values()].filter((g) => g.ours && g.reference && hasRate(g));
  const values = rows.flatMap((g) => [g.ours.ops, g.reference.ops]).filter((x) => x > 0);
  const lo = Math.floor(Math.log10(Math.min(...values, 10)));
  const hi = Math.ceil(Math.log10(Math.max(...values, 10)));
  // Wide enough for the longest label (about 6.5 px a character at 12 px), at least as before.
  const labelW = Math.max(330, Math.ceil(Math.max(0, ...rows.map((g) => g.case.label.length)) * 6.5) + 16);
  const plotW = 500;
  const rightW = 150;
  const barH = 11;
  const groupH = barH * 2 + 10;
  const top = 56;
  const width = labelW + plotW + rightW;
  const height = top + rows.length * groupH + 40;
  const x = (v) => labelW + ((Math.log10(Math.max(v, 10 ** lo)) - lo) / (hi - lo)) * plotW;
  const colors = { ours: '#2b6cb0', reference: '#dd6b20' };
  const tick = (e) => (e >= 6 ? `${10 ** (e - 6)}M` : e >= 3 ? `${10 ** (e - 3)}k` : String(10 ** e));
  const out = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif" font-size="12">`);
  out.push(`<rect width="${width}" height="${height}" fill="#ffffff"/>`);
  out.push(`<text x="${labelW}" y="20" font-size="14" font-weight="bold">Operations per second (log scale), median of rounds</text>`);
  out.push(`<rect x="${labelW}" y="30" width="12" height="12" fill="${colors.ours}"/><text x="${labelW + 18}" y="40">${esc(NAMES.ours)}</text>`);
  out.push(`<rect x="${labelW + 150}" y="30" width="12" height="12" fill="${colors.reference}"/><text x="${labelW + 168}" y="40">${esc(NAMES.reference)}</text>`);
  out.push(`<text x="${labelW + plotW + 10}" y="40" fill="#444">ours / reference</text>`);
  for (let e = lo; e <= hi; e += 1) {
    const gx = x(10 ** e);
    out.push(`<line x1="${gx.toFixed(1)}" y1="${top - 6}" x2="${gx.toFixed(1)}" y2="${top + rows.length * groupH}" stroke="#ddd"/>`);
    out.push(`<text x="${gx.toFixed(1)}" y="${top + rows.length * groupH + 16}" text-anchor="middle" fill="#555">${tick(e)}</text>`);
  }
  rows.forEach((g, i) => {
    const y0 = top + i * groupH;
    out.push(`<text x="${labelW - 8}" y="${y0 + barH + 4}" text-anchor="end">${esc(g.case.label)}</text>`);
    ['ours', 'reference'].forEach((a, j) => {
      const v = g[a].ops;
      const y = y0 + j * barH;
      const w = Math.max(1, x(v) - labelW);
      out.push(`<rect x="${labelW}" y="${y}" width="${w.toFixed(1)}" height="${barH - 1}" fill="${colors[a]}"><title>${esc(`${NAMES[a]}: ${fmtOps(v)} /s`)}</title></rect>`);
      out.push(`<text x="${(labelW + w + 4).toFixed(1)}" y="${y + barH - 2}" font-size="10" fill="#333">${fmtOps(v)}</text>`);
    });
    const r = ratio(g.ours.ops, g.reference.ops);
    out.push(`<text x="${labelW + plotW + 70}" y="${y0 + barH + 4}" font-weight="bold" fill="${r >= 1 ? '#276749' : '#c53030'}">${fmtX(r)}</text>`);
  });
  out.push(`<text x="${labelW}" y="${height - 6}" fill="#555">ops/s (contended rows: lock+unlock cycles/s; alova rows: requests/s; pipeline/multi rows: batches/s, reference = ioredis)</text>`);
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}

// ---------------------------------------------------------------------------------------------
// Markdown
// ---------------------------------------------------------------------------------------------

/** A markdown table; the first `textColumns` columns align left, the rest (figures) right. */
function table(header, rows, textColumns = 2) {
  const lines = [`| ${header.join(' | ')} |`, `| ${header.map((h, i) => (i < textColumns ? '---' : '---:')).join(' | ')} |`];
  for (const r of rows) lines.push(`| ${r.join(' | ')} |`);
  return lines.join('\n');
}

function markdown(data, agg, tgt, chartRel, resultsRel = 'bench/results.json') {
  const { info, config } = data;
  const md = [];
  md.push('# Benchmarks');
  md.push('');
  md.push(
    `Written by \`npm run bench\` ([bench/run.js](bench/run.js)) on ${data.date.replace('T', ' ').replace(/\.\d+Z$/, ' UTC')}; do not edit by hand. ` +
      'This adapter ("ours") against a rebuild of the original `@alova/storage-redis` ([bench/reference.js](bench/reference.js): ioredis + `@sesamecare-oss/redlock`, as SPEC.md describes it, defects included), interleaved in one run against one `redis-server`.',
  );
  if (config.quick) {
    md.push('');
    md.push('> **Quick run** (`BENCH_QUICK=1`): one round, short measurements. A smoke test, not figures to quote.');
  }
  md.push('');
  md.push('## Machine');
  md.push('');
  md.push(
    table(
      ['', 'value'],
      [
        ['CPU', info.cpu],
        ['cores', String(info.cores)],
        ['memory', `${info.memoryGiB.toFixed(1)} GiB`],
        ['kernel', info.kernel],
        ['node', info.node],
        ['redis-server', info.redis || '-'],
        ['ioredis / @sesamecare-oss/redlock / alova', `${info.ioredis} / ${info.redlock} / ${info.alova}`],
        ['commit', info.commit || '-'],
        ['addon', info.addon || '-'],
        ['load average at the start', info.loadavg.map((x) => x.toFixed(2)).join(' ')],
        ['run time', `${Math.round(data.runtimeSeconds)} s`],
      ],
    ),
  );
  md.push('');
  md.push('## Targets');
  md.push('');
  for (const t of tgt) md.push(t.line);
  md.push('');
  md.push('## How it was measured');
  md.push('');
  md.push(
    [
      `- One \`redis-server\` on a free loopback port, no persistence, its own temporary directory, started and stopped by the benchmark. \`FLUSHALL\` before every measurement.`,
      `- Every measurement runs in a fresh child process (\`bench/worker.js\`) holding one adapter, so CPU time and RSS are that adapter's. Each case runs for both adapters in alternating order, ${config.rounds} round(s); figures are the median of the rounds, with [min-max] of ops/s.`,
      `- "N in flight": N loops, each awaiting one call before starting the next. ${config.warmupMs} ms of warm-up, then ${config.opMs} ms measured. Latency is per call (\`process.hrtime.bigint\`), kept in a fixed 65,536-entry reservoir sample.`,
      '- Values are alova entries `[data, expireTimestamp]` (expiring in 60 s): about 250 B, 10 KB and 1 MB of JSON. `get` reads keys stored beforehand (every read is a hit); `remove` deletes keys filled beforehand with `DEBUG POPULATE` (every call deletes a key).',
      '- "CPU µs/op": the node process\'s CPU time (`process.cpuUsage`, all threads, so the native adapter\'s I/O threads count) over the measured window, per operation. "redis µs/op": redis-server\'s CPU time per operation (`INFO cpu` before and after). "ctx switches/op": voluntary + involuntary context switches of the node process (all threads, `process.resourceUsage`) per operation. RSS: `process.memoryUsage().rss` after connecting (before warm-up) and at the end of the window.',
      `- Locks across processes: "3 processes x 8 callers" = three worker processes, forked and connected first, then started together at one instant of a clock they share (\`performance.timeOrigin + performance.now()\`: the wall clock at process start plus the monotonic time since, one machine), each with 8 callers looping \`lock\` -> section -> \`unlock\` on one resource for ${config.windowMs} ms, through one adapter per process (as an application runs it) or one adapter per caller; the section as above, a rejected \`lock\` again tried after 100 ms. Cycles are summed over the processes; each process's share is its cycles over the total; waits are pooled over the processes (p50/p99 of a \`lock()\` call's wait). Every cycle's times (lock resolved, unlock called, unlock resolved) go to the parent, which checks exclusion across processes (a \`lock()\` resolving before the previous holder, in any process, called \`unlock()\`) and the longest gap. "Hand-off": two processes, A holds, B calls \`lock()\`, A waits 5-305 ms (uniform: a release falls at a random point of a polling waiter's \`retryDelay\` of 200 +- 100 ms) and then reads the shared clock right before calling \`unlock()\`; B reads it when its \`lock()\` resolves; the difference is one hand-off. Then B holds and A waits. ${Math.max(1, Math.ceil((config.handoffs ?? 200) / config.rounds))} hand-offs per round after 4 unmeasured ones, pooled over the rounds. The clocks' skew between processes is measured (parent <-> worker message round trips) and shown.`,
      `- Locks: "distinct" = each loop locks and unlocks a resource of its own (no contention). "contended" = 16 callers take turns on one resource for ${config.windowMs} ms windows, through one adapter or one adapter each; a caller whose \`lock\` rejects tries again after 100 ms, as alova's \`atomize\` does. The critical section is ${config.holdMs ? `a ${config.holdMs} ms sleep` : 'empty (`BENCH_HOLD_MS` sets one)'}. "Longest gap": the longest time between an \`unlock\` resolving and the next \`lock\` resolving (or the window's end when nobody locked again).`,
      '- alova: `createAlova` with `requestAdapter: adapterFetch()`, `cacheFor: { GET: { mode: \'restore\', expire: 60000 } }`, `l2Cache` = the adapter and an `l1Cache` that never holds anything, so every request is an l2 read (alova only reads l2 on an l1 miss). 64 URLs, each fetched once from a local HTTP server first; the measured requests never reach it (network requests while measuring are counted below).',
      '- `commandTimeout` cases: the same set/get as above with `commandTimeout: 5000` in both adapters\' options. Cluster cases: a 3-master + 3-replica Redis Cluster (`redis-cli --cluster create`, each node a `redis-server` on a free loopback port), started only when a cluster case is selected; keys spread over the slots (no hash tags), `FLUSHALL` on every master before each measurement, "redis µs/op" and the redis CPU are summed over all six nodes (replicas included).',
      `- Pipelines and transactions ("pipeline()/multi() of N"): the package's \`RedisClient\` against an ioredis \`new Redis()\` with its defaults (the client inside the reference adapter), no adapter, no JSON. One operation builds \`client.pipeline()\` (or \`client.multi()\`, sent as \`MULTI\` .. \`EXEC\`) of N commands, alternately \`set\` and \`get\` of ${BATCH.valueBytes} B string values, each command on a key of its own (${BATCH.keys.toLocaleString('en-US')} keys, all filled beforehand, so every \`get\` hits; the batches in flight use distinct keys too), and awaits \`exec()\`, checking every \`[err, result]\` (\`OK\` for a \`set\`, the value for a \`get\`). ${BATCH.inflight} batches in flight. Figures per batch; commands/s = batches/s x N; CPU and redis µs per command = per batch / N.`,
      '- "other CPU": CPU the rest of the machine used during the window (from `/proc/stat`, minus the measuring process and redis-server), in cores, to show noise. The machine is shared: read ratios more than absolute figures.',
    ].join('\n'),
  );
  md.push('');
  md.push('## Results');
  md.push('');
  md.push(`![ops/s by case, both adapters](${chartRel})`);
  md.push('');
  const rows = [];
  for (const g of agg.values()) {
    if (!hasRate(g)) continue;
    for (const a of ['ours', 'reference']) {
      const s = g[a];
      if (!s) continue;
      const errs = s.errors && g.case.kind !== 'contended' && g.case.kind !== 'contended-procs' ? ` (${s.errors} errors)` : '';
      rows.push([
        g.case.label,
        nameOf(g, a),
        `${fmtOps(s.ops)} [${fmtOps(s.opsRange[0])}-${fmtOps(s.opsRange[1])}]${errs}`,
        fmtUs(s.p50),
        fmtUs(s.p99),
        fmtUs(s.cpu),
        fmtUs(s.redisCpu),
        s.ctx === null ? '-' : s.ctx.toFixed(2),
        `${mb(s.rssBefore)} -> ${mb(s.rssAfter)}`,
        `${cores(s.rest)} (${cores(s.restMax)})`,
      ]);
    }
  }
  md.push(table(['case', 'adapter', 'ops/s median [min-max]', 'p50', 'p99', 'CPU µs/op', 'redis µs/op', 'ctx switches/op', 'RSS MB', 'other CPU, cores: median (max)'], rows));
  md.push('');
  md.push('For contended cases, ops/s is lock+unlock cycles/s and p50/p99 is how long a caller waited for the lock; CPU per op is per cycle (for 3 processes, the three processes\' CPU together; RSS is per process, their mean). For pipeline/multi cases an op is one batch (one `exec()` of N commands; commands/s below), p50/p99 an `exec()`\'s latency, and the reference is a plain ioredis client.');
  md.push('');
  md.push('### Ours / reference');
  md.push('');
  const ratios = [];
  for (const g of agg.values()) {
    if (!g.ours || !g.reference || !hasRate(g)) continue;
    ratios.push([
      g.case.label,
      fmtX(ratio(g.ours.ops, g.reference.ops)),
      fmtX(ratio(g.ours.p50, g.reference.p50)),
      fmtX(ratio(g.ours.p99, g.reference.p99)),
      fmtX(ratio(g.ours.cpu, g.reference.cpu)),
    ]);
  }
  md.push(table(['case', 'ops/s', 'p50', 'p99', 'CPU/op'], ratios, 1));
  md.push('');
  md.push('Above 1x is better for ops/s, below 1x is better for latency and CPU.');
  md.push('');

  const variants = [...agg.values()].filter((g) => g.case.variant);
  if (variants.length) {
    md.push('### With `commandTimeout` and on a cluster');
    md.push('');
    const timeout = (data.cases.find((c) => c.options && c.options.commandTimeout) || { options: TIMEOUT_OPTIONS }).options.commandTimeout;
    const shape = `${CLUSTER.masters} masters + ${CLUSTER.masters * CLUSTER.replicas} replicas`;
    md.push(
      `The set/get 250 B cases again on other connections, both adapters in the same run: with \`commandTimeout: ${timeout}\` given to both ` +
        '(ours takes it as ioredis does; the reference passes it to `new Redis()`), and on a Redis Cluster of ' +
        `${shape} that the benchmark starts (ours: \`{ nodes, options }\`; the reference: an ioredis \`new Redis.Cluster(nodes, options)\` as its \`client\`; default cluster options for both). ` +
        'The last three columns compare with the same case on one server with default options, in this run ("-" when it was not selected).',
    );
    md.push('');
    const vr = [];
    for (const g of variants) {
      const want = g.case.op === 'set' || g.case.op === 'get' ? wantAt(g.case.inflight) : null;
      const r = g.ours && g.reference ? ratio(g.ours.ops, g.reference.ops) : null;
      const plain = agg.get(g.case.variantOf);
      const plainRatio = plain && plain.ours && plain.reference ? ratio(plain.ours.ops, plain.reference.ops) : null;
      const oursVsPlain = plain && plain.ours && g.ours ? ratio(g.ours.ops, plain.ours.ops) : null;
      const refVsPlain = plain && plain.reference && g.reference ? ratio(g.reference.ops, plain.reference.ops) : null;
      const errs = (s) => (s && s.errors ? ` (${s.errors} errors)` : '');
      vr.push([
        g.case.label,
        g.ours ? `${fmtOps(g.ours.ops)}${errs(g.ours)}` : '-',
        g.reference ? `${fmtOps(g.reference.ops)}${errs(g.reference)}` : '-',
        fmtX(r),
        want === null ? '-' : `>= ${want}x: ${r === null ? 'not measured' : r >= want ? 'met' : '**NOT met**'}`,
        fmtX(plainRatio),
        fmtX(oursVsPlain),
        fmtX(refVsPlain),
      ]);
    }
    md.push(table(['case', 'ours ops/s', 'reference ops/s', 'ours / reference', 'target', 'ours / reference, one server, defaults', 'ours here / ours, one server, defaults', 'reference here / reference, one server, defaults'], vr, 1));
    md.push('');
  }

  const notes = whereTimeGoes(agg, data);
  if (notes.length) {
    md.push('### Where the time goes');
    md.push('');
    md.push('Computed from the figures above (medians of the rounds):');
    md.push('');
    for (const n of notes) md.push(`- ${n}`);
    md.push('');
  }

  const contended = [...agg.values()].filter((g) => ['contended', 'contended-procs', 'lock'].includes(g.case.kind));
  if (contended.length) {
    md.push('## Locks');
    md.push('');
    const lr = [];
    for (const g of contended) {
      for (const a of ['ours', 'reference']) {
        const s = g[a];
        if (!s) continue;
        const isC = g.case.kind === 'contended' || g.case.kind === 'contended-procs';
        lr.push([
          g.case.label,
          NAMES[a],
          fmtOps(s.ops),
          isC ? `${s.maxGapMs.toFixed(1)} ms (median ${s.gapMedianMs.toFixed(1)})` : '-',
          isC ? `${(100 * s.busiestShare).toFixed(0)}%` : '-',
          isC ? String(s.idleCallers) : '-',
          fmtUs(s.p99),
          String(s.errors),
          isC ? String(s.overlaps) : '-',
          `${s.leaked}${s.rounds > 1 ? ` (${s.leakedPerRound.join(', ')})` : ''}`,
          isC ? `${Math.round(s.drainMs)} ms` : '-',
        ]);
      }
    }
    md.push(table(['case', 'adapter', 'cycles/s', 'longest gap (worst round)', 'busiest caller\'s share', 'callers that never locked', 'p99 wait / cycle', 'failed locks', 'overlapping holders', 'leaked locks (per round)', 'drain after window'], lr));
    md.push('');
    md.push('"busiest caller\'s share": the fraction of all cycles that the busiest of the 16 callers got (1/16 = 6% is perfectly fair; of the 24 callers of 3 processes, 1/24 = 4%); "callers that never locked": callers that got no cycle in the window (median of rounds). "p99 wait / cycle": for contended cases how long a caller waited for the lock, for distinct resources a whole lock+unlock. "failed locks": `lock()` calls that rejected after running out of retries. "overlapping holders": times two callers held the lock at once (must be 0). "leaked locks": lock keys that outlived every unlock, so other callers waited for \`redlockTTL\` to run out: counted when Redis expires them (keyspace notifications) or when they are still there after the last caller unlocked. "drain": how long after the window the last caller finished.');
    md.push('');
  }
  md.push(...acrossProcesses(agg, data));

  const alova = [...agg.values()].filter((g) => g.case.kind === 'alova');
  if (alova.length) {
    md.push('## alova end to end');
    md.push('');
    for (const g of alova) {
      const parts = ['ours', 'reference'].filter((a) => g[a]).map((a) => `${NAMES[a]} ${fmtOps(g[a].ops)} requests/s (p99 ${fmtUs(g[a].p99)}, ${g[a].networkRequests} network requests while measuring)`);
      md.push(`- ${g.case.label}: ${parts.join('; ')}; ours/reference ${fmtX(ratio(g.ours?.ops, g.reference?.ops))}.`);
    }
    md.push('');
  }

  md.push(...batches(agg));

  if (data.rss && (data.rss.ours || data.rss.reference)) {
    md.push('## RSS over a long run');
    md.push('');
    const rr = [];
    for (const a of ['ours', 'reference']) {
      const r = data.rss[a];
      if (!r) continue;
      rr.push([
        NAMES[a],
        r.ops.toLocaleString('en-US'),
        fmtOps(r.opsPerSec),
        fmtUs(r.cpuUsPerOp),
        mb(r.rssStart),
        mb(r.rssPeak),
        mb(r.rssEnd),
        mb(r.rssEnd - r.rssStart),
        r.rssSamples.map(mb).join(' '),
      ]);
    }
    md.push(table(['adapter', 'operations', 'ops/s', 'CPU µs/op', 'RSS start MB', 'peak', 'end', 'growth', 'samples (every tenth)'], rr, 1));
    md.push('');
    md.push('Half `set`, half `get` of 250 B entries over 10,000 keys, 16 in flight, after a warm-up; `global.gc()` before the first and the last reading.');
    md.push('');
  }

  if (data.ceiling && data.ceiling.length) {
    md.push('## Ceiling: redis-benchmark on the same server');
    md.push('');
    const cr = [];
    for (const rb of data.ceiling) {
      for (const r of rb.rows) cr.push([`\`-P ${rb.pipeline}\` ${r.test}`, fmtOps(r.rps), fmtUs(r.p50), fmtUs(r.p99), cores(r.redisCores), cores(r.benchmarkCores)]);
    }
    md.push(table(['run', 'requests/s', 'p50', 'p99', 'redis-server CPU (cores)', 'redis-benchmark CPU (cores)'], cr, 1));
    md.push('');
    md.push(`\`${data.ceiling[0].command.replace(/-P \d+/, '-P <1|16>')}\` (50 connections, 250 B values). redis-benchmark is C with no JSON and no promises; it shares the ${info.cores} cores with redis-server, as the node process does.`);
    const p1 = data.ceiling.find((rb) => rb.pipeline === 1);
    if (p1) {
      const parts = [];
      for (const op of ['set', 'get']) {
        const row = p1.rows.find((r) => r.test.toLowerCase() === op);
        const g = agg.get(`${op}-250B-256`);
        if (!row || !g) continue;
        for (const a of ['ours', 'reference']) {
          if (g[a]) parts.push(`${op} ${NAMES[a]} ${((100 * g[a].ops) / row.rps).toFixed(0)}%`);
        }
      }
      if (parts.length) {
        md.push(
          `At 256 in flight the adapters reach this share of the \`-P 1\` figure: ${parts.join(', ')}. ` +
            '(Above 100% is possible: at `-P 1` each of the 50 connections waits for every reply before it sends the next command, while 256 calls in flight on one connection share writes and reads.)',
        );
      }
    }
    md.push('');
  }

  if (data.json) {
    md.push('## JSON in JavaScript');
    md.push('');
    md.push('`JSON.stringify` / `JSON.parse` of the same values in this node (one thread, no I/O), for comparison with serde_json later ([bench/json.js](bench/json.js)).');
    md.push('');
    const jr = data.json.map((r) => [
      r.size,
      r.bytes.toLocaleString('en-US'),
      fmtOps(r.stringify.opsPerSec),
      fmtUs(r.stringify.usPerOp),
      r.stringify.mbPerSec.toFixed(0),
      fmtOps(r.parse.opsPerSec),
      fmtUs(r.parse.usPerOp),
      r.parse.mbPerSec.toFixed(0),
    ]);
    md.push(table(['value', 'bytes', 'stringify ops/s', 'stringify µs/op', 'stringify MB/s', 'parse ops/s', 'parse µs/op', 'parse MB/s'], jr, 1));
    md.push('');
  }

  md.push('## Noise: CPU used by other processes');
  md.push('');
  const n = data.noise;
  md.push(
    `Over the whole run (${Math.round(n.seconds)} s): the benchmark and its children ${cores(n.benchCores)} cores, redis-server ${cores(n.redisCores)} cores, everything else on the machine ${cores(n.restCores)} cores on average (of ${info.cores}). ` +
      `Per measurement, the "other CPU" column above. Load average at the end: ${n.loadavgEnd.map((x) => x.toFixed(2)).join(' ')}.`,
  );
  md.push('');
  md.push('## Running it');
  md.push('');
  md.push(
    [
      '```bash',
      `npm run bench                 # the full run (${config.quick ? 'about 5 minutes on 2 cores' : `${Math.max(1, Math.round(data.runtimeSeconds / 60))} minutes for this one`})`,
      'BENCH_QUICK=1 npm run bench   # a 1-2 minute smoke run',
      'node bench/json.js            # the JSON figures alone',
      '```',
      '',
      `Settings (environment): \`BENCH_ROUNDS\` (5), \`BENCH_OP_MS\` (1500), \`BENCH_WARMUP_MS\` (300), \`BENCH_WINDOW_MS\` (5000), \`BENCH_RSS_OPS\` (1000000), \`BENCH_RB_REQUESTS\` (200000), \`BENCH_HANDOFFS\` (200, over all rounds), \`BENCH_ONLY\` (a regular expression over case ids, e.g. \`set|get\`, \`timeout|cluster\`, \`pipeline|multi\`), \`BENCH_OUT\` (report path; the chart and raw figures then go next to it). The raw figures of this run are in \`${resultsRel}\`.`,
    ].join('\n'),
  );
  md.push('');
  return md.join('\n');
}

/** The pipeline / multi cases: batches/s and commands/s, exec() latency, CPU per command. */
function batches(agg) {
  const md = [];
  const gs = [...agg.values()].filter((g) => g.case.kind === 'batch' && (g.ours || g.reference));
  if (!gs.length) return md;
  md.push('## Pipelines and transactions: RedisClient against ioredis');
  md.push('');
  md.push(
    `\`client.pipeline()\` and \`client.multi()\` of N commands (half \`set\`, half \`get\`, ${gs[0].case.valueBytes} B values, distinct keys), \`exec()\` awaited, ${gs[0].case.inflight} batches in flight; ` +
      'ours is the package\'s `RedisClient`, the reference a plain ioredis client (`new Redis()`, defaults), both in the same run against the same server.',
  );
  md.push('');
  const per = (x, n) => (x === null || x === undefined ? null : x / n);
  const rows = [];
  for (const g of gs) {
    const n = g.case.commands;
    for (const a of ['ours', 'reference']) {
      const s = g[a];
      if (!s) continue;
      rows.push([
        g.case.label,
        BATCH_NAMES[a],
        `${fmtOps(s.ops)} [${fmtOps(s.opsRange[0])}-${fmtOps(s.opsRange[1])}]${s.errors ? ` (${s.errors} errors: ${String(s.firstError).slice(0, 80)})` : ''}`,
        fmtOps(s.commandsPerSec ?? s.ops * n),
        fmtUs(s.p50),
        fmtUs(s.p99),
        fmtUs(s.cpu),
        fmtUs(per(s.cpu, n)),
        fmtUs(per(s.redisCpu, n)),
      ]);
    }
    if (g.ours && g.reference) {
      rows.push([
        g.case.label,
        '**ours / reference**',
        `**${fmtX(ratio(g.ours.ops, g.reference.ops))}**`,
        fmtX(ratio(g.ours.commandsPerSec, g.reference.commandsPerSec)),
        fmtX(ratio(g.ours.p50, g.reference.p50)),
        fmtX(ratio(g.ours.p99, g.reference.p99)),
        fmtX(ratio(g.ours.cpu, g.reference.cpu)),
        fmtX(ratio(g.ours.cpu, g.reference.cpu)),
        fmtX(ratio(g.ours.redisCpu, g.reference.redisCpu)),
      ]);
    }
  }
  md.push(table(['case', 'client', 'batches/s median [min-max]', 'commands/s', 'p50 exec()', 'p99 exec()', 'CPU µs/batch', 'CPU µs/command', 'redis µs/command'], rows));
  md.push('');
  md.push('Above 1x is better for batches/s and commands/s, below 1x for latency and CPU. CPU is the node process\'s (all threads); "redis µs/command" is redis-server\'s CPU per command (a transaction adds `MULTI` and `EXEC` to each batch).');
  md.push('');
  return md;
}

/** The section on locks across processes: 3-process contention and the hand-off. */
function acrossProcesses(agg, data) {
  const md = [];
  const procs = [...agg.values()].filter((g) => g.case.kind === 'contended-procs');
  const handoff = agg.get('handoff');
  if (!procs.length && !(handoff && (handoff.ours || handoff.reference))) return md;
  md.push('### Across processes');
  md.push('');
  const { config } = data;
  md.push(
    `Targets (issue 10): ours, with 3 processes x 8 callers and one adapter per process, >= 3x the reference's cycles/s, every process >= 25% of the cycles, no \`lock()\` failing; a cross-process hand-off p50 < 2 ms. The critical section is ${config.holdMs ? `a ${config.holdMs} ms sleep` : 'empty'}. The single-process contended rows above stay as measured: the locker no longer hands a lock on to its own process's next caller (each unlock releases the key, so that a waiter of another process is not overtaken), which costs a round trip per cycle in one process.`,
  );
  md.push('');
  if (procs.length) {
    const rows = [];
    for (const g of procs) {
      for (const a of ['ours', 'reference']) {
        const s = g[a];
        if (!s) continue;
        rows.push([
          g.case.label,
          NAMES[a],
          fmtOps(s.ops),
          sharesText(s),
          `${(100 * s.minShare).toFixed(1)}%${a === 'ours' && g.case.id === 'contended-3x8' ? (s.minShare >= 0.25 ? ' (>= 25%: met)' : ' (>= 25%: **NOT met**)') : ''}`,
          fmtUs(s.p50),
          fmtUs(s.p99),
          fmtUs(s.worstProcessP99),
          `${s.errors} (${s.processFailures.map((f) => f.join('/')).join(', ')})`,
          s.switchesPerCycle === null ? '-' : s.switchesPerCycle.toFixed(2),
          `${s.overlaps} (${s.crossOverlaps} across)`,
          `${s.maxGapMs.toFixed(1)} ms`,
          String(s.leaked),
          a === 'ours' ? String(s.waitersLeft) : '-',
        ]);
      }
      if (g.ours && g.reference) {
        const r = ratio(g.ours.ops, g.reference.ops);
        const target = g.case.id === 'contended-3x8' ? ` (>= 3x: ${r >= 3 ? 'met' : '**NOT met**'})` : '';
        rows.push([g.case.label, '**ours / reference**', `**${fmtX(r)}**${target}`, '', '', fmtX(ratio(g.ours.p50, g.reference.p50)), fmtX(ratio(g.ours.p99, g.reference.p99)), '', '', '', '', '', '', '']);
      }
    }
    md.push(
      table(
        ['case', 'adapter', 'cycles/s (all processes)', 'each process\'s share, per round', 'smallest share (worst round)', 'p50 wait', 'p99 wait', 'p99 wait, worst process', 'failed locks (per process, per round)', 'lock moved to another process, per cycle', 'overlapping holders', 'longest gap (worst round)', 'leaked locks', 'left in line'],
        rows,
      ),
    );
    md.push('');
    const skew = Math.max(...procs.flatMap((g) => ['ours', 'reference'].filter((a) => g[a]).map((a) => g[a].clockSkewUs)));
    md.push(
      '"lock moved to another process, per cycle": how often consecutive holders were in different processes (0: one process kept the lock; about 0.67 when the next holder is as likely to be any of the 3). "overlapping holders": a `lock()` resolving before the previous holder called `unlock()`, in one process or across processes (timestamps of the shared clock; must be 0). "left in line": entries still in the waiters\' line in Redis (`*alova-waiters`) once every caller was done, summed over rounds. ' +
        `The processes' clocks differed by at most ${skew.toFixed(0)} µs (measured to within the message round trip). ` +
        'Waits: with turns served in order, a caller waits for about every other caller\'s cycle (24 callers / cycles per second); the reference\'s low p50 is a caller that has just unlocked taking the lock again at once while the others sleep out `retryDelay`, which its shares and its p99 show.',
    );
    md.push('');
  }
  if (handoff && (handoff.ours || handoff.reference)) {
    const rows = [];
    for (const a of ['ours', 'reference']) {
      const s = handoff[a];
      if (!s) continue;
      rows.push([
        NAMES[a],
        String(s.handoffs),
        fmtUs(s.p50),
        fmtUs(s.p90),
        fmtUs(s.p99),
        fmtUs(s.min),
        fmtUs(s.max),
        fmtUs(s.mean),
        fmtUs(s.unlockMs === null ? null : s.unlockMs * 1000),
        String(s.errors),
        String(s.early),
        a === 'ours' ? `< 2 ms: ${s.p50 < 2000 ? 'met' : '**NOT met**'}` : '-',
        `${s.clockSkewUs.toFixed(0)} ± ${s.clockUncertaintyUs.toFixed(0)} µs`,
      ]);
    }
    if (handoff.ours && handoff.reference) {
      rows.push(['**ours / reference**', '', fmtX(ratio(handoff.ours.p50, handoff.reference.p50)), fmtX(ratio(handoff.ours.p90, handoff.reference.p90)), fmtX(ratio(handoff.ours.p99, handoff.reference.p99)), '', '', fmtX(ratio(handoff.ours.mean, handoff.reference.mean)), '', '', '', '', '']);
    }
    md.push(
      table(
        ['hand-off: unlock() in one process to lock() resolving in another', 'hand-offs', 'p50', 'p90', 'p99', 'min', 'max', 'mean', 'unlock() call itself (median)', 'failed locks', 'resolved before the unlock', 'target (p50)', 'clock skew between the 2 processes'],
        rows,
        1,
      ),
    );
    md.push('');
    md.push(
      'A waiter of the reference sleeps out `retryDelay` (200 ms +- 100) between attempts, so a hand-off there is the rest of that sleep (about 100 ms on average when the release falls at a random point of it); ours wakes the first waiter in line by pub/sub. "resolved before the unlock": the waiter\'s `lock()` resolved before the holder called `unlock()` (an exclusion broken, give or take the clock skew; must be 0).',
    );
    md.push('');
  }
  return md;
}

const ROOT = path.join(__dirname, '..');
const DEFAULT_REPORT = path.join(ROOT, 'BENCHMARKS.md');

/**
 * Where a run's report, chart and raw figures go: BENCHMARKS.md, bench/chart.svg and
 * bench/results.json by default; for any other report path `<dir>/<name>.md`, the chart and the
 * figures next to it (`<dir>/<name>.chart.svg`, `<dir>/<name>.results.json`), so that a trial run
 * never overwrites the repository's.
 */
function outputPaths(out = DEFAULT_REPORT) {
  const report = path.resolve(out);
  if (report === DEFAULT_REPORT) {
    return { report, chart: path.join(__dirname, 'chart.svg'), results: path.join(__dirname, 'results.json') };
  }
  const stem = path.join(path.dirname(report), path.basename(report, path.extname(report)));
  return { report, chart: `${stem}.chart.svg`, results: `${stem}.results.json` };
}

function writeReport(data, { out, chart, results }) {
  const agg = aggregate(data);
  const tgt = targets(agg, data);
  fs.writeFileSync(chart, chartSvg(agg));
  const rel = (file) => path.relative(path.dirname(out), file).split(path.sep).join('/');
  fs.writeFileSync(out, markdown(data, agg, tgt, rel(chart), results ? rel(results) : undefined));
  return { report: out, chart, targets: tgt.map((t) => t.line) };
}

module.exports = { writeReport, outputPaths, aggregate, targets, chartSvg };

// `node bench/report.js [results.json]` rewrites the report from saved figures.
if (require.main === module) {
  const outputs = outputPaths(process.env.BENCH_OUT ? path.resolve(process.env.BENCH_OUT) : DEFAULT_REPORT);
  const file = process.argv[2] ? path.resolve(process.argv[2]) : outputs.results;
  const data = JSON.parse(fs.readFileSync(file, 'utf8'));
  const written = writeReport(data, { out: outputs.report, chart: outputs.chart, results: file });
  for (const line of written.targets) console.log(line);
}
