// The action's post step (post-if: always()): kwg leave, even when the job failed or was
// cancelled, then removes the kubeconfig the main step wrote. Without it the peer stays until
// its lease (the ttl input) runs out and the gateway removes it.
'use strict';
const fs = require('fs');
const path = require('path');
const { input, kwg, workflowCommand } = require('./runner');

// The main step's kwg (an absolute path, maybe the downloaded release).
const exe = process.env.STATE_kwg || input('kwg') || 'kwg';
// This use of the action's session only: with two (two clusters), a leave without --context
// would ask which.
const args = ['leave', '-o', 'json'];
if (process.env.STATE_context) {
  args.push('--context', process.env.STATE_context);
}
const r = kwg(exe, args, {
  asUser: process.env.STATE_userspace === 'true',
});
console.log(r.stdout.trim());
const kubeconfig = process.env.STATE_kubeconfig;
if (kubeconfig) {
  fs.rmSync(path.dirname(kubeconfig), { recursive: true, force: true });
}
// A failed leave is a warning, not a failed step: the job's result is its own, and the peer
// goes when its lease ends.
if (r.code !== 0) {
  const why = r.error || 'see the log above';
  console.log(workflowCommand('warning', { title: 'kwg leave failed' },
    `the peer is removed by the gateway when its lease ends; ${why}`));
}
process.exit(0);
