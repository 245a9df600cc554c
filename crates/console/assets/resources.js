// Every kind the server serves: the list of kinds from discovery, a list
// per kind with the server's Table columns (live through a watch), an
// object's page with its YAML, relationships, events and actions, the
// YAML editor (server-side apply, with a dry-run diff first), and create
// from pasted YAML.

import * as api from './api.js';
import { h, replace, section, dataTable, age, link, button, showError, showInfo, flash, attempt, clearAlert } from './dom.js';
import { progress, graph } from './charts.js';
import { podHealth, podHref, selects } from './overview.js';
import { go } from './app.js';

const enc = encodeURIComponent;
const groupSlug = (g) => g || 'core';
export function objectHref(r, ns, name) {
  if (r.group === '' && r.resource === 'pods' && ns) return `#/pod/${enc(ns)}/${enc(name)}`;
  return `#/r/${groupSlug(r.group)}/${r.resource}/${r.namespaced ? enc(ns) : '_'}/${enc(name)}`;
}

async function resourceOr404(group, resource) {
  const r = await api.findResource(group, resource);
  if (!r) throw new api.ApiError({ code: 404, reason: 'NotFound', message: `the server does not serve ${resource}${group ? '.' + group : ''}` });
  return r;
}

export async function kinds(root, signal) {
  const all = (await api.discovery(true)).filter((r) => r.verbs.includes('list'));
  const filter = h('input', { id: 'kind-filter', type: 'search', placeholder: 'Filter kinds' });
  const body = h('div');
  const render = () => {
    const q = filter.value.toLowerCase();
    const rows = all.filter((r) => !q || `${r.kind} ${r.group} ${r.resource} ${r.shortNames.join(' ')}`.toLowerCase().includes(q))
      .map((r) => h('tr', {}, h('td', {}, link(`#/r/${groupSlug(r.group)}/${r.resource}`, r.kind)),
        h('td', {}, r.group || 'core'), h('td', {}, r.version), h('td', {}, r.namespaced ? 'yes' : 'no'),
        h('td', {}, r.shortNames.join(', '))));
    replace(body, dataTable('Kinds', ['Kind', 'Group', 'Version', 'Namespaced', 'Short names'], rows, { id: 'kinds-table' }));
  };
  filter.addEventListener('input', render);
  replace(root, h('h1', {}, 'All kinds'), h('label', { for: 'kind-filter' }, 'Filter '), filter, body);
  render();
}

export async function list(root, signal, group, resource, ns, query) {
  const r = await resourceOr404(group, resource);
  const base = api.path(r, r.namespaced ? ns : '');
  const sel = h('input', { id: 'selector', type: 'search', value: query.get('sel') || '', placeholder: 'app=web,tier!=db' });
  const text = h('input', { id: 'filter', type: 'search', value: query.get('q') || '', placeholder: 'text in any column' });
  const count = h('p', { class: 'summary', 'aria-live': 'polite' });
  const body = h('div');
  let tbl = null;
  const allNs = r.namespaced && !ns;
  const render = () => {
    if (!tbl) return;
    const cols = tbl.columnDefinitions.map((c, i) => ({ ...c, i })).filter((c) => c.priority === 0 || c.priority === undefined);
    const q = text.value.trim().toLowerCase();
    const rows = (tbl.rows || []).filter((row) => !q || row.cells.join(' ').toLowerCase().includes(q)).map((row) => {
      const meta = (row.object && row.object.metadata) || {};
      const cells = cols.map((c) => {
        const v = row.cells[c.i];
        const s = v === null || v === undefined ? '' : (typeof v === 'object' ? JSON.stringify(v) : String(v));
        return c.name === 'Name' ? h('th', { scope: 'row' }, link(objectHref(r, meta.namespace, meta.name || s), s)) : h('td', {}, s);
      });
      return h('tr', { dataset: { name: meta.name || '' } }, allNs ? h('td', {}, meta.namespace || '') : null, cells);
    });
    const headers = [...(allNs ? ['Namespace'] : []), ...cols.map((c) => c.name)];
    replace(count, `${rows.length} ${r.resource}${q ? ` matching “${text.value}”` : ''}`);
    replace(body, dataTable(`${r.kind} list`, headers, rows, { id: 'resource-table' }));
  };
  const params = () => {
    const p = new URLSearchParams({ limit: '1000' });
    if (sel.value.trim()) p.set('labelSelector', sel.value.trim());
    return p;
  };
  const load = async () => {
    tbl = await api.table(`${base}?${params()}`, { signal });
    render();
    return tbl.metadata.resourceVersion;
  };
  let timer = null;
  const reload = () => { clearTimeout(timer); timer = setTimeout(() => load().catch((e) => { if (!signal.aborted) showError(e); }), 250); };
  const apply = (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    if (sel.value.trim()) q.set('sel', sel.value.trim());
    if (text.value.trim()) q.set('q', text.value.trim());
    go(`#/r/${groupSlug(group)}/${resource}${q.toString() ? '?' + q : ''}`);
  };
  text.addEventListener('input', render);
  replace(root,
    h('h1', {}, r.kind, h('span', { class: 'sub' }, r.namespaced ? (ns ? ` in ${ns}` : ' in all namespaces') : '')),
    h('form', { class: 'filters', onsubmit: apply, role: 'search', 'aria-label': `Filter ${r.resource}` },
      h('label', { for: 'selector' }, 'Label selector'), sel,
      h('label', { for: 'filter' }, 'Text'), text,
      h('button', { type: 'submit' }, 'Apply'),
      r.verbs.includes('create') ? link('#/create', 'Create…', { class: 'button' }) : null),
    count, body);
  const rv = await load();
  // Live: any change to the kind re-reads the table (the server renders
  // its columns), a quarter second after a burst of events.
  const watchParams = {};
  if (sel.value.trim()) watchParams.labelSelector = sel.value.trim();
  api.watch(base, { resourceVersion: rv, signal, params: watchParams, onEvent: reload, onExpired: load })
    .catch((e) => { if (!signal.aborted) showError(e); });
}

