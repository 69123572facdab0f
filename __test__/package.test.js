'use strict';

// The package as a user gets it: `npm pack` this repository and the platform package (with the
// built addon copied in), install both beside alova@3 into a throwaway project, and use it there
// from CommonJS and from an ES module as alova's l2Cache against a real redis-server.
//
// Needs the addon built (`npm run build`, or `npm test`, which builds as needed) and npm with
// registry access (or alova in the npm cache). `SKIP_PACKAGE_TEST=1` skips the pack-and-install
// test (npm test sets it for the `node --test __test__/` step and runs this file as a step of
// its own).

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const { startRedis } = require('./servers');

const ROOT = path.resolve(__dirname, '..');
const pkg = require(path.join(ROOT, 'package.json'));
const NPM = process.platform === 'win32' ? 'npm.cmd' : 'npm';
const INSTALL_TIMEOUT_MS = 300000;
const SKIP = process.env.SKIP_PACKAGE_TEST && process.env.SKIP_PACKAGE_TEST !== '0'
  ? 'SKIP_PACKAGE_TEST is set (npm test runs this file as its own step)'
  : false;

/** napi-rs's name for this platform, as in `npm/<triple>` and the addon's file name. */
function platformTriple() {
  const { platform, arch } = process;
  if (platform === 'linux') {
    const glibc = process.report.getReport().header.glibcVersionRuntime;
    return `linux-${arch}-${glibc ? 'gnu' : 'musl'}`;
  }
  if (platform === 'win32') return `win32-${arch}-msvc`;
  return `${platform}-${arch}`;
}

/**
 * The environment for a child npm: ours, without what `npm test` adds about this repository
 * (npm_package_*, npm_lifecycle_*, the prefixes), so that npm works on the temporary project.
 */
function childEnv(extra = {}) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^npm_(package|lifecycle)_/i.test(k)) continue;
    if (/^npm_config_(local_prefix|prefix|global)$/i.test(k)) continue;
    env[k] = v;
  }
  return { ...env, ...extra };
}

/** Runs a command; resolves { code, stdout, stderr }; rejects only when it cannot start or times out. */
function run(command, args, { cwd, env, timeout = 60000 } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd, env: env || childEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${command} ${args.join(' ')} timed out after ${timeout} ms\n${stdout}\n${stderr}`));
    }, timeout);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: signal ? `signal ${signal}` : code, stdout, stderr });
    });
  });
}

async function runOk(command, args, opts) {
  const r = await run(command, args, opts);
  assert.equal(r.code, 0, `${command} ${args.join(' ')} failed (${r.code}):\n${r.stdout}\n${r.stderr}`);
  return r;
}

/** `npm pack --json` in `dir` into `dest`; resolves the tarball path and its file list. */
async function pack(dir, dest) {
  const { stdout } = await runOk(NPM, ['pack', '--json', '--pack-destination', dest], { cwd: dir });
  const [info] = JSON.parse(stdout.slice(stdout.indexOf('[')));
  return { tarball: path.join(dest, info.filename), files: info.files.map((f) => f.path).sort() };
}

// What the script in the temporary project does, from CommonJS: alova app, miss then hit.
const CJS_CHECK = String.raw`
'use strict';
const assert = require('node:assert/strict');
const http = require('node:http');
const path = require('node:path');
const { createAlova } = require('alova');
const adapterFetch = require('alova/fetch');
const RedisStorageAdapter = require('@alova/storage-redis');
const { RedisClient } = require('@alova/storage-redis');

async function main() {
  // Loaded from node_modules, with the addon from the platform package.
  const here = path.join(__dirname, 'node_modules');
  assert.ok(require.resolve('@alova/storage-redis').startsWith(here), require.resolve('@alova/storage-redis'));
  assert.ok(require.resolve(process.env.PLATFORM_PACKAGE).startsWith(here));
  assert.equal(RedisStorageAdapter.RedisStorageAdapter, RedisStorageAdapter);
  assert.equal(typeof RedisClient, 'function');

  assert.throws(() => new RedisStorageAdapter({ port: {} }), { code: 'ERR_INVALID_OPTION' });

  let hits = 0;
  const server = http.createServer((req, res) => {
    hits += 1;
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ path: req.url }));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const baseURL = 'http://127.0.0.1:' + server.address().port;
  const service = () => {
    const l2Cache = new RedisStorageAdapter(process.env.REDIS_URL);
    const alova = createAlova({
      id: 'package-test',
      baseURL,
      requestAdapter: adapterFetch(),
      responded: (r) => r.json(),
      l2Cache,
      cacheLogger: false,
      cacheFor: { GET: { mode: 'restore', expire: 60000 } },
    });
    return { alova, l2Cache };
  };
  const a = service();
  const b = service();
  assert.deepEqual(await a.alova.Get('/todo'), { path: '/todo' });
  assert.equal(hits, 1, 'the first request reaches the server');
  assert.deepEqual(await b.alova.Get('/todo'), { path: '/todo' });
  assert.equal(hits, 1, 'the second instance is served from Redis');
  const keys = await b.l2Cache.client.call('KEYS', 'alova:*');
  assert.equal(keys.length, 1, JSON.stringify(keys));
  const ttl = await b.l2Cache.client.pttl(keys[0]);
  assert.ok(ttl > 0 && ttl <= 60000, 'ttl ' + ttl);
  await b.l2Cache.clear();
  assert.equal(await b.l2Cache.client.exists(keys[0]), 0);
  await Promise.all([a.l2Cache.close(), b.l2Cache.close()]);
  await new Promise((resolve) => server.close(resolve));
  console.log('cjs ok');
}
main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
`;

// From an ES module: default and named exports, one round trip.
const ESM_CHECK = String.raw`
import assert from 'node:assert/strict';
import RedisStorageAdapter, { RedisStorageAdapter as Named, RedisClient } from '@alova/storage-redis';

