// The action's messages to the runner, without a cluster: `node --test ci/action/` (also run by
// tests/e2e/tests/progress.rs). kwg is a stand-in script printing what kwg prints on failure.
'use strict';
const assert = require('node:assert');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { spawnSync } = require('child_process');
const { test } = require('node:test');
const { workflowCommand, kwgCommand } = require('./runner');

test('messages and properties are escaped per the workflow-command rules', () => {
  assert.strictEqual(
    workflowCommand('error', { title: 'kwg: failed, 100%' }, 'first\r\nsecond 50%'),
    '::error title=kwg%3A failed%2C 100%25::first%0D%0Asecond 50%25',
  );
  assert.strictEqual(workflowCommand('warning', {}, 'plain'), '::warning::plain');
});

// Runs one of the action's steps with `kwg` replaced by a script that prints `stdout` and
// exits `code`; returns the step's exit code and output.
function step(script, stdout, code) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kwg-action-test-'));
  const fake = path.join(dir, 'kwg');
  fs.writeFileSync(fake, `#!/bin/sh\ncat <<'EOF'\n${stdout}\nEOF\nexit ${code}\n`, { mode: 0o755 });
  const files = {};
  for (const name of ['GITHUB_OUTPUT', 'GITHUB_ENV', 'GITHUB_STATE']) {
    files[name] = path.join(dir, name.toLowerCase());
    fs.writeFileSync(files[name], '');
  }
  const env = {
    ...process.env, ...files, RUNNER_TEMP: dir, INPUT_KWG: fake, INPUT_KUBECONFIG: 'k',
  };
  const r = spawnSync('node', [path.join(__dirname, script)], { env, encoding: 'utf8' });
  fs.rmSync(dir, { recursive: true, force: true });
  return { code: r.status, stdout: r.stdout };
}

test('a failed join is one ::error:: line carrying the whole message, and kwg\'s code', () => {
  const failure = JSON.stringify({
    connected: false,
    step: 'handshake',
    message: 'the gateway did not answer within 30s on any path (udp: timed out, tcp: refused)\nsecond line 100%',
    exitCode: 6,
  });
  const r = step('main.js', failure, 6);
  assert.strictEqual(r.code, 6);
  const errors = r.stdout.split('\n').filter((l) => l.startsWith('::error'));
  assert.deepStrictEqual(errors, [
    '::error title=kwg join failed (handshake)::the gateway did not answer within 30s on any path (udp: timed out, tcp: refused)%0Asecond line 100%25',
  ]);
});

test('a failed leave in the post step is a warning and the step succeeds', () => {
  const r = step('post.js', '{"left":false}', 4);
  assert.strictEqual(r.code, 0, r.stdout);
  assert.match(r.stdout, /^::warning title=kwg leave failed::the peer is removed by the gateway when its lease ends; see the log above$/m);
});

test('kwg runs as the runner\'s user, never through sudo; a user\'s join asks for the helper with --tun', () => {
  const join = ['join', '-o', 'json', '--name', 'ci-1'];
  assert.deepStrictEqual(kwgCommand('/opt/kwg', join, { root: false, asUser: false }),
    ['/opt/kwg', ['join', '--tun', '-o', 'json', '--name', 'ci-1']]);
  assert.deepStrictEqual(kwgCommand('/opt/kwg', join, { root: true, asUser: false }), ['/opt/kwg', join]);
  assert.deepStrictEqual(kwgCommand('/opt/kwg', [...join, '--userspace'], { root: false, asUser: true }),
    ['/opt/kwg', [...join, '--userspace']]);
  assert.deepStrictEqual(kwgCommand('/opt/kwg', ['leave', '-o', 'json'], { root: false, asUser: false }),
    ['/opt/kwg', ['leave', '-o', 'json']]);
});
