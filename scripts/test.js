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

const { spawn } = require('node:child_process');
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

/**
 * Test counts in a step's output: cargo's `test result: ok. N passed; M failed` lines and
 * node:test's `# pass N` / `# fail M` lines.
 */
function countTests(output) {
  let passed = 0;
  let failed = 0;
  for (const m of output.matchAll(/^test result: \w+\. (\d+) passed; (\d+) failed/gm)) {
    passed += Number(m[1]);
    failed += Number(m[2]);
  }
  for (const m of output.matchAll(/^# pass (\d+)$/gm)) passed += Number(m[1]);
  for (const m of output.matchAll(/^# fail (\d+)$/gm)) failed += Number(m[1]);
  return { passed, failed };
}

/** Runs one step, echoing its output; resolves its outcome and the tests it counted. */
function runStep(step) {
  if (step.run) {
    try {
      step.run();
      return Promise.resolve({ outcome: 'passed', tests: { passed: 0, failed: 0 } });
    } catch (err) {
      console.error(err.message);
      return Promise.resolve({ outcome: 'failed', tests: { passed: 0, failed: 0 } });
    }
  }
  return new Promise((resolve) => {
    const child = spawn(step.command, step.args, {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...step.env },
    });
    let output = '';
    child.stdout.on('data', (chunk) => {
      output += chunk;
      process.stdout.write(chunk);
    });
    child.stderr.on('data', (chunk) => {
      output += chunk;
      process.stderr.write(chunk);
    });
    child.on('error', (err) => {
      console.error(`${step.command} could not start: ${err.message}`);
      resolve({ outcome: 'failed', tests: { passed: 0, failed: 0 } });
    });
    child.on('close', (code) => {
      const tests = countTests(output);
      // tsc prints nothing when the types check: count the check as one test.
      if (step.name === 'types') tests[code === 0 ? 'passed' : 'failed'] += 1;
      resolve({ outcome: code === 0 ? 'passed' : 'failed', tests });
    });
  });
}

function seconds(ms) {
  return `${(ms / 1000).toFixed(1)}s`;
}

async function main() {
  const results = [];
  let stopped = false;
  for (const step of steps) {
    if (stopped) {
      results.push({ name: step.name, outcome: 'skipped', tests: { passed: 0, failed: 0 }, ms: 0 });
      continue;
    }
    banner(`${step.name}${step.command ? `: ${display(step)}` : ''}`);
    const start = Date.now();
    const { outcome, tests } = await runStep(step);
    results.push({ name: step.name, outcome, tests, ms: Date.now() - start });
    if (outcome !== 'passed' && step.stopOnFailure) stopped = true;
  }

  banner('summary');
  for (const r of results) {
    const counts = r.outcome === 'skipped' ? '' : `${seconds(r.ms).padStart(7)}  ${r.tests.passed} passed, ${r.tests.failed} failed`;
    console.log(`  ${r.outcome.padEnd(8)} ${r.name.padEnd(8)} ${counts}`);
  }
  const testsPassed = results.reduce((sum, r) => sum + r.tests.passed, 0);
  const testsFailed = results.reduce((sum, r) => sum + r.tests.failed, 0);
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
  // The plain closing line CI reads; a failed step that counted no failed test (a build, a
  // crash) still counts as one failure, so the line never says 0 failed when the run failed.
  const failures = failed.length > 0 ? Math.max(testsFailed, 1) : testsFailed;
  console.log(`tests: ${testsPassed} passed, ${failures} failed`);
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
