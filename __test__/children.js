'use strict';

// Child processes for the lock suites: forked fixtures that report by IPC messages, killed
// (SIGKILL) when the test process exits.

const path = require('node:path');
const { fork } = require('node:child_process');
const { within } = require('./helpers');

const FIXTURES = path.join(__dirname, 'fixtures');

const children = new Set();

/** Forks a fixture with its config; collects its messages; `next(type)` waits for one. */
function forkFixture(name, config) {
  const child = fork(path.join(FIXTURES, name), [JSON.stringify(config)], {
    execPath: process.execPath,
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  children.add(child);
  const messages = [];
  const waiters = [];
  let exited = null;
  child.on('message', (msg) => {
    messages.push(msg);
    for (const w of waiters.splice(0)) w();
  });
  child.on('exit', (code, signal) => {
    exited = { code, signal };
    children.delete(child);
    for (const w of waiters.splice(0)) w();
  });
  child.on('error', () => {});
  return {
    child,
    messages,
    /** Resolves with the first message of `type` (an 'error' message or an exit rejects). */
    async next(type, ms = 30000) {
      return within(
        ms,
        (async () => {
          for (;;) {
            const found = messages.find((m) => m.type === type);
            if (found) return found;
            const error = messages.find((m) => m.type === 'error');
            if (error) throw new Error(`${name} failed: ${error.message}`);
            if (exited) throw new Error(`${name} exited (${JSON.stringify(exited)}) before '${type}'`);
            await new Promise((resolve) => waiters.push(resolve));
          }
        })(),
        `${name} '${type}'`,
      );
    },
    /** SIGKILL, resolved once the process is gone. */
    async kill() {
      if (exited) return;
      const gone = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGKILL');
      await gone;
    },
  };
}

function killChildren() {
  for (const child of children) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  children.clear();
}
process.on('exit', killChildren);

module.exports = { forkFixture, killChildren };