function stripped(obj, r) {
  const o = JSON.parse(JSON.stringify(obj));
  if (o.metadata) delete o.metadata.managedFields;
  if (r && r.subresources.includes('status')) delete o.status;
  return o;
}

export async function actions(r, obj, signal) {
  const ns = obj.metadata.namespace || '';
  const name = obj.metadata.name;
  const attrs = { group: r.group, resource: r.resource, namespace: ns, name };
  const p = api.path(r, ns, name);
  const [mayPatch, mayDelete, mayScale] = await Promise.all([
    api.can('patch', attrs), api.can('delete', attrs),
    r.subresources.includes('scale') ? api.can('patch', { ...attrs, subresource: 'scale' }) : false,
  ]);
  const bar = h('div', { class: 'actions', role: 'toolbar', 'aria-label': 'Actions' });
  const kind = `${r.group}/${r.resource}`;
  if (mayPatch) bar.append(link(`#/edit/${groupSlug(r.group)}/${r.resource}/${ns ? enc(ns) : '_'}/${enc(name)}`, 'Edit YAML', { class: 'button', id: 'edit' }));
  if (mayScale) {
    const n = h('input', { type: 'number', min: 0, id: 'replicas', value: obj.spec.replicas ?? 1, class: 'narrow' });
    bar.append(h('label', { for: 'replicas' }, 'Replicas'), n, button('Scale', () => attempt(async () => {
      await api.mergePatch(`${p}/scale`, { spec: { replicas: parseInt(n.value, 10) } });
      showInfo(`Scaled ${name} to ${n.value}`);
    }), { id: 'scale' }));
  }
  if (mayPatch && ['apps/deployments', 'apps/statefulsets', 'apps/daemonsets'].includes(kind)) {
    bar.append(button('Restart', () => attempt(async () => {
      await api.mergePatch(p, { spec: { template: { metadata: { annotations: { 'kubectl.kubernetes.io/restartedAt': new Date().toISOString() } } } } });
      showInfo(`Restarting ${name}`);
    }), { id: 'restart' }));
  }
  if (mayPatch && kind === 'apps/deployments') bar.append(button('Undo rollout', () => attempt(() => undo(p, obj)), { id: 'undo' }));
  if (mayPatch && kind === '/nodes') {
    const cordoned = !!obj.spec.unschedulable;
    bar.append(button(cordoned ? 'Uncordon' : 'Cordon', () => attempt(async () => {
      await api.mergePatch(p, { spec: { unschedulable: cordoned ? null : true } });
    }), { id: 'cordon' }));
    bar.append(button('Drain', () => attempt(() => drain(name)), { id: 'drain' }));
  }
  if (kind === '/pods' && !location.hash.startsWith('#/pod/')) bar.append(link(podHref(obj), 'Logs and terminal', { class: 'button' }));
  if (mayDelete) {
    bar.append(button('Delete', () => {
      if (!confirm(`Delete ${r.kind} ${name}?`)) return;
      attempt(async () => {
        await api.request('DELETE', p, { body: { kind: 'DeleteOptions', apiVersion: 'v1', propagationPolicy: 'Background' } });
        flash(`Deleted ${r.kind} ${name}`);
        go(`#/r/${groupSlug(r.group)}/${r.resource}`);
      });
    }, { id: 'delete', class: 'danger' }));
  }
  if (!bar.childElementCount) bar.append(h('span', { class: 'hint' }, 'Read only: your permissions allow no actions here.'));
  void signal;
  return bar;
}

