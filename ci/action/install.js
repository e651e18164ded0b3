// Which kwg the action runs: the `kwg` input when given; kwg on PATH with `version: path`;
// else the release asset for the runner's architecture (kwg_VERSION_linux_ARCH.tar.gz, the
// `version` input, default the action's own release), its SHA-256 checked against the
// release's SHA256SUMS, unpacked into the runner's tool cache and reused from there.
// Always an absolute path (sudo's PATH is not the job's). No dependencies: node's fetch.
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { spawnSync } = require('child_process');

// node's process.arch to the release's architecture names (Debian's).
const ARCH = { x64: 'amd64', arm64: 'arm64' };

class InstallError extends Error {}

// The action's own release: the workspace version of the checkout the action runs from.
function actionVersion(root = path.join(__dirname, '..', '..')) {
  const toml = fs.readFileSync(path.join(root, 'Cargo.toml'), 'utf8');
  const m = toml.match(/^version = "([^"]+)"/m);
  if (!m) {
    throw new InstallError('the action\'s Cargo.toml names no version: set the version input');
  }
  return m[1];
}

function assetName(version, arch) {
  return `kwg_${version}_linux_${arch}.tar.gz`;
}

// The hex digest sha256sum wrote for `name` in a SHA256SUMS file (text or binary mode).
function expectedSum(sums, name) {
  for (const line of sums.split('\n')) {
    const m = line.match(/^([0-9a-f]{64}) [ *](.+)$/);
    if (m && m[2] === name) {
      return m[1];
    }
  }
  return null;
}

async function download(url) {
  let r;
  try {
    r = await fetch(url);
  } catch (e) {
    throw new InstallError(`cannot download ${url}: ${e.cause ? e.cause.message : e.message} (to use a kwg installed in an earlier step instead, set the action's version input to path)`);
  }
  if (!r.ok) {
    throw new InstallError(`cannot download ${url}: HTTP ${r.status} (is v${url.split('/v').pop().split('/')[0]} released, with this asset? To use a kwg installed in an earlier step instead, set the action's version input to path)`);
  }
  return Buffer.from(await r.arrayBuffer());
}

// Installs kwg `version` for `platform`/`arch` (node's names) from `baseUrl`/vVERSION/ into
// `toolCache`/kwg/VERSION/ARCH (the @actions/tool-cache layout, with its ARCH.complete marker);
// returns { exe, cached }.
async function install({ version, platform, arch, baseUrl, toolCache }) {
  if (platform !== 'linux') {
    throw new InstallError(`kwg releases are built for Linux only and this runner is ${platform}: run the job on a Linux runner, or set the kwg input to a kwg built for it`);
  }
  const a = ARCH[arch];
  if (!a) {
    throw new InstallError(`kwg releases are built for amd64 and arm64 and this runner is ${arch}: set the kwg input to a kwg built for it`);
  }
  const dir = path.join(toolCache, 'kwg', version, a);
  const exe = path.join(dir, 'kwg');
  const marker = `${dir}.complete`;
  if (fs.existsSync(marker) && fs.existsSync(exe)) {
    return { exe, cached: true };
  }
  const name = assetName(version, a);
  const base = `${baseUrl.replace(/\/+$/, '')}/v${version}`;
  const sums = (await download(`${base}/SHA256SUMS`)).toString('utf8');
  const want = expectedSum(sums, name);
  if (!want) {
    throw new InstallError(`the SHA256SUMS of v${version} has no line for ${name}, so it was not installed: check the version input`);
  }
  const body = await download(`${base}/${name}`);
  const got = crypto.createHash('sha256').update(body).digest('hex');
  if (got !== want) {
    throw new InstallError(`the SHA-256 of ${name} is ${got}, not ${want} as the SHA256SUMS of v${version} says, so it was not installed: the download is corrupt or was changed`);
  }
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kwg-install-'));
  try {
    const tgz = path.join(tmp, name);
    fs.writeFileSync(tgz, body);
    fs.rmSync(dir, { recursive: true, force: true });
    fs.mkdirSync(dir, { recursive: true });
    const tar = spawnSync('tar', ['-xzf', tgz, '-C', dir, '--strip-components=1'], { encoding: 'utf8' });
    if (tar.status !== 0 || !fs.existsSync(exe)) {
      throw new InstallError(`${name} did not unpack to a kwg executable: ${(tar.stderr || '').trim() || 'no kwg in it'}`);
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  fs.writeFileSync(marker, '');
  return { exe, cached: false };
}

// `name` as an absolute path through PATH (what sudo is given), or null.
function which(name, envPath = process.env.PATH || '') {
  if (name.includes('/')) {
    return path.resolve(name);
  }
  for (const d of envPath.split(':').filter(Boolean)) {
    const p = path.join(d, name);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return path.resolve(p);
    } catch {
      // next
    }
  }
  return null;
}

// What the inputs ask for (`input` reads INPUT_<NAME>); installs in a child node process so the
// steps stay synchronous. Returns { exe, note } or throws InstallError.
function resolveKwg(input, env = process.env) {
  const given = input('kwg');
  const version = (input('version') || '').replace(/^v/, '') || actionVersion();
  if (given || version === 'path') {
    const exe = which(given || 'kwg', env.PATH);
    if (!exe) {
      throw new InstallError(`${given || 'kwg'} is not on PATH: install kwg in an earlier step, or leave the version input unset so the action downloads its release`);
    }
    return { exe, note: `kwg: ${exe}` };
  }
  const repo = env.GITHUB_ACTION_REPOSITORY || env.GITHUB_REPOSITORY || '';
  const baseUrl = input('release-url') || `${env.GITHUB_SERVER_URL || 'https://github.com'}/${repo}/releases/download`;
  const toolCache = env.RUNNER_TOOL_CACHE || path.join(os.tmpdir(), 'kwg-tool-cache');
  const args = { version, platform: process.platform, arch: process.arch, baseUrl, toolCache };
  const r = spawnSync(process.execPath, [__filename, JSON.stringify(args)], { encoding: 'utf8' });
  let out;
  try {
    out = JSON.parse(r.stdout.trim().split('\n').pop());
  } catch {
    throw new InstallError(`installing kwg ${version} failed: ${(r.stderr || r.stdout || '').trim()}`);
  }
  if (out.error) {
    throw new InstallError(out.error);
  }
  return {
    exe: out.exe,
    note: `kwg ${version} (${ARCH[process.arch]})${out.cached ? ' from the tool cache' : ` downloaded, SHA-256 verified`}: ${out.exe}`,
  };
}

if (require.main === module) {
  install(JSON.parse(process.argv[2]))
    .then((r) => console.log(JSON.stringify(r)))
    .catch((e) => {
      const error = e instanceof InstallError ? e.message : `installing kwg failed: ${e.message}`;
      console.log(JSON.stringify({ error }));
      process.exit(1);
    });
}

module.exports = {
  ARCH, InstallError, actionVersion, assetName, expectedSum, install, resolveKwg, which,
};
