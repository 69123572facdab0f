#!/usr/bin/env node
'use strict';

// Runs ioredis's own functional test suite (test/functional of the ioredis repository) against
// this package's RedisClient, and against real ioredis as the baseline, and writes a report.
// See README.md beside this file. Node >= 18, git, tar, redis-server and npm on PATH.

const fs = require('node:fs');
const path = require('node:path');
const net = require('node:net');
const os = require('node:os');
const { spawn, spawnSync } = require('node:child_process');

const HERE = __dirname;
const REPO = path.resolve(HERE, '..', '..');

// ---------------------------------------------------------------------------------------------
// Options

const DEFAULTS = {
  ioredisGit: '/work/.mirror/redis+ioredis/repo', // a bare git dir or a checkout of redis/ioredis
  ioredisSrc: '', // or: a directory holding ioredis's test/ (a checkout), instead of git
  ref: 'v5.11.1',
  version: '5.11.1', // the ioredis npm version for the baseline (should match ref)
  work: '/work/ioredis-suite-work',
  sides: 'ioredis,ours',
  grep: '', // only test files whose path (relative to test/functional) contains this
  testTimeout: 10000,
  fileTimeout: 300, // seconds, per test file (the mocha process is killed after it)
  deadline: 25, // minutes for the whole run (both sides); files not reached are reported
  redisPort: 6379,
  addon: REPO,
  reportOnly: false,
  mockLowercase: false, // diagnostic: the mock server lowercases each command's name (argv[0])
  out: '', // report path; default <work>/report.md
};

function parseArgs(argv) {
  const opts = { ...DEFAULTS };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '-h' || arg === '--help') {
      console.log(fs.readFileSync(path.join(HERE, 'README.md'), 'utf8'));
      process.exit(0);
    }
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(arg);
    if (!m) throw new Error(`unknown argument ${arg}`);
    const key = m[1].replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    if (!(key in DEFAULTS)) throw new Error(`unknown option --${m[1]}`);
    if (typeof DEFAULTS[key] === 'boolean') {
      opts[key] = m[2] === undefined ? true : m[2] !== 'false';
      continue;
    }
    const value = m[2] !== undefined ? m[2] : argv[++i];
    if (value === undefined) throw new Error(`--${m[1]} needs a value`);
    opts[key] = typeof DEFAULTS[key] === 'number' ? Number(value) : value;
  }
  opts.work = path.resolve(opts.work);
  opts.addon = path.resolve(opts.addon);
  opts.out = opts.out ? path.resolve(opts.out) : path.join(opts.work, 'report.md');
  opts.sides = opts.sides.split(',').filter(Boolean);
  return opts;
}

const log = (...args) => console.log(`[ioredis-suite ${new Date().toISOString().slice(11, 19)}]`, ...args);