assert.equal(Named, RedisStorageAdapter);
assert.equal(typeof RedisClient, 'function');
const adapter = new RedisStorageAdapter({ url: process.env.REDIS_URL, keyPrefix: 'esm:' });
assert.equal(adapter.name, 'adapterRedis');
const expireAt = Date.now() + 60000;
await adapter.set('k', [{ from: 'esm' }, expireAt]);
assert.deepEqual(await adapter.get('k'), [{ from: 'esm' }, expireAt]);
await adapter.remove('k');
assert.equal(await adapter.get('k'), undefined);
await adapter.close();
console.log('esm ok');
`;

test('the packed package installs beside alova@3 and works from CommonJS and ESM', { skip: SKIP, timeout: INSTALL_TIMEOUT_MS + 120000 }, async (t) => {
  const triple = platformTriple();
  const addon = path.join(ROOT, `${pkg.napi.binaryName}.${triple}.node`);
  const platformDir = path.join(ROOT, 'npm', triple);
  if (!fs.existsSync(platformDir)) {
    t.skip(`no npm/${triple} platform package in this repository`);
    return;
  }
  assert.ok(fs.existsSync(addon), `${path.basename(addon)} is missing: run \`npm run build\` first`);

  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'alova-storage-redis-pack-'));
  let redis;
  t.after(async () => {
    if (redis) await redis.stop();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  // The main package: exactly the runtime files (no addon, no sources).
  const main = await pack(ROOT, tmp);
  for (const file of pkg.files) assert.ok(main.files.includes(file), `${file} is not in the tarball`);
  const unexpected = main.files.filter(
    (f) => !pkg.files.includes(f) && !/^(package\.json|README\.md|LICENSE)$/i.test(f)
  );
  assert.deepEqual(unexpected, [], 'the tarball holds only the runtime files, package.json and the README');

  // The platform package, with the addon built here copied in (outside the repository).
  const platformCopy = path.join(tmp, `platform-${triple}`);
  fs.cpSync(platformDir, platformCopy, { recursive: true });
  const platformPkg = JSON.parse(fs.readFileSync(path.join(platformCopy, 'package.json'), 'utf8'));
  assert.equal(pkg.optionalDependencies[platformPkg.name], pkg.version, 'optionalDependencies pins the platform package');
  assert.equal(platformPkg.version, pkg.version);
  fs.copyFileSync(addon, path.join(platformCopy, platformPkg.main));
  const platform = await pack(platformCopy, tmp);
  assert.deepEqual(platform.files, [platformPkg.main, 'README.md', 'package.json'].sort());

  // A fresh project: both tarballs and alova@3 from the registry (or the npm cache).
  const app = path.join(tmp, 'app');
  fs.mkdirSync(app);
  fs.writeFileSync(
    path.join(app, 'package.json'),
    JSON.stringify({ name: 'package-test-app', version: '1.0.0', private: true }, null, 2)
  );
  await runOk(
    NPM,
    ['install', '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error', main.tarball, platform.tarball, 'alova@3'],
    { cwd: app, timeout: INSTALL_TIMEOUT_MS }
  );

  redis = await startRedis();
  fs.writeFileSync(path.join(app, 'check.cjs'), CJS_CHECK);
  fs.writeFileSync(path.join(app, 'check.mjs'), ESM_CHECK);
  const env = childEnv({ REDIS_URL: redis.url, PLATFORM_PACKAGE: platformPkg.name });
  for (const [script, expected] of [['check.cjs', 'cjs ok'], ['check.mjs', 'esm ok']]) {
    // Each script must also end on its own once it has closed its adapters.
    const r = await run(process.execPath, [script], { cwd: app, env, timeout: 30000 });
    assert.equal(r.code, 0, `${script} failed:\n${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout, new RegExp(expected));
  }
});

test('index.d.ts declares a RedisClient method for every command in commands.js', () => {
  const dts = fs.readFileSync(path.join(ROOT, 'index.d.ts'), 'utf8');
  const commands = require(path.join(ROOT, 'commands.js'));
  const missing = commands.filter((name) => {
    const declared = /^[A-Za-z_$][\w$]*$/.test(name) ? name : `'${name}'`;
    return !new RegExp(`^\\s+${declared.replace(/[$]/g, '\\$')}\\(`, 'm').test(dts);
  });
  assert.deepEqual(missing, [], 'add these to RedisCommands in index.d.ts');
});
