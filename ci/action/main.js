// The action's main step: kwg join -o json with the inputs; outputs tunnel-ip and status.
// On failure: one ::error:: line with kwg's message, and kwg's exit code (docs/ci.md).
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const {
  input, fileCommand, kwg, defaultName, userspace, proxyEnv, workflowCommand,
  sessionName,
} = require('./runner');
const { resolveKwg } = require('./install');

const dir = fs.mkdtempSync(path.join(process.env.RUNNER_TEMP || os.tmpdir(), 'kwg-'));
const kubeconfig = path.join(dir, 'kubeconfig');
fs.writeFileSync(kubeconfig, `${input('kubeconfig')}\n`, { mode: 0o600 });
// The post step removes the kubeconfig and leaves, whatever happens below.
fileCommand('GITHUB_STATE', 'kubeconfig', kubeconfig);

// The kwg to run, downloaded when the inputs ask for a release (install.js): an absolute path,
// which the post step reuses and later steps find on PATH.
let exe;
try {
  const found = resolveKwg(input);
  exe = found.exe;
  console.log(found.note);
} catch (e) {
  console.log(workflowCommand('error', { title: 'kwg install failed' }, e.message));
  process.exit(1);
}
fileCommand('GITHUB_STATE', 'kwg', exe);
if (process.env.GITHUB_PATH) {
  fs.appendFileSync(process.env.GITHUB_PATH, `${path.dirname(exe)}\n`);
}
const args = ['join', '-o', 'json', '--kubeconfig', kubeconfig];
args.push('--name', input('name') || defaultName(process.env));
args.push('--ttl', input('ttl') || '10m', '--timeout', input('timeout') || '60s');
if (input('namespace')) {
  args.push('--namespace', input('namespace'));
}
for (const target of input('wait-for').split(/[\s,]+/).filter(Boolean)) {
  args.push('--wait-for', target);
}
const asUser = userspace();
if (asUser) {
  args.push('--userspace');
}
fileCommand('GITHUB_STATE', 'userspace', String(asUser));
const r = kwg(exe, args, { asUser });
let result;
try {
  result = JSON.parse(r.stdout.trim().split('\n').pop() || '{}');
} catch (e) {
  result = { connected: false, message: r.error || `kwg printed no JSON: ${r.stdout}` };
}
if (r.code !== 0 || !result.connected) {
  const step = result.step ? ` (${result.step})` : '';
  const message = result.message || r.error || 'see the log above';
  console.log(workflowCommand('error', { title: `kwg join failed${step}` }, message));
  process.exit(r.code || 1);
}
fileCommand('GITHUB_STATE', 'joined', 'true');
// The post step leaves this session alone (--context): another use of the action in the job
// may have joined another cluster.
let status = {};
try {
  status = JSON.parse(kwg(exe, ['status', '-o', 'json'], { asUser }).stdout || '{}');
} catch (e) {
  // Then the join's context names it.
}
fileCommand('GITHUB_STATE', 'context', sessionName(result, status));
fileCommand('GITHUB_OUTPUT', 'tunnel-ip', result.tunnelIp || '');
fileCommand('GITHUB_OUTPUT', 'status', JSON.stringify(result));
fileCommand('GITHUB_ENV', 'KWG_TUNNEL_IP', result.tunnelIp || '');
if (result.proxy) {
  fileCommand('GITHUB_OUTPUT', 'proxy', result.proxy);
  for (const [name, value] of Object.entries(proxyEnv(result.proxy))) {
    fileCommand('GITHUB_ENV', name, value);
  }
}
console.log(`Joined ${result.server} as ${result.tunnelIp} (namespace ${result.namespace})`);
