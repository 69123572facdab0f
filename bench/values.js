'use strict';

// The values alova stores, at the sizes the benchmark uses: an entry `[data, expireTimestamp]` of
// about 250 bytes of JSON (a typical small API response), about 10 KB and about 1 MB.

function record(i) {
  return {
    id: 100000 + i,
    name: `user-${i}`,
    email: `user${i}@example.com`,
    roles: ['reader', 'writer'],
    active: i % 2 === 0,
    score: 98.6,
    createdAt: '2024-05-17T09:31:27.000Z',
    address: { city: 'Hangzhou', zip: '310000' },
  };
}

/** A response body whose entry `[body, expireAt]` stringifies to about `bytes` bytes. */
function body(bytes) {
  if (bytes <= 300) {
    return { code: 0, message: 'ok', data: record(1) };
  }
  const list = [];
  let size = 40;
  for (let i = 0; size < bytes; i += 1) {
    const r = record(i);
    size += JSON.stringify(r).length + 1;
    list.push(r);
  }
  return { code: 0, message: 'ok', total: list.length, data: list };
}

const SIZES = { '250B': 250, '10KB': 10 * 1024, '1MB': 1024 * 1024 };

/** The alova entry for size `name` ('250B', '10KB', '1MB'), expiring `ttlMs` from now. */
function entry(name, ttlMs = 60000) {
  return [body(SIZES[name]), Date.now() + ttlMs];
}

module.exports = { SIZES, entry, body };
