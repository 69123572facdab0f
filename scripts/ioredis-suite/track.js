'use strict';

// Loaded by run.js as the first mocha spec file of a run against RedisClient: records, per test,
// how many shim clients (Redis / Cluster) the test itself constructed. Written at exit to
// SUITE_TRACK_FILE. Only informative (the report says which passing tests never built one).

const fs = require('node:fs');

const shimPath = process.env.SUITE_SHIM_PATH;
const file = process.env.SUITE_TRACK_FILE;
const record = {};
let before = 0;

if (shimPath && file) {
  const shim = require(shimPath);
  beforeEach(function () {
    before = shim.constructed;
  });
  afterEach(function () {
    const title = this.currentTest.fullTitle();
    record[title] = (record[title] || 0) + (shim.constructed - before);
  });
  process.on('exit', () => {
    try {
      fs.writeFileSync(file, JSON.stringify(record));
    } catch {
      // nothing to do: the report then lacks this file's tracking
    }
  });
}