function sh(cmd, args, options = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024, ...options });
  if (r.error) throw r.error;
  if (r.status !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${(r.stderr || '').trim().slice(0, 2000)}`);
  }
  return r.stdout;
}

// ---------------------------------------------------------------------------------------------
// Dependencies (into <work>/node_modules, never into the repository's package.json)

const DEPS = {
  mocha: '11.7.6', // ioredis 5.11 devDependency ^11.7.6
  chai: '4.5.0', // ^4.3.6
  'chai-as-promised': '7.1.2', // ^7.1.1
  sinon: '13.0.2', // ^13.0.1
  'server-destroy': '1.0.1',
  typescript: '4.9.5', // ^4.6.3, used only to transpile the .ts tests (as ts-node's transpile-only)
  uuid: '9.0.1',
};

function installDeps(opts) {
  const pkgFile = path.join(opts.work, 'package.json');
  const wanted = { ...DEPS, ioredis: opts.version };
  const pkg = { name: 'ioredis-suite-work', private: true, dependencies: wanted };
  const have = fs.existsSync(pkgFile) ? JSON.parse(fs.readFileSync(pkgFile, 'utf8')) : {};
  const installed = Object.entries(wanted).every(([name, version]) => {
    try {
      const p = JSON.parse(fs.readFileSync(path.join(opts.work, 'node_modules', name, 'package.json'), 'utf8'));
      return p.version === version;
    } catch {
      return false;
    }
  });
  if (installed && JSON.stringify(have.dependencies) === JSON.stringify(wanted)) return;
  fs.writeFileSync(pkgFile, JSON.stringify(pkg, null, 2) + '\n');
  log(`npm install in ${opts.work}: ${Object.entries(wanted).map(([n, v]) => `${n}@${v}`).join(' ')}`);
  sh('npm', ['install', '--no-audit', '--no-fund', '--no-package-lock'], { cwd: opts.work, stdio: 'inherit' });
}

// ---------------------------------------------------------------------------------------------
// ioredis's tests: extract, transpile, and give each side its `lib/`

function extractTests(opts) {
  const dest = path.join(opts.work, 'src');
  fs.rmSync(dest, { recursive: true, force: true });
  fs.mkdirSync(dest, { recursive: true });
  if (opts.ioredisSrc) {
    for (const dir of ['test/functional', 'test/helpers']) {
      fs.cpSync(path.join(opts.ioredisSrc, dir), path.join(dest, dir), { recursive: true });
    }
    return { dest, origin: `${opts.ioredisSrc} (a directory)` };
  }
  const gitArgs = ['--git-dir', opts.ioredisGit];
  const commit = sh('git', [...gitArgs, 'rev-parse', `${opts.ref}^{commit}`]).trim();
  const files = sh('git', [...gitArgs, 'ls-tree', '-r', '--name-only', commit, 'test/functional', 'test/helpers'])
    .split('\n')
    .filter(Boolean);
  for (const file of files) {
    const out = path.join(dest, file);
    fs.mkdirSync(path.dirname(out), { recursive: true });
    fs.writeFileSync(out, sh('git', [...gitArgs, 'show', `${commit}:${file}`], { encoding: 'buffer' }));
  }
  return { dest, origin: `${opts.ioredisGit} at ${opts.ref} (${commit.slice(0, 12)}), ${files.length} files` };
}

/** Every file under `dir`, relative to it, sorted. */
function walk(dir, base = dir, out = []) {
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) walk(full, base, out);
    else out.push(path.relative(base, full));
  }
  return out.sort();
}

/**
 * Transpiles the .ts tests to CommonJS with TypeScript, with ioredis's compiler options (as
 * ioredis's `TS_NODE_TRANSPILE_ONLY=true mocha -r ts-node/register` does), into <side>/test.
 * The one edit: test/helpers/global.ts's root afterEach (FLUSHALL, SCRIPT FLUSH, CLIENT KILL
 * after every test) is made with real ioredis on both sides: it is the suite's cleanup, not a
 * test, and should it fail with our client mocha would skip every later test of the file.
 */
function buildSide(opts, srcDir, side) {
  const ts = require(path.join(opts.work, 'node_modules', 'typescript'));
  const sideDir = path.join(opts.work, 'suite', side);
  fs.rmSync(sideDir, { recursive: true, force: true });
  const testSrc = path.join(srcDir, 'test');
  for (const rel of walk(testSrc)) {
    let text = fs.readFileSync(path.join(testSrc, rel), 'utf8');
    let outRel = rel;
    if (rel.endsWith('.ts')) {
      if (rel === path.join('helpers', 'global.ts')) {
        const before = text;
        text = text.replace(/from\s+["']\.\.\/\.\.\/lib\/Redis["']/, 'from "ioredis/built/Redis"');
        if (text === before) throw new Error('test/helpers/global.ts: its import of lib/Redis was not found');
      }
      if (opts.mockLowercase && rel === path.join('helpers', 'mock_server.ts')) {
        // Diagnostic only (--mock-lowercase): ioredis sends command names in lower case and the
        // tests' mock handlers compare them so (argv[0] === "cluster"); Redis itself ignores case.
        const before = text;
        text = text.replace(
          /(reply = convertBufferToString\(reply, "utf8"\);)/,
          '$1\n          if (typeof reply[0] === "string") reply[0] = reply[0].toLowerCase();'
        );
        if (text === before) throw new Error('test/helpers/mock_server.ts: the place for --mock-lowercase was not found');
      }
      text = ts.transpileModule(text, {
        fileName: rel,
        compilerOptions: {
          target: ts.ScriptTarget.ES2019,
          module: ts.ModuleKind.CommonJS,
          moduleResolution: ts.ModuleResolutionKind.NodeJs,
          sourceMap: false,
        },
      }).outputText;
      outRel = rel.replace(/\.ts$/, '.js');
    }
    const out = path.join(sideDir, 'test', outRel);
    fs.mkdirSync(path.dirname(out), { recursive: true });
    fs.writeFileSync(out, text);
  }

  // `lib/` is what the tests import as ioredis ("../../lib/Redis", "../../../lib", ...).
  const built = path.join(opts.work, 'node_modules', 'ioredis', 'built');
  const lib = path.join(sideDir, 'lib');
  if (side === 'ioredis') {
    fs.symlinkSync(built, lib, 'dir'); // ioredis itself
    return sideDir;
  }
  // ours: lib/Redis, lib/cluster and lib (index) are the shim; every other module of lib/
  // (utils, Command, errors, Pipeline, connectors, ...) is ioredis's own, re-exported.
  const shim = path.join(HERE, 'shim.js');
  for (const rel of walk(built).filter((f) => f.endsWith('.js'))) {
    const out = path.join(lib, rel);
    fs.mkdirSync(path.dirname(out), { recursive: true });
    let body;
    if (rel === 'Redis.js') {
      body = `const { Redis } = require(${JSON.stringify(shim)});\nmodule.exports = { __esModule: true, default: Redis };\n`;
    } else if (rel === path.join('cluster', 'index.js')) {
      body = `const { Cluster } = require(${JSON.stringify(shim)});\nmodule.exports = { __esModule: true, default: Cluster };\n`;
    } else if (rel === 'index.js') {
      body =
        `const { Redis, Cluster } = require(${JSON.stringify(shim)});\n` +
        `const real = require(${JSON.stringify(path.join(built, 'index.js'))});\n` +
        `const out = { __esModule: true };\n` +
        `for (const key of Object.keys(real)) if (key !== 'Promise') out[key] = real[key];\n` +
        `out.default = Redis;\nout.Redis = Redis;\nout.Cluster = Cluster;\n` +
        `module.exports = out;\n`;
    } else {
      body = `module.exports = require(${JSON.stringify(path.join(built, rel))});\n`;
    }
    fs.writeFileSync(out, body);
  }
  return sideDir;
}

// ---------------------------------------------------------------------------------------------
// redis-server

function portFree(port) {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

function ping(port) {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    let data = '';
    socket.setTimeout(500, () => socket.destroy());
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (d) => {
      data += d;
      if (data.includes('\r\n')) {
        socket.destroy();
        resolve(data.startsWith('+PONG'));
      }
    });
    socket.on('error', () => resolve(false));
    socket.on('close', () => resolve(false));
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function startRedis(opts) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ioredis-suite-redis-'));
  const child = spawn(
    'redis-server',
    ['--port', String(opts.redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir,
      '--enable-debug-command', 'local'],
    { stdio: ['ignore', 'ignore', 'pipe'] }
  );
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise((resolve) => child.once('exit', resolve));
  for (let i = 0; i < 100; i++) {
    if (child.exitCode !== null) break;
    if (await ping(opts.redisPort)) return { child, dir, exited };
    await sleep(50);
  }
  child.kill('SIGKILL');
  await exited;
  fs.rmSync(dir, { recursive: true, force: true });
  throw new Error(`redis-server on port ${opts.redisPort} did not start: ${stderr.trim()}`);
}

async function stopRedis(server) {
  if (!server) return;
  if (server.child.exitCode === null) {
    server.child.kill('SIGTERM');
    const done = await Promise.race([server.exited.then(() => true), sleep(5000).then(() => false)]);
    if (!done) {
      server.child.kill('SIGKILL');
      await server.exited;
    }
  }
  fs.rmSync(server.dir, { recursive: true, force: true });
}

// ---------------------------------------------------------------------------------------------
// mocha, one process per test file

const HELPERS = ['helpers/global.js', 'helpers/mock_server.js', 'helpers/util.js'];

function runMocha(opts, sideDir, files, { reporterOut, dryRun, logFile, env, timeoutMs }) {
  const mocha = path.join(opts.work, 'node_modules', 'mocha', 'bin', 'mocha.js');
  const reporter = dryRun
    ? ['--reporter', 'json', '--reporter-option', `output=${reporterOut}`, '--dry-run']
    : ['--reporter', path.join(HERE, 'reporter.js')];
  const args = [mocha, '--exit', '--timeout', String(opts.testTimeout), ...reporter, ...files];
  if (!dryRun) fs.rmSync(reporterOut, { force: true });
  return new Promise((resolve) => {
    const out = fs.openSync(logFile, 'w');
    const child = spawn(process.execPath, args, {
      cwd: path.join(sideDir, 'test'),
      env: {
        ...process.env,
        NODE_ENV: 'test',
        SUITE_EVENTS_FILE: reporterOut,
        SUITE_MOCHA_PATH: path.join(opts.work, 'node_modules', 'mocha'),
        ...env,
      },
      stdio: ['ignore', out, out],
      detached: true, // its own process group: a timeout ends it and whatever it started
    });
    fs.closeSync(out);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }, timeoutMs);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      try {
        process.kill(-child.pid, 'SIGKILL'); // leftovers of the group, if any
      } catch {
        // none
      }
      resolve({ code, signal, timedOut });
    });
  });
}

/** The events reporter.js wrote, one object a line. */
function readEvents(file) {
  try {
    return fs
      .readFileSync(file, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l));
  } catch {
    return null;
  }
}

/** The last error-looking line of a mocha process's output: what crashed it. */
function crashLine(logFile) {
  let text = '';
  try {
    text = fs.readFileSync(logFile, 'utf8');
  } catch {
    return undefined;
  }
  const lines = text.split('\n').map((l) => l.trim());
  const errLines = lines.filter((l) => /^([A-Z][A-Za-z]*(Error|Exception)|Error|FATAL|Segmentation)\b/.test(l));
  return errLines.length ? errLines[errLines.length - 1].slice(0, 200) : undefined;
}

function readJson(file) {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch {
    return null;
  }
}

async function runSide(opts, side, sideDir, testFiles, deadlineAt) {
  const resultsDir = path.join(opts.work, 'results', side);
  fs.rmSync(resultsDir, { recursive: true, force: true });
  fs.mkdirSync(resultsDir, { recursive: true });
  const files = {};
  const started = Date.now();
  for (const rel of testFiles) {
    const key = rel.replace(/\//g, '__').replace(/\.js$/, '');
    const entry = { file: rel, json: path.join(resultsDir, `${key}.events.jsonl`), log: path.join(resultsDir, `${key}.log`) };
    files[rel] = entry;
    const left = deadlineAt - Date.now();
    if (left < 5000) {
      entry.status = 'not reached (run deadline)';
      continue;
    }
    const env = {
      STORAGE_REDIS_PATH: opts.addon,
      IOREDIS_UTILS_PATH: path.join(opts.work, 'node_modules', 'ioredis', 'built', 'utils'),
    };
    const specs = [...HELPERS];
    if (side === 'ours') {
      entry.track = path.join(resultsDir, `${key}.track.json`);
      Object.assign(env, { SUITE_SHIM_PATH: path.join(HERE, 'shim.js'), SUITE_TRACK_FILE: entry.track });
      specs.unshift(path.join(HERE, 'track.js'));
    }
    let server;
    try {
      server = await startRedis(opts); // a fresh server per file: no state leaks between files
      const t0 = Date.now();
      const r = await runMocha(opts, sideDir, [...specs, path.join('functional', rel)], {
        reporterOut: entry.json,
        logFile: entry.log,
        env,
        timeoutMs: Math.min(opts.fileTimeout * 1000, left),
      });
      entry.ms = Date.now() - t0;
      entry.exit = r.signal || r.code;
      const events = readEvents(entry.json) || [];
      const end = events.find((e) => e.e === 'end');
      if (r.timedOut) entry.status = `killed after ${Math.round(entry.ms / 1000)} s (file timeout)`;
      else if (!end) {
        const line = crashLine(entry.log);
        entry.status = `mocha process ended (exit ${entry.exit}) before the end of the run${line ? `: ${line}` : ''}`;
      } else entry.status = 'ran';
      const n = (kind) => events.filter((e) => e.e === kind && !e.hook).length;
      log(`${side} ${rel}: ${entry.status}, ${n('pass')} passed, ${n('fail')} failed, ${n('pending')} pending (${(entry.ms / 1000).toFixed(1)} s)`);
    } finally {
      await stopRedis(server);
    }
  }
  const summary = { side, ms: Date.now() - started, files };
  fs.writeFileSync(path.join(resultsDir, 'summary.json'), JSON.stringify(summary, null, 2));
  return summary;
}

/** The tests each file defines (mocha --dry-run), so tests that never ran are counted too. */
async function listTests(opts, sideDir, testFiles) {
  const dir = path.join(opts.work, 'results', 'dry-run');
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const all = {};
  for (const rel of testFiles) {
    const key = rel.replace(/\//g, '__').replace(/\.js$/, '');
    const json = path.join(dir, `${key}.json`);
    await runMocha(opts, sideDir, [...HELPERS, path.join('functional', rel)], {
      reporterOut: json,
      logFile: path.join(dir, `${key}.log`),
      dryRun: true,
      env: {},
      timeoutMs: 60000,
    });
    const r = readJson(json);
    all[rel] = r ? r.tests.map((t) => t.fullTitle) : null;
  }
  fs.writeFileSync(path.join(dir, 'tests.json'), JSON.stringify(all, null, 2));
  return all;
}

// ---------------------------------------------------------------------------------------------
// Report


/** The first line of an error message; a few volatile details (ids, addresses, times) made generic. */
function cause(err) {
  if (!err || (!err.message && !err.stack)) return '(no error message)';
  let line = String(err.message || err.stack).split('\n').find((l) => l.trim() !== '') || '(empty message)';
  line = line
    .trim()
    .replace(/\s*\((\/[^()]*?\.js)\)$/, '') // mocha's timeout message ends with the test file's path
    .replace(/(, with args beginning with:).*$/, '$1 ...'); // ERR unknown command 'x', with args ...
  if (line.length > 220) line = line.slice(0, 217) + '...';
  return line;
}

/** One side's per-test outcomes: Map `file :: fullTitle` (numbered when repeated) -> outcome. */
function outcomes(summary, listed) {
  const map = new Map();
  for (const [rel, entry] of Object.entries(summary.files)) {
    const events = readEvents(entry.json);
    const track = entry.track ? readJson(entry.track) : null;
    const records = []; // in order of appearance
    const byTitle = new Map();
    const hooks = [];
    const recordFor = (e, create) => {
      const list = byTitle.get(e.fullTitle) || [];
      byTitle.set(e.fullTitle, list);
      const last = list[list.length - 1];
      if (!create && last) return last;
      const rec = { file: rel, title: e.fullTitle, state: 'running', n: list.length + 1 };
      list.push(rec);
      records.push(rec);
      return rec;
    };
    for (const e of events || []) {
      if (e.hook) {
        if (e.e === 'fail') hooks.push(e);
        continue;
      }
      if (e.e === 'begin') recordFor(e, true);
      else if (e.e === 'pass') {
        const rec = recordFor(e, false);
        if (rec.state === 'running') rec.state = 'passed';
      } else if (e.e === 'fail') {
        const rec = recordFor(e, false);
        const late = rec.state === 'passed' ? ' (after the test had passed)' : '';
        if (rec.state !== 'failed') {
          rec.state = 'failed';
          rec.cause = cause(e.err) + late;
        }
      } else if (e.e === 'pending') {
        const list = byTitle.get(e.fullTitle);
        const last = list && list[list.length - 1];
        const rec = last && last.state === 'running' ? last : recordFor(e, true);
        rec.state = 'pending';
      }
    }
    const ended = (events || []).some((e) => e.e === 'end');
    for (const rec of records) {
      if (rec.state !== 'running') continue;
      rec.state = 'failed';
      rec.cause = ended ? 'never finished (no pass or fail reported)' : `the test file's process ended during this test: ${entry.status}`;
    }
    for (const rec of records) {
      rec.built = track ? track[rec.title] : undefined;
      map.set(`${rel} :: ${rec.title}${rec.n > 1 ? ` #${rec.n}` : ''}`, rec);
    }
    // tests defined (dry run) that never began
    const seen = new Map();
    for (const title of listed[rel] || []) {
      const n = (seen.get(title) || 0) + 1;
      seen.set(title, n);
      const key = `${rel} :: ${title}${n > 1 ? ` #${n}` : ''}`;
      if (map.has(key)) continue;
      let why;
      if (!events) why = `not run: ${entry.status || 'file not run'}`;
      else if (!ended) why = `not run: ${entry.status}`;
      else {
        const hook = hooks.find((h) => {
          const suite = h.fullTitle.replace(/\s*"(before|after) (all|each)" hook.*$/s, '');
          return suite === '' || title.startsWith(suite + ' ') || title === suite;
        });
        // mocha ends a file's run at an uncaught error that no test or hook is running to take
        const lastBegin = events.map((e) => e.e).lastIndexOf('begin');
        const stopper = events.slice(lastBegin + 1).find((e) => e.e === 'fail');
        if (hook) {
          why = `not run: a hook failed: ${hook.fullTitle.match(/"(before|after) (all|each)" hook/)[0]}: ${cause(hook.err)}`;
        } else if (stopper) {
          why = `not run: mocha stopped the file at an uncaught error: ${cause(stopper.err)}`;
        } else why = 'not run: mocha skipped it (reason unknown)';
      }
      map.set(key, { file: rel, title, state: 'not run', cause: why });
    }
  }
  return { map };
}

