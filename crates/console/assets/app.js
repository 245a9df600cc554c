// The console's shell: sign-in, navigation, the namespace filter, and the
// router that mounts one view at a time. Each view gets an AbortSignal
// that ends its watches when the user navigates away.

import * as api from './api.js';
import { h, replace, showError, clearAlert, link } from './dom.js';
import { overview, startMetrics } from './overview.js';
import { kinds, list, detail, edit, create } from './resources.js';
import { podPage } from './pod.js';

const main = () => document.getElementById('main');
let current = null; // the mounted view's AbortController

export function namespace() { return sessionStorage.getItem('r8s.console.ns') ?? 'default'; }
function setNamespace(ns) { sessionStorage.setItem('r8s.console.ns', ns); }

export function go(hash) { if (location.hash === hash) route(); else location.hash = hash; }

function signinView(root, signal, message) {
  const tokenInput = h('textarea', { id: 'token', rows: 3, autocomplete: 'off', spellcheck: 'false' });
  const kcInput = h('textarea', { id: 'kubeconfig', rows: 8, autocomplete: 'off', spellcheck: 'false' });
  const file = h('input', { type: 'file', id: 'kubeconfig-file', accept: '.yaml,.yml,.conf,*' });
  file.addEventListener('change', async () => { if (file.files[0]) kcInput.value = await file.files[0].text(); });
  const submit = async (ev) => {
    ev.preventDefault();
    const body = tokenInput.value.trim() ? { token: tokenInput.value.trim() } : { kubeconfig: kcInput.value };
    await signIn(body);
  };
  replace(root, h('form', { class: 'signin', onsubmit: submit, 'aria-labelledby': 'signin-title' },
    h('h1', { id: 'signin-title' }, 'Sign in to r8s'),
    message ? h('p', { class: 'hint' }, message) : null,
    h('p', {}, 'Use the one-time link r8s server printed, a bearer token (e.g. ',
      h('code', {}, 'kubectl create token NAME'), '), or a kubeconfig with embedded credentials.'),
    h('label', { for: 'token' }, 'Bearer token'), tokenInput,
    h('label', { for: 'kubeconfig' }, 'or kubeconfig'), kcInput,
    h('label', { for: 'kubeconfig-file' }, 'or kubeconfig file'), file,
    h('div', {}, h('button', { type: 'submit', id: 'signin-submit' }, 'Sign in'))));
  tokenInput.focus();
}

async function signIn(body) {
  try {
    const r = await api.request('POST', '/ui/signin', { body, onUnauthorized: false });
    api.setToken(r.token);
    await api.whoami(); // a token the server does not accept fails here
    clearAlert();
    await shell();
    go('#/');
  } catch (e) {
    api.clearToken();
    showError(e);
  }
}

async function signOut() {
  try { await api.request('POST', '/ui/signout', { onUnauthorized: false }); } catch (_) { /* gone anyway */ }
  api.clearToken();
  replace(document.getElementById('who'));
  replace(document.getElementById('nav'));
  go('#/signin');
}

let shellReady = false;
async function shell() {
  const user = await api.whoami();
  replace(document.getElementById('who'), h('span', { title: (user.groups || []).join(', ') }, `Signed in as ${user.username}`));
  const items = [
    ['#/', 'Overview'], ['#/r/apps/deployments', 'Deployments'], ['#/r/core/pods', 'Pods'],
    ['#/r/core/services', 'Services'], ['#/r/core/configmaps', 'ConfigMaps'], ['#/r/core/nodes', 'Nodes'],
    ['#/r/core/events', 'Events'], ['#/kinds', 'All kinds'], ['#/create', 'Create'],
  ];
  replace(document.getElementById('nav'), h('ul', {}, items.map(([href, text]) => h('li', {}, link(href, text)))));
  const ns = document.getElementById('ns');
  ns.value = namespace();
  if (!shellReady) {
    ns.addEventListener('change', () => { setNamespace(ns.value.trim()); route(); });
    document.getElementById('signout').addEventListener('click', signOut);
    shellReady = true;
  }
  document.getElementById('signout').hidden = false;
  // Namespaces to choose from, if the user may list them.
  api.get('/api/v1/namespaces').then((l) => {
    replace(document.getElementById('ns-list'), l.items.map((n) => h('option', { value: n.metadata.name })));
  }, () => {});
  startMetrics();
}

function parse(hash) {
  const [p, query] = hash.replace(/^#/, '').split('?');
  return { parts: p.split('/').filter(Boolean).map(decodeURIComponent), query: new URLSearchParams(query || '') };
}

async function route() {
  if (current) current.abort();
  current = new AbortController();
  const { signal } = current;
  const root = main();
  clearAlert();
  const hash = location.hash || '#/';
  if (hash.startsWith('#signin=')) {
    const code = hash.slice('#signin='.length);
    history.replaceState(null, '', location.pathname); // the code is spent either way
    return signIn({ code });
  }
  if (!api.token() || hash === '#/signin') return signinView(root, signal);
  const { parts, query } = parse(hash);
  const group = (g) => (g === 'core' ? '' : g);
  try {
    replace(root, h('p', { class: 'loading' }, 'Loading…'));
    if (parts.length === 0) await overview(root, signal, namespace());
    else if (parts[0] === 'kinds') await kinds(root, signal);
    else if (parts[0] === 'create') await create(root, signal, namespace());
    else if (parts[0] === 'pod') await podPage(root, signal, parts[1], parts[2]);
    else if (parts[0] === 'r' && parts.length === 3) await list(root, signal, group(parts[1]), parts[2], namespace(), query);
    else if (parts[0] === 'r' && parts.length === 5) await detail(root, signal, group(parts[1]), parts[2], parts[3] === '_' ? '' : parts[3], parts[4]);
    else if (parts[0] === 'edit' && parts.length === 5) await edit(root, signal, group(parts[1]), parts[2], parts[3] === '_' ? '' : parts[3], parts[4]);
    else replace(root, h('h1', {}, 'Not found'), h('p', {}, `Nothing here: ${hash}`));
  } catch (e) {
    if (signal.aborted) return;
    replace(root, h('h1', {}, 'Could not load this page'));
    showError(e);
  }
  // Focus the new page's heading, so keyboard and screen reader users
  // start at the top of what changed.
  const heading = root.querySelector('h1');
  if (heading && !signal.aborted) { heading.setAttribute('tabindex', '-1'); heading.focus({ preventScroll: true }); }
}

window.addEventListener('r8s-unauthorized', () => {
  if (!api.token()) return;
  api.clearToken();
  signinView(main(), new AbortController().signal, 'Your session ended; sign in again.');
});
window.addEventListener('hashchange', route);
// Failures nothing else caught, kept for the browser tests' reports.
window.__errors = [];
window.addEventListener('error', (e) => window.__errors.push(String(e.message)));
window.addEventListener('unhandledrejection', (e) => window.__errors.push(String(e.reason && e.reason.message ? e.reason.message : e.reason)));

// A module runs after the document is parsed: start now.
(async () => {
  if (api.token()) {
    try { await shell(); } catch (e) { api.clearToken(); }
  }
  route();
})();