// `kubectl rollout undo`: the previous revision's pod template back into
// the Deployment.
async function undo(p, d) {
  const ns = d.metadata.namespace;
  const rss = (await api.get(`/apis/apps/v1/namespaces/${enc(ns)}/replicasets`)).items
    .filter((rs) => (rs.metadata.ownerReferences || []).some((o) => o.uid === d.metadata.uid))
    .map((rs) => ({ rs, rev: parseInt((rs.metadata.annotations || {})['deployment.kubernetes.io/revision'] || '0', 10) }))
    .sort((a, b) => b.rev - a.rev);
  if (rss.length < 2) throw new api.ApiError({ code: 400, message: `deployment ${d.metadata.name} has no previous revision to roll back to` });
  const tmpl = JSON.parse(JSON.stringify(rss[1].rs.spec.template));
  if (tmpl.metadata && tmpl.metadata.labels) delete tmpl.metadata.labels['pod-template-hash'];
  await api.request('PATCH', p, { body: [{ op: 'replace', path: '/spec/template', value: tmpl }], contentType: 'application/json-patch+json' });
  showInfo(`Rolled ${d.metadata.name} back to revision ${rss[1].rev}`);
}

// `kubectl drain`: cordon, then evict every pod but DaemonSets' and
// mirror pods (evictions respect PodDisruptionBudgets).
async function drain(node) {
  await api.mergePatch(`/api/v1/nodes/${enc(node)}`, { spec: { unschedulable: true } });
  const pods = (await api.get(`/api/v1/pods?${new URLSearchParams({ fieldSelector: `spec.nodeName=${node}` })}`)).items;
  let n = 0;
  for (const pod of pods) {
    const owners = pod.metadata.ownerReferences || [];
    if (owners.some((o) => o.kind === 'DaemonSet') || (pod.metadata.annotations || {})['kubernetes.io/config.mirror']) continue;
    await api.request('POST', `/api/v1/namespaces/${enc(pod.metadata.namespace)}/pods/${enc(pod.metadata.name)}/eviction`, {
      body: { apiVersion: 'policy/v1', kind: 'Eviction', metadata: { name: pod.metadata.name, namespace: pod.metadata.namespace } },
    });
    n++;
  }
  showInfo(`Drained ${node}: cordoned, ${n} pod(s) evicted`);
}