function mdEscape(text) {
  return String(text).replace(/\|/g, '\\|').replace(/\r?\n/g, ' ');
}

/** Which build of the package was tested: its git commit (and whether the tree differs) and the addon's time. */
function addonVersion(opts) {
  let commit = 'unknown commit';
  try {
    commit = sh('git', ['-C', opts.addon, 'log', '-1', '--format=%h (%cI) %s']).trim().slice(0, 140);
    const dirty = sh('git', ['-C', opts.addon, 'status', '--porcelain', '--', 'index.js', 'binding.js', 'commands.js', 'src']).trim();
    if (dirty) commit += ', with uncommitted changes to index.js/src';
  } catch {
    // not a git checkout
  }
  const addon = fs.readdirSync(opts.addon).find((f) => f.endsWith('.node'));
  const mtime = addon ? fs.statSync(path.join(opts.addon, addon)).mtime.toISOString() : 'none';
  return `${opts.addon} at ${commit}; ${addon || 'no .node file'} built ${mtime}`;
}

function writeReport(opts, meta) {
  const listed = readJson(path.join(opts.work, 'results', 'dry-run', 'tests.json')) || {};
  const sum = (side) => readJson(path.join(opts.work, 'results', side, 'summary.json'));
  const base = sum('ioredis');
  const ours = sum('ours');
  const B = base ? outcomes(base, listed) : null;
  const O = ours ? outcomes(ours, listed) : null;
  const total = Object.values(listed).reduce((n, t) => n + (t ? t.length : 0), 0);

  const count = (o, state) => (o ? [...o.map.values()].filter((t) => t.state === state).length : 0);
  const lines = [];
  const p = (s = '') => lines.push(s);
  p('# ioredis functional suite against RedisClient');
  p();
  p(`Generated ${new Date().toISOString()} by \`scripts/ioredis-suite/run.js\`.`);
  if (meta && meta.origin) p(`Tests: ioredis \`test/functional\` from ${meta.origin}; baseline: ioredis@${opts.version} from npm.`);
  p(`RedisClient: ${(meta && meta.addon) || addonVersion(opts)}.`);
  if (meta && meta.mockLowercase) p('**Diagnostic run (`--mock-lowercase`): the mock server lowercased every command name before the tests\' handlers saw it.**');
  p(`Per-test timeout ${opts.testTimeout} ms; one mocha process and a fresh \`redis-server\` (${spawnSync('redis-server', ['--version'], { encoding: 'utf8' }).stdout.trim().split(' ').slice(0, 3).join(' ')}) per test file.`);
  p();
  p('## Totals');
  p();
  p(`Tests defined (mocha --dry-run): **${total}** in ${Object.keys(listed).length} files.`);
  p();
  p('| | passed | failed | pending (skipped) | not run | wall time |');
  p('| --- | --- | --- | --- | --- | --- |');
  for (const [name, o, s] of [['ioredis (baseline)', B, base], ['RedisClient (ours)', O, ours]]) {
    if (!o) continue;
    p(`| ${name} | ${count(o, 'passed')} | ${count(o, 'failed')} | ${count(o, 'pending')} | ${count(o, 'not run')} | ${Math.round(s.ms / 1000)} s |`);
  }
  p();
  let basePassed = [];
  if (B && O) {
    basePassed = [...B.map.entries()].filter(([, t]) => t.state === 'passed');
    const both = basePassed.filter(([k]) => O.map.get(k) && O.map.get(k).state === 'passed');
    const ratio = basePassed.length ? ((100 * both.length) / basePassed.length).toFixed(1) : '-';
    p(`**Of the ${basePassed.length} tests ioredis passes here, RedisClient passes ${both.length} (${ratio} %).**`);
    const noShim = both.filter(([k]) => O.map.get(k).built === 0).length;
    p();
    p(`Of those ${both.length}, ${noShim} constructed no shim client in the test body itself (they may use a client made in a \`before\` hook, or test only ioredis internals / mock servers / helpers; \`cluster/ClusterSubscriber.ts\` imports no Redis/Cluster at all).`);
    const oursOnly = [...O.map.entries()].filter(([k, t]) => t.state === 'passed' && (!B.map.get(k) || B.map.get(k).state !== 'passed'));
    p();
    p(`RedisClient passes ${oursOnly.length} tests that ioredis does not pass here.`);
    for (const [k] of oursOnly.slice(0, 30)) p(`- ${mdEscape(k)}`);
  }
  if (B) {
    const baseFail = [...B.map.values()].filter((t) => t.state === 'failed' || t.state === 'not run');
    if (baseFail.length) {
      p();
      p(`ioredis itself fails (or does not run) ${baseFail.length} tests here (excluded from the ratio):`);
      for (const t of baseFail) p(`- ${mdEscape(`${t.file} :: ${t.title}`)} — ${mdEscape(t.cause || '')}`);
    }
  }

  if (O) {
    // failures of ours among the baseline's passes, grouped by cause
    const universe = B ? basePassed.map(([k]) => k) : [...O.map.keys()];
    const groups = new Map();
    for (const k of universe) {
      const t = O.map.get(k);
      if (t && t.state === 'passed') continue;
      const c = !t ? 'not run: (absent from the report)' : t.state === 'pending' ? 'skipped (pending) on RedisClient' : t.cause;
      if (!groups.has(c)) groups.set(c, []);
      groups.get(c).push(t || { file: k.split(' :: ')[0], title: k.split(' :: ').slice(1).join(' :: ') });
    }
    const sorted = [...groups.entries()].sort((a, b) => b[1].length - a[1].length || a[0].localeCompare(b[0]));
    const failing = sorted.reduce((n, [, ts]) => n + ts.length, 0);
    p();
    p(`## RedisClient failures by cause (${failing} tests${B ? ' that ioredis passes' : ''}, ${sorted.length} causes)`);
    p();
    p('Cause = the first line of the error message (for tests that never ran: why).');
    p();
    p('| # | tests | cause | example |');
    p('| --- | --- | --- | --- |');
    sorted.forEach(([c, ts], i) => {
      p(`| ${i + 1} | ${ts.length} | ${mdEscape(c)} | ${mdEscape(`${ts[0].file} :: ${ts[0].title}`)} |`);
    });
    p();
    p('## RedisClient failures by test file');
    p();
    p('| file | ioredis passes | RedisClient passes (of those) |');
    p('| --- | --- | --- |');
    const byFile = new Map();
    for (const k of universe) {
      const f = k.split(' :: ')[0];
      const e = byFile.get(f) || [0, 0];
      e[0] += 1;
      const t = O.map.get(k);
      if (t && t.state === 'passed') e[1] += 1;
      byFile.set(f, e);
    }
    for (const [f, [n, ok]] of [...byFile.entries()].sort()) p(`| ${f} | ${n} | ${ok} |`);
    p();
    p('## Every failing test, by cause');
    for (const [c, ts] of sorted) {
      p();
      p(`### ${mdEscape(c)} (${ts.length})`);
      p();
      for (const t of ts) p(`- ${mdEscape(`${t.file} :: ${t.title}`)}`);
    }
  }
  p();
  p('## Files');
  p();
  p('| file | ioredis | RedisClient |');
  p('| --- | --- | --- |');
  for (const rel of Object.keys(listed)) {
    const st = (s) => (s && s.files[rel] ? `${s.files[rel].status || '-'}${s.files[rel].ms ? ` (${(s.files[rel].ms / 1000).toFixed(1)} s)` : ''}` : '-');
    p(`| ${rel} | ${st(base)} | ${st(ours)} |`);
  }
  fs.writeFileSync(opts.out, lines.join('\n') + '\n');
  return lines;
}

