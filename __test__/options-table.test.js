'use strict';

// The options table (src/config/table.rs) is the one declaration of every option: the README's
// option tables are generated from it, and index.d.ts must declare the same options, where they
// are taken, with the same defaults (issue 12, item 1).

const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { rows, updated, README } = require('../scripts/options.js');

const DTS = fs.readFileSync(path.join(__dirname, '..', 'index.d.ts'), 'utf8');

/**
 * The members of `interface name { ... }` in index.d.ts: name -> { type, default } (the JSDoc's
 * `@default`, or undefined).
 */
function members(name) {
  const start = DTS.indexOf(`interface ${name} `);
  assert.ok(start >= 0, `index.d.ts has no interface ${name}`);
  const open = DTS.indexOf('{', start);
  let depth = 0;
  let end = open;
  for (; end < DTS.length; end += 1) {
    if (DTS[end] === '{') depth += 1;
    if (DTS[end] === '}') depth -= 1;
    if (depth === 0) break;
  }
  const body = DTS.slice(open + 1, end);
  const out = new Map();
  // Line by line: a JSDoc block, then a member `name?: type;` or `name?(...): type;` at the top
  // level of the interface (members of nested object types are skipped).
  let doc = null;
  let inDoc = false;
  let level = 0;
  for (const line of body.split('\n')) {
    const text = line.trim();
    if (inDoc || text.startsWith('/**')) {
      doc = inDoc ? `${doc}\n${text}` : text;
      inDoc = !text.includes('*/');
      if (inDoc || !/\*\/\s*\S/.test(text)) continue;
    }
    const m = level === 0 ? /^(?:\/\*\*.*\*\/\s*)?(?:readonly\s+)?([A-Za-z_$][\w$]*)\??\s*(?::|\()(.*)$/.exec(text) : null;
    if (m) {
      const def = doc && /@default\s+(.*?)\s*(?:\*\/|$)/m.exec(doc);
      const type = m[2].replace(/;\s*$/, '').trim();
      out.set(m[1], { type, default: def ? def[1].trim() : undefined });
      doc = null;
    }
    for (const ch of text.replace(/\/\*.*?\*\//g, '')) {
      if (ch === '{' || ch === '(') level += 1;
      if (ch === '}' || ch === ')') level -= 1;
    }
  }
  return out;
}

/** True when the `@default` text of index.d.ts says what the table's default says. */
function sameDefault(table, dts) {
  if (table === null) return dts === undefined || /^(undefined|\{\}|the |every |none)/.test(dts);
  if (dts === undefined) return false;
  return dts === table || dts.startsWith(`${table} `) || dts.startsWith(`${table}(`);
}

describe('the options table', () => {
  const all = rows();
  const taken = (place) => all.filter((r) => r.places.includes(place) && r.effect !== 'refused');

  it('has one row per option and place', () => {
    const seen = new Set();
    for (const r of all) {
      for (const p of r.places) {
        const key = `${p}:${r.name}`;
        assert.ok(!seen.has(key), `${key} is declared twice`);
        seen.add(key);
      }
      assert.ok(['applied', 'no-op', 'refused'].includes(r.effect), r.name);
      if (r.effect !== 'applied') assert.ok(r.why.length > 0, `${r.name} says why`);
    }
  });

  it("README's option tables are generated from it (node scripts/options.js)", () => {
    const readme = fs.readFileSync(README, 'utf8');
    assert.equal(updated(readme), readme, 'README.md option tables are out of date: run node scripts/options.js');
  });

  for (const [place, iface, skip] of [
    ['server', 'RedisClientOptions', []],
    ['tls', 'RedisTlsOptions', []],
    ['cluster', 'RedisClusterOptions', []],
    ['lock', 'RedlockOptions', []],
    ['adapter', 'RedisStorageCommonOptions', ['client', 'nodes', 'options']],
  ]) {
    it(`index.d.ts ${iface} declares the ${place} options with the table's defaults`, () => {
      const declared = members(iface);
      for (const r of taken(place)) {
        if (skip.includes(r.name)) continue;
        const m = declared.get(r.name);
        assert.ok(m, `${iface} lacks \`${r.name}\``);
        assert.ok(sameDefault(r.default, m.default), `${iface}.${r.name}: @default ${m.default} in index.d.ts, ${r.default} in the table`);
      }
      const known = new Set(all.filter((r) => r.places.includes(place)).map((r) => r.name));
      for (const name of declared.keys()) {
        if (skip.includes(name)) continue;
        assert.ok(known.has(name), `${iface}.${name} is not in the options table`);
      }
    });
  }

  it('index.d.ts types the refused server options `never`', () => {
    const declared = members('RedisClientOptions');
    for (const r of all.filter((x) => x.places.includes('server') && x.effect === 'refused')) {
      const m = declared.get(r.name);
      assert.ok(m, `RedisClientOptions lacks \`${r.name}?: never\``);
      assert.equal(m.type, 'never', `RedisClientOptions.${r.name}`);
    }
  });

  it("index.d.ts RedisClusterNodeOptions picks the cluster node's options", () => {
    const start = DTS.indexOf('type RedisClusterNodeOptions = Pick<');
    const picked = DTS.slice(start, DTS.indexOf('>', start))
      .match(/'([A-Za-z]+)'/g)
      .map((s) => s.slice(1, -1));
    const applied = all.filter((r) => r.places.includes('cluster node') && r.effect === 'applied').map((r) => r.name);
    assert.deepEqual([...picked, 'db'].sort(), applied.sort());
  });
});
