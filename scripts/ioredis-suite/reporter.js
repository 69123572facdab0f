'use strict';

// A mocha reporter that appends one JSON line per event to SUITE_EVENTS_FILE as it happens, so
// that a test file whose process crashes or is killed still leaves the results it got so far,
// and the test that was running then. Lines: {e: 'begin'|'pass'|'fail'|'pending'|'end', ...}.

const fs = require('node:fs');
const Mocha = require(process.env.SUITE_MOCHA_PATH || 'mocha');

const { EVENT_TEST_BEGIN, EVENT_TEST_PASS, EVENT_TEST_FAIL, EVENT_TEST_PENDING, EVENT_RUN_END } =
  Mocha.Runner.constants;

function errorOf(err) {
  if (!err) return { message: '(no error)' };
  let message;
  try {
    message = err.message !== undefined ? String(err.message) : String(err);
  } catch {
    message = '(unprintable error)';
  }
  return { message, name: err.name, code: err.code, stack: err.stack ? String(err.stack).slice(0, 4000) : undefined };
}

class LineReporter extends Mocha.reporters.Base {
  constructor(runner, options) {
    super(runner, options);
    const file = process.env.SUITE_EVENTS_FILE;
    const write = (record) => {
      if (file) fs.appendFileSync(file, JSON.stringify(record) + '\n');
    };
    const base = (test) => ({
      title: test.title,
      fullTitle: test.fullTitle(),
      hook: test.type === 'hook',
    });
    runner.on(EVENT_TEST_BEGIN, (test) => write({ e: 'begin', ...base(test) }));
    runner.on(EVENT_TEST_PASS, (test) => write({ e: 'pass', ...base(test), ms: test.duration }));
    runner.on(EVENT_TEST_FAIL, (test, err) => write({ e: 'fail', ...base(test), err: errorOf(err) }));
    runner.on(EVENT_TEST_PENDING, (test) => write({ e: 'pending', ...base(test) }));
    runner.once(EVENT_RUN_END, () => write({ e: 'end', stats: this.stats }));
  }
}

module.exports = LineReporter;
