// What main.js and post.js share: the GitHub Actions runner's file commands and kwg itself.
// No dependencies (no @actions/core): the runner passes inputs as INPUT_<NAME> variables and
// takes outputs, environment and state as lines appended to the files it names.
'use strict';
const fs = require('fs');
const { spawnSync } = require('child_process');

function input(name) {
  return (process.env[`INPUT_${name.replace(/ /g, '_').toUpperCase()}`] || '').trim();
}

// `name<<delimiter` form: safe for any value.
function fileCommand(variable, name, value) {
  const file = process.env[variable];
  if (!file) {
    throw new Error(`${variable} is not set: run this as a GitHub Actions step`);
  }
  const delimiter = `kwg_${Math.random().toString(36).slice(2)}`;
  fs.appendFileSync(file, `${name}<<${delimiter}\n${value}\n${delimiter}\n`);
}

// A workflow command line (`::error title=…::message`). The runner reads a command up to the
// line's end and splits its properties at , and :, so the message escapes %, CR and LF, and a
// property value also : and , (the rules of @actions/core's escapeData and escapeProperty).
function escapeData(value) {
  return String(value).replace(/%/g, '%25').replace(/\r/g, '%0D').replace(/\n/g, '%0A');
}

function escapeProperty(value) {
  return escapeData(value).replace(/:/g, '%3A').replace(/,/g, '%2C');
}

function workflowCommand(name, properties, message) {
  const props = Object.entries(properties)
    .map(([key, value]) => `${key}=${escapeProperty(value)}`)
    .join(',');
  return `::${name}${props ? ` ${props}` : ''}::${escapeData(message)}`;
}

// How the action runs kwg. Root, or userspace mode: kwg itself. Else as the runner's own user,
// and `join` gets --tun: kwg then uses the kwg-helper that is running (or installed), else
// starts the one next to kwg through sudo by its absolute path (never by name: sudo's
// secure_path); kwg runs as the user, only the helper as root, and the helper sets the
// tunnel's DNS (systemd-resolved's per-link DNS on GitHub's Ubuntu runners, else the resolver
// file). Returns [command, argv].
function kwgCommand(exe, args, { root, asUser }) {
  if (root || asUser) {
    return [exe, args];
  }
  const tun = args[0] === 'join' && !args.includes('--tun');
  return [exe, tun ? [args[0], '--tun', ...args.slice(1)] : args];
}

// Runs kwg (see kwgCommand; `asUser`: userspace mode); returns { code, stdout }.
function kwg(exe, args, { asUser }) {
  const root = typeof process.getuid === 'function' && process.getuid() === 0;
  const [cmd, argv] = kwgCommand(exe, args, { root, asUser });
  const r = spawnSync(cmd, argv, { stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8' });
  if (r.error) {
    return { code: 1, stdout: '', error: `cannot run ${cmd}: ${r.error.message}` };
  }
  return { code: r.status === null ? 1 : r.status, stdout: r.stdout };
}

// A DNS label of this job leg: ci-<run id>-<attempt>-<job>-<6 hex digits>. The legs of a matrix
// (and jobs of one name in reusable workflows) share the run, attempt and job: the random
// suffix, drawn once by the main step, tells them apart. The job is cut so the suffix stays.
function defaultName(env, suffix = require('crypto').randomBytes(3).toString('hex')) {
  const head = ['ci', env.GITHUB_RUN_ID, env.GITHUB_RUN_ATTEMPT, env.GITHUB_JOB]
    .filter(Boolean)
    .join('-')
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, '-');
  return `${head.slice(0, 63 - suffix.length - 1).replace(/-+$/, '')}-${suffix}`;
}

// Whether the userspace input asks for userspace mode.
function userspace() {
  return ['true', 'yes', '1'].includes(input('userspace').toLowerCase());
}

// The name the post step's `kwg leave --context` takes for the session `joined` (the join's
// result): its alias in `kwg status -o json` (`status`: that object), unique even when two
// kubeconfigs call their contexts alike; else its context; else '' (the only session).
function sessionName(joined, status) {
  const same = ((status && status.sessions) || []).filter((s) => s.peer === joined.peer
    && s.tunnelIp === joined.tunnelIp && s.server === joined.server);
  if (same.length === 1 && same[0].alias) {
    return same[0].alias;
  }
  return joined.context || '';
}

// The variables `kwg exec` sets, for the job's later steps (curl reads the lower-case ones).
function proxyEnv(proxy) {
  const socks = `socks5h://${proxy}`;
  const http = `http://${proxy}`;
  const none = 'localhost,127.0.0.1,::1';
  return {
    ALL_PROXY: socks, all_proxy: socks,
    HTTP_PROXY: http, http_proxy: http,
    HTTPS_PROXY: http, https_proxy: http,
    NO_PROXY: none, no_proxy: none,
  };
}

module.exports = {
  input, fileCommand, kwg, kwgCommand, sessionName, defaultName, userspace, proxyEnv, workflowCommand, escapeData, escapeProperty,
};
