#!/usr/bin/env node
'use strict';

// Makes a fresh clone runnable: `npm install` when node_modules is missing, `npm run build` when
// the native addon is missing or older than its sources. Shared by `npm run demo` and `npm test`;
// also runnable alone (`node scripts/ensure-built.js`). Plain Node, no dependencies: it runs
// before anything is installed.

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..');
const pkg = require(path.join(ROOT, 'package.json'));

/** What the build writes, besides the addon. */
const GENERATED = ['binding.js', 'binding.d.ts'];
/** What the build reads: a change to any of them makes the addon stale. */
const SOURCES = ['src', 'Cargo.toml', 'Cargo.lock', 'build.rs', '.cargo'];

function log(message) {
  console.log(`[ensure-built] ${message}`);
}

/** napi-rs's name for this platform (`linux-x64-gnu`, `darwin-arm64`, `win32-x64-msvc`, ...). */
function platformTriple() {
  const { platform, arch } = process;
  if (platform === 'linux') {
    const report = process.report && process.report.getReport();
    const glibc = report && report.header && report.header.glibcVersionRuntime;
    return `linux-${arch}-${glibc ? 'gnu' : 'musl'}`;
  }
  if (platform === 'win32') return `win32-${arch}-msvc`;
  return `${platform}-${arch}`;
}

/** Path of the addon `napi build --platform` writes for this machine. */
function addonPath() {
  return path.join(ROOT, `${pkg.napi.binaryName}.${platformTriple()}.node`);
}

/** The newest modification time under `p` (a file or a directory), 0 when absent. */
function newestMtime(p) {
  let stat;
  try {
    stat = fs.statSync(p);
  } catch {
    return 0;
  }
  if (!stat.isDirectory()) return stat.mtimeMs;
  let newest = stat.mtimeMs;
  for (const entry of fs.readdirSync(p)) newest = Math.max(newest, newestMtime(path.join(p, entry)));
  return newest;
}

/** Why the addon needs building, or null when it is up to date. */
function staleReason() {
  const addon = addonPath();
  if (!fs.existsSync(addon)) return `${path.basename(addon)} is missing`;
  const missing = GENERATED.find((f) => !fs.existsSync(path.join(ROOT, f)));
  if (missing) return `${missing} is missing`;
  const built = fs.statSync(addon).mtimeMs;
  const changed = SOURCES.find((s) => newestMtime(path.join(ROOT, s)) > built);
  return changed ? `${changed} changed since the last build` : null;
}

function run(command, args) {
  log(`$ ${command} ${args.join(' ')}`);
  const result = spawnSync(command, args, { cwd: ROOT, stdio: 'inherit' });
  if (result.error) throw new Error(`${command} could not start: ${result.error.message}`);
  if (result.status !== 0) {
    throw new Error(`${command} ${args.join(' ')} failed (${result.signal || `exit ${result.status}`})`);
  }
}

function npm() {
  return process.platform === 'win32' ? 'npm.cmd' : 'npm';
}

/**
 * Installs and builds what is missing or stale.
 * @throws {Error} when `npm install` or the build fails.
 */
function ensureBuilt() {
  const napiCli = path.join(ROOT, 'node_modules', '@napi-rs', 'cli', 'package.json');
  if (!fs.existsSync(napiCli)) {
    log('node_modules is missing: installing the dev dependencies');
    run(npm(), ['install', '--no-audit', '--no-fund']);
  }
  const reason = staleReason();
  if (reason) {
    log(`building the native addon (${reason}); the first release build takes a few minutes`);
    run(npm(), ['run', 'build']);
    const after = staleReason();
    if (after) throw new Error(`the build finished but ${after}`);
  } else {
    log(`${path.basename(addonPath())} is up to date`);
  }
}

module.exports = { ensureBuilt, addonPath, platformTriple, ROOT };

if (require.main === module) {
  try {
    ensureBuilt();
  } catch (err) {
    console.error(`[ensure-built] ${err.message}`);
    process.exit(1);
  }
}
