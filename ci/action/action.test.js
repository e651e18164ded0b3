// The action's messages to the runner, without a cluster: `node --test ci/action/` (also run by
// tests/e2e/tests/progress.rs). kwg is a stand-in script printing what kwg prints on failure.
'use strict';
const assert = require('node:assert');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { spawnSync } = require('child_process');
const { test } = require('node:test');
const {
  workflowCommand, kwgCommand, sessionName,
} = require('./runner');

test('messages and properties are escaped per the workflow-command rules', () => {
  assert.strictEqual(
    workflowCommand('error', { title: 'kwg: failed, 100%' }, 'first\r\nsecond 50%'),
    '::error title=kwg%3A failed%2C 100%25::first%0D%0Asecond 50%25',
  );
  assert.strictEqual(workflowCommand('warning', {}, 'plain'), '::warning::plain');
});

// Runs one of the action's steps with `kwg` replaced by a script that prints `stdout`, exits
// `code` and appends its arguments to `args`; `extra`: more variables (e.g. STATE_*). Returns
// the step's exit code and output, the arguments kwg got, and the state the step saved.
function step(script, stdout, code, extra = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kwg-action-test-'));
  const fake = path.join(dir, 'kwg');
  const argsFile = path.join(dir, 'args');
  // `stdout`: what every command prints, or per command ({ join: ..., status: ... }).
  const out = typeof stdout === 'string' ? { '*': stdout } : stdout;
  const cases = Object.entries(out).map(([cmd, text]) => `${cmd}) cat <<'EOF'\n${text}\nEOF\n;;`).join('\n');
  fs.writeFileSync(fake, `#!/bin/sh\necho "$@" >> '${argsFile}'\ncase "$1" in\n${cases}\nesac\nexit ${code}\n`, { mode: 0o755 });
  const files = {};
  for (const name of ['GITHUB_OUTPUT', 'GITHUB_ENV', 'GITHUB_STATE']) {
    files[name] = path.join(dir, name.toLowerCase());
    fs.writeFileSync(files[name], '');
  }
  const env = {
    ...process.env, ...files, RUNNER_TEMP: dir, INPUT_KWG: fake, INPUT_KUBECONFIG: 'k', ...extra,
  };
  const r = spawnSync('node', [path.join(__dirname, script)], { env, encoding: 'utf8' });
  const read = (f) => (fs.existsSync(f) ? fs.readFileSync(f, 'utf8') : '');
  const args = read(argsFile).split('\n').filter(Boolean);
  const lines = read(files.GITHUB_STATE).split('\n');
  const state = {};
  for (let i = 0; i + 1 < lines.length; i += 3) {
    state[lines[i].split('<<')[0]] = lines[i + 1];
  }
  fs.rmSync(dir, { recursive: true, force: true });
  return { code: r.status, stdout: r.stdout, args, state };
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
  const user = { root: false, asUser: false };
  assert.deepStrictEqual(kwgCommand('/opt/kwg', join, user),
    ['/opt/kwg', ['join', '--tun', '-o', 'json', '--name', 'ci-1']]);
  assert.deepStrictEqual(kwgCommand('/opt/kwg', join, { ...user, root: true }), ['/opt/kwg', join]);
  assert.deepStrictEqual(kwgCommand('/opt/kwg', [...join, '--userspace'], { ...user, asUser: true }),
    ['/opt/kwg', [...join, '--userspace']]);
  assert.deepStrictEqual(kwgCommand('/opt/kwg', ['leave', '-o', 'json'], user),
    ['/opt/kwg', ['leave', '-o', 'json']]);
});

test('the post step leaves the session of its own join only (--context its alias), not every one', () => {
  const session = {
    connected: true, context: 'default', peer: 'ci-2', tunnelIp: '100.64.0.9', server: 'https://b', namespace: 'default',
  };
  const other = { ...session, peer: 'ci-1', tunnelIp: '100.80.0.3', server: 'https://a' };
  const status = { ...other, sessions: [{ ...other, alias: 'default' }, { ...session, alias: 'default-2' }] };
  const main = step('main.js', { join: JSON.stringify(session), status: JSON.stringify(status) }, 0);
  assert.strictEqual(main.code, 0, main.stdout);
  // Both kubeconfigs call their context default: the alias tells the sessions apart.
  assert.strictEqual(main.state.context, 'default-2');
  // The main step's kwg was its own stand-in (gone with its directory): the post step's is
  // INPUT_KWG.
  const state = Object.fromEntries(Object.entries(main.state)
    .filter(([k]) => k !== 'kwg').map(([k, v]) => [`STATE_${k}`, v]));
  const post = step('post.js', '{"left":true}', 0, state);
  assert.strictEqual(post.code, 0, post.stdout);
  assert.deepStrictEqual(post.args.map((a) => a.replace(/^.*(leave)/, '$1')),
    ['leave -o json --context default-2']);
});

test('without the status\'s sessions, the join\'s context names the session', () => {
  const joined = { context: 'ci-staging', peer: 'p', tunnelIp: '100.64.0.9', server: 'https://k' };
  assert.strictEqual(sessionName(joined, {}), 'ci-staging');
  assert.strictEqual(sessionName({ ...joined, context: null }, {}), '');
  assert.strictEqual(sessionName(joined, { sessions: [{ ...joined, alias: 'staging' }] }), 'staging');
});
