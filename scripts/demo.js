#!/usr/bin/env node
'use strict';

// `npm run demo`: install and build as needed, then run examples/alova-app.js against
// $REDIS_URL, or, when it is unset, against a throwaway redis-server started here on a free
// loopback port (and stopped afterwards, whatever happens). Plain Node, no dependencies.

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const { ensureBuilt, ROOT } = require('./ensure-built');

const HOST = '127.0.0.1';
const READY_TIMEOUT_MS = 10000;

function log(message) {
  console.log(`[demo] ${message}`);
}

/** A loopback port nobody listens on right now. */
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, HOST, () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Resolves true once the server at `port` answers PING with PONG. */
function ping(port) {
  return new Promise((resolve) => {
    const socket = net.createConnection({ host: HOST, port });
    let reply = '';
    const done = (ok) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => done(false));
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk) => {
      reply += chunk;
      if (reply.includes('\r\n')) done(reply.startsWith('+PONG'));
    });
    socket.on('error', () => done(false));
  });
}

/** Starts redis-server on a free port; resolves { url, stop() } once it answers. */
async function startRedis() {
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'alova-demo-redis-'));
  const child = spawn(
    process.env.REDIS_SERVER || 'redis-server',
    ['--port', String(port), '--bind', HOST, '--save', '', '--appendonly', 'no', '--dir', dir],
    { stdio: ['ignore', 'pipe', 'pipe'] }
  );
  let output = '';
  for (const stream of [child.stdout, child.stderr]) stream.on('data', (text) => (output += text));
  const exited = new Promise((resolve) => child.once('exit', resolve));
  const failedToStart = new Promise((_, reject) =>
    child.once('error', (err) =>
      reject(
        err.code === 'ENOENT'
          ? new Error('redis-server is not installed: install it (apt-get install redis-server) or set REDIS_URL')
          : err
      )
    )
  );

  async function stop() {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(timer);
    }
    fs.rmSync(dir, { recursive: true, force: true });
  }

  const ready = (async () => {
    const deadline = Date.now() + READY_TIMEOUT_MS;
    while (Date.now() < deadline) {
      if (child.exitCode !== null) throw new Error(`redis-server exited at start-up:\n${output}`);
      if (await ping(port)) return;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    throw new Error(`redis-server did not answer within ${READY_TIMEOUT_MS} ms:\n${output}`);
  })();
  try {
    await Promise.race([ready, failedToStart]);
  } catch (err) {
    await stop();
    throw err;
  }
  return { url: `redis://${HOST}:${port}`, pid: child.pid, stop };
}

/** Runs the example with REDIS_URL set; resolves its exit code. */
function runExample(redisUrl) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(ROOT, 'examples', 'alova-app.js')], {
      cwd: ROOT,
      stdio: 'inherit',
      env: { ...process.env, REDIS_URL: redisUrl },
    });
    child.once('error', reject);
    child.once('exit', (code, signal) => resolve(signal ? 1 : code));
  });
}

async function main() {
  ensureBuilt();
  let server = null;
  let redisUrl = process.env.REDIS_URL;
  if (redisUrl) {
    log(`using REDIS_URL (${redisUrl.replace(/\/\/[^@/]*@/, '//***@')})`);
  } else {
    server = await startRedis();
    redisUrl = server.url;
    log(`started a throwaway redis-server at ${redisUrl} (pid ${server.pid})`);
  }
  const stopServer = () => server && server.stop();
  // Ctrl-C: stop the server too, then end the way the signal would have.
  for (const signal of ['SIGINT', 'SIGTERM']) {
    process.once(signal, async () => {
      await stopServer();
      process.kill(process.pid, signal);
    });
  }
  let code;
  try {
    code = await runExample(redisUrl);
  } finally {
    if (server) {
      await server.stop();
      log('stopped the throwaway redis-server');
    }
  }
  log(code === 0 ? 'done' : `the example failed (exit ${code})`);
  process.exitCode = code;
}

main().catch((err) => {
  console.error(`[demo] ${err.message}`);
  process.exitCode = 1;
});