// ---------------------------------------------------------------------------------------------

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const startedAt = Date.now();
  const deadlineAt = startedAt + opts.deadline * 60 * 1000;
  fs.mkdirSync(opts.work, { recursive: true });
  const metaFile = path.join(opts.work, 'results', 'meta.json');

  if (!opts.reportOnly) {
    installDeps(opts);
    const { dest, origin } = extractTests(opts);
    log(`tests from ${origin}`);
    fs.mkdirSync(path.join(opts.work, 'results'), { recursive: true });
    fs.writeFileSync(metaFile, JSON.stringify({ origin, mockLowercase: opts.mockLowercase }));
    const sideDirs = {};
    for (const side of ['ioredis', 'ours']) sideDirs[side] = buildSide(opts, dest, side);
    const testFiles = walk(path.join(sideDirs.ioredis, 'test', 'functional')).filter(
      (f) => f.endsWith('.js') && f.includes(opts.grep)
    );
    log(`${testFiles.length} test files`);

    if (!(await portFree(opts.redisPort))) {
      throw new Error(`port ${opts.redisPort} is in use: stop whatever listens there (the suite needs its own redis-server on it)`);
    }
    const busy = [];
    for (const port of [26379, 27379, 27380, 17379, 17380, 17381, 30000, 30001, 30002, 30003, 30004, 30005, 30006]) {
      if (!(await portFree(port))) busy.push(port);
    }
    if (busy.length) log(`warning: ports the mock servers use are busy: ${busy.join(', ')} (those tests will fail on both sides)`);

    log('listing the tests (mocha --dry-run)');
    await listTests(opts, sideDirs.ioredis, testFiles);
    for (const side of opts.sides) {
      log(`running the suite against ${side === 'ours' ? `RedisClient (${opts.addon})` : `ioredis@${opts.version}`}`);
      if (side === 'ours') {
        const meta = readJson(metaFile);
        fs.writeFileSync(metaFile, JSON.stringify({ ...meta, addon: addonVersion(opts) }));
      }
      const s = await runSide(opts, side, sideDirs[side], testFiles, deadlineAt);
      log(`${side} done in ${Math.round(s.ms / 1000)} s`);
    }
  }
  const meta = readJson(metaFile);
  const lines = writeReport(opts, meta);
  const end = lines.findIndex((l) => l.startsWith('## RedisClient failures by test file'));
  console.log(lines.slice(0, end === -1 ? 40 : Math.min(end, 80)).join('\n'));
  log(`report: ${opts.out} (${Math.round((Date.now() - startedAt) / 1000)} s)`);
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : err);
  process.exit(1);
});
