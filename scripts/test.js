#!/usr/bin/env node
'use strict';

// `npm test`: every check this repository has, in order, each against real redis-server
// processes that the suites start and stop themselves.
//
//   1. build    install and build as needed (scripts/ensure-built.js)
//   2. core     cargo test --no-default-features   (the Rust core, without napi)
//   3. js       node --test __test__/               (the JavaScript suites)
//   4. types    tsc --noEmit -p __test__           (index.d.ts as TypeScript users see it)
//   5. package  node --test __test__/package.test.js (npm pack, install, use)
//
// A failed build stops the run (nothing after it could pass); any other step failing is
// reported and the run goes on, so one run shows everything that is wrong. Exits non-zero when
// any step failed, after a summary line.

const { spawnSync } = require('node:child_process');
const path = require('node:path');

const { ensureBuilt, ROOT } = require('./ensure-built');

const node = process.execPath;
const tsc = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');

const steps = [
  { name: 'build', run: () => ensureBuilt(), stopOnFailure: true },
  { name: 'core', command: 'cargo', args: ['test', '--no-default-features'] },
  { name: 'js', command: node, args: ['--test', '__test__/'], env: { SKIP_PACKAGE_TEST: '1' } },
  { name: 'types', command: node, args: [tsc, '--noEmit', '-p', '__test__'] },
  { name: 'package', command: node, args: ['--test', '__test__/package.test.js'] },
];

function banner(text) {
  console.log(`\n=== ${text} ${'='.repeat(Math.max(0, 86 - text.length))}`);
}

/** The step's command as a person would type it. */
function display(step) {
  if (step.args[0] === tsc) return `tsc ${step.args.slice(1).join(' ')}`;
  return `${step.command === node ? 'node' : step.command} ${step.args.join(' ')}`;
}

/** Runs one step; resolves 'passed' or a reason it failed. */
function runStep(step) {
  if (step.run) {
    try {
      step.run();
      return 'passed';
    } catch (err) {
      console.error(err.message);
      return 'failed';
    }
  }
  const result = spawnSync(step.command, step.args, {
    cwd: ROOT,
    stdio: 'inherit',
    env: { ...process.env, ...step.env },
  });
  if (result.error) {
    console.error(`${step.command} could not start: ${result.error.message}`);
    return 'failed';
  }
  return result.status === 0 ? 'passed' : 'failed';
}

function seconds(ms) {
  return `${(ms / 1000).toFixed(1)}s`;
}

function main() {
  const results = [];
  let stopped = false;
  for (const step of steps) {
    if (stopped) {
      results.push({ name: step.name, outcome: 'skipped', ms: 0 });
      continue;
    }
    banner(`${step.name}${step.command ? `: ${display(step)}` : ''}`);
    const start = Date.now();
    const outcome = runStep(step);
    results.push({ name: step.name, outcome, ms: Date.now() - start });
    if (outcome !== 'passed' && step.stopOnFailure) stopped = true;
  }

  banner('summary');
  for (const r of results) {
    console.log(`  ${r.outcome.padEnd(8)} ${r.name.padEnd(8)} ${r.outcome === 'skipped' ? '' : seconds(r.ms)}`);
  }
  const failed = results.filter((r) => r.outcome === 'failed').map((r) => r.name);
  const skipped = results.filter((r) => r.outcome === 'skipped').map((r) => r.name);
  const passed = results.filter((r) => r.outcome === 'passed').length;
  const total = results.reduce((sum, r) => sum + r.ms, 0);
  if (failed.length === 0) {
    console.log(`\nnpm test: PASSED (${passed}/${steps.length} steps in ${seconds(total)})`);
  } else {
    console.log(
      `\nnpm test: FAILED (${failed.join(', ')} failed${skipped.length ? `; ${skipped.join(', ')} not run` : ''}; ` +
        `${passed}/${steps.length} steps passed in ${seconds(total)})`
    );
    process.exitCode = 1;
  }
}

main();