async function relationships(r, obj) {
  const ns = obj.metadata.namespace;
  const kind = `${r.group}/${r.resource}`;
  const podNode = (p) => ({ id: p.metadata.uid, label: p.metadata.name, href: podHref(p), cls: podHealth(p).ready ? 'ok' : 'bad' });
  const nodesOf = (pods) => [...new Set(pods.map((p) => p.spec.nodeName).filter(Boolean))]
    .map((n) => ({ id: `node/${n}`, label: n, href: `#/r/core/nodes/_/${enc(n)}` }));
  const podsIn = async () => (await api.get(`/api/v1/namespaces/${enc(ns)}/pods`)).items;
  if (kind === 'apps/deployments' || kind === 'apps/replicasets' || kind === 'apps/statefulsets' || kind === 'apps/daemonsets') {
    let sets = [obj];
    if (kind === 'apps/deployments') {
      sets = (await api.get(`/apis/apps/v1/namespaces/${enc(ns)}/replicasets`)).items
        .filter((rs) => (rs.metadata.ownerReferences || []).some((o) => o.uid === obj.metadata.uid));
    }
    const setUids = new Set(sets.map((s) => s.metadata.uid));
    const pods = (await podsIn()).filter((p) => (p.metadata.ownerReferences || []).some((o) => setUids.has(o.uid)));
    const cols = [];
    const edges = [];
    if (kind === 'apps/deployments') {
      cols.push({ title: 'Deployment', nodes: [{ id: obj.metadata.uid, label: obj.metadata.name }] });
      cols.push({ title: 'ReplicaSets', nodes: sets.map((s) => ({ id: s.metadata.uid, label: `${s.metadata.name} (${s.status.readyReplicas || 0}/${s.spec.replicas})`, href: `#/r/apps/replicasets/${enc(ns)}/${enc(s.metadata.name)}` })) });
      for (const s of sets) edges.push([obj.metadata.uid, s.metadata.uid]);
    } else {
      cols.push({ title: r.kind, nodes: [{ id: obj.metadata.uid, label: obj.metadata.name }] });
    }
    cols.push({ title: 'Pods', nodes: pods.map(podNode) });
    cols.push({ title: 'Nodes', nodes: nodesOf(pods) });
    for (const p of pods) {
      for (const o of p.metadata.ownerReferences || []) if (setUids.has(o.uid)) edges.push([o.uid, p.metadata.uid]);
      if (p.spec.nodeName) edges.push([p.metadata.uid, `node/${p.spec.nodeName}`]);
    }
    return graph(cols, edges, `${r.kind} ${obj.metadata.name} relationships`);
  }
  if (kind === '/services') {
    const slices = (await api.get(`/apis/discovery.k8s.io/v1/namespaces/${enc(ns)}/endpointslices?${new URLSearchParams({ labelSelector: `kubernetes.io/service-name=${obj.metadata.name}` })}`)).items;
    const all = await podsIn();
    const edges = [];
    const pods = [];
    for (const s of slices) {
      edges.push([obj.metadata.uid, s.metadata.uid]);
      for (const ep of s.endpoints || []) {
        const ref = ep.targetRef;
        const p = ref && all.find((x) => x.metadata.name === ref.name);
        if (p) { if (!pods.includes(p)) pods.push(p); edges.push([s.metadata.uid, p.metadata.uid]); }
      }
    }
    for (const p of all) if (!pods.includes(p) && obj.spec.selector && selects({ matchLabels: obj.spec.selector }, p.metadata.labels)) pods.push(p);
    for (const p of pods) if (p.spec.nodeName) edges.push([p.metadata.uid, `node/${p.spec.nodeName}`]);
    return graph([
      { title: 'Service', nodes: [{ id: obj.metadata.uid, label: obj.metadata.name }] },
      { title: 'EndpointSlices', nodes: slices.map((s) => ({ id: s.metadata.uid, label: `${s.metadata.name} (${(s.endpoints || []).length})`, href: `#/r/discovery.k8s.io/endpointslices/${enc(ns)}/${enc(s.metadata.name)}` })) },
      { title: 'Pods', nodes: pods.map(podNode) },
      { title: 'Nodes', nodes: nodesOf(pods) },
    ], edges, `Service ${obj.metadata.name} relationships`);
  }
  return null;
}

export async function eventsFor(obj, signal, target) {
  const ns = obj.metadata.namespace;
  const params = { fieldSelector: `involvedObject.name=${obj.metadata.name},involvedObject.uid=${obj.metadata.uid}` };
  const p = ns ? `/api/v1/namespaces/${enc(ns)}/events` : '/api/v1/events';
  const when = (e) => e.lastTimestamp || e.eventTime || e.metadata.creationTimestamp;
  await api.liveList(p, (items) => {
    items.sort((a, b) => Date.parse(when(b)) - Date.parse(when(a)));
    replace(target, dataTable('Events', ['Age', 'Type', 'Reason', 'Message', 'Count'], items.slice(0, 50).map((e) => h('tr', { class: e.type === 'Warning' ? 'bad' : '' },
      h('td', {}, age(when(e))), h('td', {}, e.type), h('td', {}, e.reason || ''), h('td', {}, e.message || ''), h('td', {}, String(e.count || 1))))));
  }, signal, params).catch((e) => { if (!signal.aborted) replace(target, h('p', { class: 'hint' }, `Events: ${e.message}`)); });
}

