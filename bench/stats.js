'use strict';

// Measurement helpers shared by the benchmark's parent and its children: a fixed-size latency
// sample (reservoir), percentiles and medians, and CPU readings from /proc.

const fs = require('node:fs');
const { execFileSync } = require('node:child_process');

/**
 * A uniform random sample of at most `size` latencies (Vitter's algorithm R), so memory stays
 * fixed however many operations run. Latencies are nanoseconds.
 */
class Reservoir {
  constructor(size = 65536) {
    this.buf = new Float64Array(size);
    this.count = 0;
  }

  add(ns) {
    const n = this.count;
    this.count = n + 1;
    if (n < this.buf.length) {
      this.buf[n] = ns;
    } else {
      const j = Math.floor(Math.random() * (n + 1));
      if (j < this.buf.length) this.buf[j] = ns;
    }
  }

  /** Percentiles in microseconds, e.g. `{ p50, p99, max }`. */
  summary() {
    const n = Math.min(this.count, this.buf.length);
    if (n === 0) return { p50: null, p99: null, samples: 0 };
    const sorted = this.buf.slice(0, n).sort();
    const at = (q) => sorted[Math.min(n - 1, Math.floor(q * n))] / 1000;
    return { p50: at(0.5), p99: at(0.99), max: sorted[n - 1] / 1000, samples: n };
  }
}

function median(values) {
  const v = values.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return null;
  const mid = v.length >> 1;
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

function range(values) {
  const v = values.filter((x) => typeof x === 'number' && Number.isFinite(x));
  if (v.length === 0) return null;
  return [Math.min(...v), Math.max(...v)];
}

let clockTicks;
/** Kernel clock ticks per second (the unit of /proc CPU times). */
function clkTck() {
  if (clockTicks === undefined) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

/** Busy CPU time of the whole machine, in ticks (everything but idle and iowait). */
function machineBusyTicks() {
  const line = fs.readFileSync('/proc/stat', 'utf8').split('\n', 1)[0];
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal guest guest_nice; guest time is already in user.
  const [user, nice, system, , , irq = 0, softirq = 0, steal = 0] = f;
  return user + nice + system + irq + softirq + steal;
}

/** utime + stime of a process in ticks, or null when it is gone. */
function processTicks(pid = 'self') {
  try {
    const text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
    return Number(rest[11]) + Number(rest[12]); // fields 14 and 15: utime, stime
  } catch {
    return null;
  }
}

/**
 * A CPU snapshot: the machine's busy ticks, this process's and the given others' (redis-server),
 * and the wall clock. `cpuDelta(a, b)` turns two of them into the CPU the rest of the machine used.
 */
function cpuSnapshot(otherPids = []) {
  return {
    at: process.hrtime.bigint(),
    machine: machineBusyTicks(),
    self: processTicks('self'),
    others: otherPids.map((pid) => processTicks(pid)),
  };
}

/**
 * @returns {{ seconds: number, selfCores: number, othersCores: number[], restCores: number }}
 *   CPU used between two snapshots, in cores (1 = one core busy the whole time): this process,
 *   each named process, and everything else on the machine (`restCores`, the noise).
 */
function cpuDelta(a, b) {
  const hz = clkTck();
  const seconds = Number(b.at - a.at) / 1e9;
  const cores = (ticks) => (seconds > 0 ? ticks / hz / seconds : 0);
  const self = b.self - a.self;
  const others = b.others.map((t, i) => (t === null || a.others[i] === null ? 0 : t - a.others[i]));
  const rest = b.machine - a.machine - self - others.reduce((s, x) => s + x, 0);
  return {
    seconds,
    selfCores: cores(self),
    othersCores: others.map(cores),
    restCores: Math.max(0, cores(rest)),
  };
}

module.exports = { Reservoir, median, range, clkTck, machineBusyTicks, processTicks, cpuSnapshot, cpuDelta };
