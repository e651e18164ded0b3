// The action's install step against a local HTTP server serving release assets built from
// this tree: `KWG_RELEASE_DIR=DIR node --test ci/action/install.test.js`, DIR written by
// scripts/release-build.sh for amd64 and arm64 (tests/e2e/tests/release.rs does both).
'use strict';
const assert = require('node:assert');
const fs = require('fs');
const http = require('http');
const os = require('os');
const path = require('path');
const { spawn, spawnSync } = require('child_process');
const { test, before, after } = require('node:test');
const { install, actionVersion, expectedSum, resolveKwg } = require('./install');

const dist = process.env.KWG_RELEASE_DIR;
const version = actionVersion();
let server;
let baseUrl;
const requests = [];
// Served instead of the real SHA256SUMS when set (a tampered release).
let sumsOverride = null;

before(async () => {
  assert.ok(dist, 'KWG_RELEASE_DIR names the directory of scripts/release-build.sh');
  server = http.createServer((req, res) => {
    requests.push(req.url);
    const m = req.url.match(/^\/v([^/]+)\/([^/]+)$/);
    if (!m || m[1] !== version) {
      res.writeHead(404).end();
      return;
    }
    const file = path.join(dist, m[2]);
    if (m[2] === 'SHA256SUMS' && sumsOverride !== null) {
      res.writeHead(200).end(sumsOverride);
    } else if (fs.existsSync(file)) {
      res.writeHead(200).end(fs.readFileSync(file));
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  baseUrl = `http://127.0.0.1:${server.address().port}`;
});

after(() => server.close());

function cache() {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'kwg-tool-cache-'));
}

test('the asset of the runner\'s architecture is downloaded, verified, and reused from the cache', async () => {
  const toolCache = cache();
  for (const [arch, name] of [['x64', 'amd64'], ['arm64', 'arm64']]) {
    requests.length = 0;
    const r = await install({ version, platform: 'linux', arch, baseUrl, toolCache });
    assert.strictEqual(r.exe, path.join(toolCache, 'kwg', version, name, 'kwg'));
    assert.strictEqual(r.cached, false);
    assert.deepStrictEqual(requests, [
      `/v${version}/SHA256SUMS`, `/v${version}/kwg_${version}_linux_${name}.tar.gz`,
    ]);
    assert.ok(fs.existsSync(path.join(toolCache, 'kwg', version, name, 'man', 'kwg.1.gz')));
  }
  // The amd64 one runs here: it is the kwg of this tree.
  const kwg = path.join(toolCache, 'kwg', version, 'amd64', 'kwg');
  const v = spawnSync(kwg, ['--version'], { encoding: 'utf8' });
  assert.match(v.stdout, new RegExp(`^kwg ${version.replace(/\./g, '\\.')} \\(commit `));
  // Again: from the cache, nothing downloaded.
  requests.length = 0;
  const again = await install({ version, platform: 'linux', arch: 'x64', baseUrl, toolCache });
  assert.deepStrictEqual(again, { exe: kwg, cached: true });
  assert.deepStrictEqual(requests, []);
  fs.rmSync(toolCache, { recursive: true, force: true });
});

test('a bad checksum is refused with one sentence and nothing is installed', async () => {
  const toolCache = cache();
  const name = `kwg_${version}_linux_amd64.tar.gz`;
  const real = fs.readFileSync(path.join(dist, 'SHA256SUMS'), 'utf8');
  const want = expectedSum(real, name);
  assert.ok(want, real);
  const wrong = want.replace(/^./, (c) => (c === '0' ? '1' : '0'));
  sumsOverride = real.replace(want, wrong);
  try {
    await assert.rejects(
      install({ version, platform: 'linux', arch: 'x64', baseUrl, toolCache }),
      (e) => {
        assert.strictEqual(e.message, `the SHA-256 of ${name} is ${want}, not ${wrong} as the SHA256SUMS of v${version} says, so it was not installed: the download is corrupt or was changed`);
        return true;
      },
    );
    assert.ok(!fs.existsSync(path.join(toolCache, 'kwg', version, 'amd64')));
    // The action's main step: one ::error:: line, exit 1, before anything is joined.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kwg-action-test-'));
    const files = {};
    for (const f of ['GITHUB_OUTPUT', 'GITHUB_ENV', 'GITHUB_STATE', 'GITHUB_PATH']) {
      files[f] = path.join(dir, f.toLowerCase());
      fs.writeFileSync(files[f], '');
    }
    const env = {
      ...process.env, ...files, RUNNER_TEMP: dir, RUNNER_TOOL_CACHE: toolCache,
      INPUT_KUBECONFIG: 'k', INPUT_VERSION: version, 'INPUT_RELEASE-URL': baseUrl,
    };
    delete env.INPUT_KWG;
    // Not spawnSync: the step downloads from this process's server.
    const r = await new Promise((resolve) => {
      const child = spawn('node', [path.join(__dirname, 'main.js')], { env });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d) => { stdout += d; });
      child.stderr.on('data', (d) => { stderr += d; });
      child.on('close', (status) => resolve({ status, stdout, stderr }));
    });
    fs.rmSync(dir, { recursive: true, force: true });
    assert.strictEqual(r.status, 1, r.stdout + r.stderr);
    assert.deepStrictEqual(r.stdout.trim().split('\n'), [
      `::error title=kwg install failed::the SHA-256 of ${name} is ${want}, not ${wrong} as the SHA256SUMS of v${version} says, so it was not installed: the download is corrupt or was changed`,
    ]);
  } finally {
    sumsOverride = null;
    fs.rmSync(toolCache, { recursive: true, force: true });
  }
});

test('other platforms, architectures and missing releases get a sentence naming the fix', async () => {
  const toolCache = cache();
  await assert.rejects(install({ version, platform: 'darwin', arch: 'arm64', baseUrl, toolCache }),
    /built for Linux only and this runner is darwin: run the job on a Linux runner/);
  await assert.rejects(install({ version, platform: 'linux', arch: 'riscv64', baseUrl, toolCache }),
    /built for amd64 and arm64 and this runner is riscv64/);
  await assert.rejects(install({ version: '9.9.9', platform: 'linux', arch: 'x64', baseUrl, toolCache }),
    /cannot download http:\/\/127\.0\.0\.1:\d+\/v9\.9\.9\/SHA256SUMS: HTTP 404 .*set the action.s version input to path/);
  fs.rmSync(toolCache, { recursive: true, force: true });
});

test('the kwg input and version: path use a kwg on PATH, by its absolute path', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kwg-path-'));
  fs.writeFileSync(path.join(dir, 'kwg'), '#!/bin/sh\n', { mode: 0o755 });
  const inputs = (m) => (name) => m[name] || '';
  const env = { PATH: `/nonexistent:${dir}` };
  assert.strictEqual(resolveKwg(inputs({ version: 'path' }), env).exe, path.join(dir, 'kwg'));
  assert.strictEqual(resolveKwg(inputs({ kwg: 'kwg' }), env).exe, path.join(dir, 'kwg'));
  assert.throws(() => resolveKwg(inputs({ version: 'path' }), { PATH: '/nonexistent' }),
    /kwg is not on PATH: install kwg in an earlier step/);
  fs.rmSync(dir, { recursive: true, force: true });
});