export async function detail(root, signal, group, resource, ns, name) {
  const r = await resourceOr404(group, resource);
  const p = api.path(r, ns, name);
  let obj = await api.get(p, { signal });
  const head = h('div'), bar = h('div'), prog = h('div'), rel = h('div'), yaml = h('pre', { class: 'yaml', tabindex: 0, 'aria-label': 'YAML' });
  const events = h('div');
  replace(root,
    h('h1', {}, `${r.kind} `, h('span', { class: 'name' }, name)),
    head, bar, prog,
    section('Relationships', rel),
    section('Events', events),
    section('YAML', yaml));
  let actionsKey = null;
  const render = async () => {
    const m = obj.metadata;
    replace(head, h('dl', { class: 'meta' },
      m.namespace ? [h('dt', {}, 'Namespace'), h('dd', {}, m.namespace)] : null,
      h('dt', {}, 'Created'), h('dd', {}, `${m.creationTimestamp} (${age(m.creationTimestamp)} ago)`),
      h('dt', {}, 'Labels'), h('dd', {}, Object.entries(m.labels || {}).map(([k, v]) => h('span', { class: 'label' }, `${k}=${v}`)))));
    // The toolbar is redrawn only when what it offers changes, so a
    // status update does not wipe what the user is typing into it.
    const key = JSON.stringify([obj.spec && obj.spec.unschedulable]);
    if (key !== actionsKey) { actionsKey = key; replace(bar, await actions(r, obj, signal)); }
    const s = obj.status || {};
    if (r.group === 'apps' && ['deployments', 'statefulsets', 'replicasets'].includes(r.resource)) {
      const desired = obj.spec.replicas ?? 1;
      replace(prog, h('p', { class: 'summary' }, `${s.readyReplicas || 0}/${desired} ready, ${s.updatedReplicas ?? s.fullyLabeledReplicas ?? 0} updated`),
        progress({ desired, updated: s.updatedReplicas ?? s.fullyLabeledReplicas ?? 0, ready: s.readyReplicas || 0, available: s.availableReplicas || 0 }, `${r.kind} ${name}`));
    }
    const g = await relationships(r, obj).catch(() => null);
    replace(rel, g || h('p', { class: 'hint' }, 'No related objects drawn for this kind.'));
    replace(yaml, await api.jsonToYaml(stripped(obj)));
  };
  await render();
  eventsFor(obj, signal, events);
  // Live: this object (and, for workloads, its pods) as they change.
  let timer = null;
  const again = () => { clearTimeout(timer); timer = setTimeout(() => render().catch((e) => { if (!signal.aborted) showError(e); }), 200); };
  const collection = api.path(r, ns);
  api.watch(collection, {
    resourceVersion: obj.metadata.resourceVersion, signal, params: { fieldSelector: `metadata.name=${name}` },
    onEvent: (ev) => {
      if (ev.type === 'DELETED') { replace(bar, h('p', { class: 'hint' }, `${r.kind} ${name} was deleted.`)); return; }
      obj = ev.object; again();
    },
    onExpired: async () => { obj = await api.get(p, { signal }); again(); },
  }).catch(() => {});
  if (ns && (r.group === 'apps' || r.resource === 'services')) {
    api.watch(`/api/v1/namespaces/${enc(ns)}/pods`, { signal, onEvent: again }).catch(() => {});
  }
}

// A line diff (longest common subsequence), enough for one object's YAML.
export function diffLines(a, b) {
  const x = a.split('\n'), y = b.split('\n');
  if (x.length * y.length > 4e6) return [...x.map((l) => ['-', l]), ...y.map((l) => ['+', l])];
  const n = x.length, m = y.length;
  const dp = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--) dp[i][j] = x[i] === y[j] ? dp[i + 1][j + 1] + 1 : Math.max(dp[i + 1][j], dp[i][j + 1]);
  const out = [];
  let i = 0, j = 0;
  while (i < n && j < m) {
    if (x[i] === y[j]) { out.push([' ', x[i]]); i++; j++; } else if (dp[i + 1][j] >= dp[i][j + 1]) out.push(['-', x[i++]]); else out.push(['+', y[j++]]);
  }
  while (i < n) out.push(['-', x[i++]]);
  while (j < m) out.push(['+', y[j++]]);
  return out;
}

function renderDiff(lines) {
  const changed = lines.filter(([t]) => t !== ' ').length;
  if (!changed) return h('p', { class: 'summary' }, 'No changes.');
  return h('pre', { class: 'diff', tabindex: 0, 'aria-label': `Changes: ${changed} line(s)` },
    lines.map(([t, l]) => h('span', { class: t === '+' ? 'add' : t === '-' ? 'del' : 'same' }, `${t} ${l}\n`)));
}

export async function edit(root, signal, group, resource, ns, name) {
  const r = await resourceOr404(group, resource);
  const p = api.path(r, ns, name);
  const obj = await api.get(p, { signal });
  const original = await api.jsonToYaml(stripped(obj, r));
  const area = h('textarea', { id: 'yaml-editor', rows: 30, spellcheck: 'false', class: 'code' });
  area.value = original;
  const diff = h('div', { 'aria-live': 'polite' });
  const review = async () => {
    const result = await api.apply(p, area.value, { dryRun: true });
    replace(diff, h('h2', {}, 'Changes the server would make'), renderDiff(diffLines(original, await api.jsonToYaml(stripped(result, r)))));
  };
  const save = async () => {
    await api.apply(p, area.value);
    flash(`Saved ${r.kind} ${name}`);
    go(objectHref(r, ns, name));
  };
  replace(root,
    h('h1', {}, `Edit ${r.kind} `, h('span', { class: 'name' }, name)),
    h('p', { class: 'hint' }, 'Saved with server-side apply as field manager r8s-console; the resourceVersion below makes a concurrent change a conflict rather than lost.'),
    h('label', { for: 'yaml-editor' }, `YAML of ${r.kind} ${name}`), area,
    h('div', { class: 'actions' },
      button('Review changes', () => attempt(review), { id: 'review' }),
      button('Save', () => attempt(save), { id: 'save', class: 'primary' }),
      link(objectHref(r, ns, name), 'Cancel', { class: 'button' })),
    diff);
  clearAlert();
}

export async function create(root, signal, ns) {
  const area = h('textarea', { id: 'create-yaml', rows: 24, spellcheck: 'false', class: 'code', placeholder: 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: example\ndata:\n  key: value' });
  const out = h('div', { 'aria-live': 'polite' });
  const run = async (dryRun) => {
    const docs = await api.yamlToJson(area.value);
    if (!docs.length) throw new api.ApiError({ code: 400, message: 'nothing to create: the YAML has no documents' });
    const results = [];
    for (const doc of docs) {
      if (!doc.apiVersion || !doc.kind) throw new api.ApiError({ code: 400, message: 'every document needs apiVersion and kind' });
      const r = await api.resourceForKind(doc.apiVersion, doc.kind);
      if (!r) throw new api.ApiError({ code: 404, message: `the server has no kind ${doc.kind} in ${doc.apiVersion}` });
      const m = doc.metadata || {};
      const target = r.namespaced ? (m.namespace || ns || 'default') : '';
      let made;
      if (m.name) {
        made = await api.apply(api.path(r, target, m.name), JSON.stringify(doc), { dryRun, force: false });
      } else {
        const q = dryRun ? '?dryRun=All' : '';
        made = await api.request('POST', `${api.path(r, target)}${q}`, { body: doc });
      }
      results.push(h('li', {}, link(objectHref(r, made.metadata.namespace, made.metadata.name), `${r.kind} ${made.metadata.namespace ? made.metadata.namespace + '/' : ''}${made.metadata.name}`),
        dryRun ? ' would be applied (dry run)' : ' applied'));
    }
    replace(out, h('ul', { class: 'results' }, results));
  };
  replace(root, h('h1', {}, 'Create from YAML'),
    h('p', { class: 'hint' }, `Each document is applied with server-side apply (field manager r8s-console); namespaced objects without a namespace go to ${ns || 'default'}.`),
    h('label', { for: 'create-yaml' }, 'YAML (one or more documents)'), area,
    h('div', { class: 'actions' },
      button('Dry run', () => attempt(() => run(true)), { id: 'dry-run' }),
      button('Create', () => attempt(() => run(false)), { id: 'create', class: 'primary' })),
    out);
}
