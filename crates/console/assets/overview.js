// The overview: nodes with conditions, capacity and usage over time,
// workloads with their health, pods that need attention, and recent
// Warning events — all kept live by watches.

import * as api from './api.js';
import { h, replace, section, dataTable, age, quantity, cores, bytes, link, showError } from './dom.js';
import { sparkline, progress } from './charts.js';

// Usage history from the metrics API (metrics-server's resolution is 15 s,
// so polling it more often shows nothing new; it has no watch).
const HISTORY = 60;
const nodeUsage = new Map();
const podUsage = new Map();
const listeners = new Set();
let metricsTimer = null;
export let metricsState = 'waiting';

function record(map, key, cpu, mem) {
  const arr = map.get(key) || [];
  arr.push({ t: Date.now(), cpu, mem });
  if (arr.length > HISTORY) arr.shift();
  map.set(key, arr);
}

async function scrape() {
  try {
    const [nodes, pods] = await Promise.all([
      api.get('/apis/metrics.k8s.io/v1beta1/nodes'),
      api.get('/apis/metrics.k8s.io/v1beta1/pods').catch(() => ({ items: [] })),
    ]);
    for (const n of nodes.items) record(nodeUsage, n.metadata.name, quantity(n.usage.cpu), quantity(n.usage.memory));
    for (const p of pods.items) {
      let cpu = 0, mem = 0;
      for (const c of p.containers || []) { cpu += quantity(c.usage.cpu); mem += quantity(c.usage.memory); }
      record(podUsage, `${p.metadata.namespace}/${p.metadata.name}`, cpu, mem);
    }
    metricsState = 'ok';
  } catch (e) {
    metricsState = e.code === 403 ? 'forbidden' : 'unavailable';
  }
  for (const f of listeners) f();
}

export function startMetrics() {
  if (metricsTimer) return;
  scrape();
  metricsTimer = setInterval(() => { if (api.token()) scrape(); }, 15000);
}

export function usage(kind, key) { return (kind === 'node' ? nodeUsage : podUsage).get(key) || []; }
export function onMetrics(fn, signal) { listeners.add(fn); signal.addEventListener('abort', () => listeners.delete(fn)); }

// A pod's health at a glance.
export function podHealth(p) {
  const st = p.status || {};
  const cs = [...(st.initContainerStatuses || []), ...(st.containerStatuses || [])];
  const restarts = cs.reduce((n, c) => n + (c.restartCount || 0), 0);
  const ready = (st.conditions || []).some((c) => c.type === 'Ready' && c.status === 'True');
  let reason = st.reason || st.phase || 'Pending';
  for (const c of st.containerStatuses || []) {
    if (c.state && c.state.waiting) { reason = c.state.waiting.reason || 'Waiting'; break; }
    if (c.state && c.state.terminated && st.phase !== 'Succeeded') { reason = c.state.terminated.reason || 'Terminated'; break; }
    if (c.state && c.state.running && !c.ready) { reason = 'Running, not ready (probe failing)'; break; }
  }
  if (p.metadata.deletionTimestamp) reason = 'Terminating';
  const containers = (p.spec.containers || []).length;
  const readyCount = (st.containerStatuses || []).filter((c) => c.ready).length;
  return { ready, reason, restarts, readyText: `${readyCount}/${containers}`, done: st.phase === 'Succeeded' };
}

export function podHref(p) { return `#/pod/${encodeURIComponent(p.metadata.namespace)}/${encodeURIComponent(p.metadata.name)}`; }

function nodeStatus(n) {
  const conds = n.status.conditions || [];
  const ready = conds.find((c) => c.type === 'Ready');
  const out = [ready && ready.status === 'True' ? 'Ready' : 'NotReady'];
  for (const c of conds) if (c.type !== 'Ready' && c.status === 'True') out.push(c.type);
  if (n.spec.unschedulable) out.push('SchedulingDisabled');
  return out.join(',');
}

function selects(selector, labels) {
  if (!selector) return false;
  for (const [k, v] of Object.entries(selector.matchLabels || {})) if ((labels || {})[k] !== v) return false;
  for (const e of selector.matchExpressions || []) {
    const val = labels ? labels[e.key] : undefined;
    if (e.operator === 'In' && !(e.values || []).includes(val)) return false;
    if (e.operator === 'NotIn' && (e.values || []).includes(val)) return false;
    if (e.operator === 'Exists' && val === undefined) return false;
    if (e.operator === 'DoesNotExist' && val !== undefined) return false;
  }
  return true;
}
export { selects };

export async function overview(root, signal, ns) {
  const data = { nodes: [], deployments: [], statefulsets: [], daemonsets: [], pods: [], events: [] };
  const nsPath = ns ? `/namespaces/${encodeURIComponent(ns)}` : '';
  const parts = {
    nodes: h('div'), workloads: h('div'), pods: h('div'), events: h('div'),
  };
  replace(root,
    h('h1', {}, 'Cluster overview', h('span', { class: 'sub' }, ns ? ` — namespace ${ns}` : ' — all namespaces')),
    section('Nodes', parts.nodes),
    section('Workloads', parts.workloads),
    section('Pods needing attention', parts.pods),
    section('Recent warnings', parts.events));

  const renderNodes = () => {
    const podsOn = new Map();
    for (const p of data.pods) if (p.spec.nodeName) podsOn.set(p.spec.nodeName, (podsOn.get(p.spec.nodeName) || 0) + 1);
    const rows = data.nodes.sort((a, b) => a.metadata.name.localeCompare(b.metadata.name)).slice(0, 200).map((n) => {
      const name = n.metadata.name;
      const hist = usage('node', name);
      const cap = n.status.allocatable || n.status.capacity || {};
      const capCpu = quantity(cap.cpu), capMem = quantity(cap.memory);
      const last = hist[hist.length - 1];
      const status = nodeStatus(n);
      return h('tr', { class: status.startsWith('Ready') ? '' : 'bad' },
        h('td', {}, link(`#/r/core/nodes/_/${encodeURIComponent(name)}`, name)),
        h('td', {}, status),
        h('td', {}, last ? `${cores(last.cpu)} / ${cores(capCpu)}` : `– / ${cores(capCpu)}`, ' ',
          sparkline(hist.map((x) => x.cpu), { label: `CPU of ${name}`, max: capCpu, format: cores })),
        h('td', {}, last ? `${bytes(last.mem)} / ${bytes(capMem)}` : `– / ${bytes(capMem)}`, ' ',
          sparkline(hist.map((x) => x.mem), { label: `Memory of ${name}`, max: capMem, format: bytes })),
        h('td', {}, String(podsOn.get(name) || 0)),
        h('td', {}, age(n.metadata.creationTimestamp)));
    });
    const more = data.nodes.length > 200 ? h('p', { class: 'hint' }, `Showing 200 of ${data.nodes.length} nodes; `, link('#/r/core/nodes', 'see all')) : null;
    const note = metricsState === 'ok' ? null : h('p', { class: 'hint' }, `Usage: metrics API ${metricsState}.`);
    replace(parts.nodes, h('p', { class: 'summary' }, `${data.nodes.length} nodes, ${data.nodes.filter((n) => nodeStatus(n).startsWith('Ready')).length} ready`),
      dataTable('Nodes', ['Name', 'Status', 'CPU', 'Memory', 'Pods', 'Age'], rows, { id: 'nodes-table' }), more, note);
  };

  const renderWorkloads = () => {
    const rows = [];
    const add = (kind, group, res, o, desired, ready, updated, available) => {
      const pods = data.pods.filter((p) => p.metadata.namespace === o.metadata.namespace && selects(o.spec.selector, p.metadata.labels));
      const restarts = pods.reduce((n, p) => n + podHealth(p).restarts, 0);
      const failing = pods.filter((p) => !podHealth(p).ready && !podHealth(p).done).length;
      const healthy = ready >= desired && failing === 0;
      rows.push(h('tr', { class: healthy ? '' : 'bad', dataset: { name: o.metadata.name } },
        h('td', {}, kind),
        h('td', {}, o.metadata.namespace),
        h('td', {}, link(`#/r/${group}/${res}/${encodeURIComponent(o.metadata.namespace)}/${encodeURIComponent(o.metadata.name)}`, o.metadata.name)),
        h('td', { class: 'ready-count' }, `${ready}/${desired}`),
        h('td', {}, progress({ desired, updated, ready, available }, `${kind} ${o.metadata.name}`)),
        h('td', {}, String(restarts)),
        h('td', {}, healthy ? 'Healthy' : failing ? `${failing} pod(s) not ready` : 'Progressing')));
    };
    for (const d of data.deployments) {
      const s = d.status || {};
      add('Deployment', 'apps', 'deployments', d, d.spec.replicas ?? 1, s.readyReplicas || 0, s.updatedReplicas || 0, s.availableReplicas || 0);
    }
    for (const d of data.statefulsets) {
      const s = d.status || {};
      add('StatefulSet', 'apps', 'statefulsets', d, d.spec.replicas ?? 1, s.readyReplicas || 0, s.updatedReplicas || 0, s.availableReplicas || 0);
    }
    for (const d of data.daemonsets) {
      const s = d.status || {};
      add('DaemonSet', 'apps', 'daemonsets', d, s.desiredNumberScheduled || 0, s.numberReady || 0, s.updatedNumberScheduled || 0, s.numberAvailable || 0);
    }
    replace(parts.workloads, dataTable('Workloads', ['Kind', 'Namespace', 'Name', 'Ready', 'Progress', 'Restarts', 'Health'], rows, { id: 'workloads-table' }));
  };

  const renderPods = () => {
    const bad = data.pods.filter((p) => { const x = podHealth(p); return (!x.ready && !x.done) || x.restarts > 0; }).slice(0, 100);
    const total = data.pods.length;
    const ready = data.pods.filter((p) => podHealth(p).ready).length;
    replace(parts.pods, h('p', { class: 'summary' }, `${total} pods, ${ready} ready`),
      dataTable('Pods needing attention', ['Namespace', 'Pod', 'Ready', 'Status', 'Restarts', 'Node', 'Age'], bad.map((p) => {
        const x = podHealth(p);
        return h('tr', {}, h('td', {}, p.metadata.namespace), h('td', {}, link(podHref(p), p.metadata.name)),
          h('td', {}, x.readyText), h('td', {}, x.reason), h('td', {}, String(x.restarts)),
          h('td', {}, p.spec.nodeName || ''), h('td', {}, age(p.metadata.creationTimestamp)));
      })));
  };

  const renderEvents = () => {
    const when = (e) => e.lastTimestamp || e.eventTime || e.metadata.creationTimestamp;
    const evs = data.events.filter((e) => e.type === 'Warning').sort((a, b) => Date.parse(when(b)) - Date.parse(when(a))).slice(0, 20);
    replace(parts.events, dataTable('Recent warnings', ['Age', 'Object', 'Reason', 'Message'], evs.map((e) => h('tr', {},
      h('td', {}, age(when(e))), h('td', {}, `${e.involvedObject.kind}/${e.involvedObject.name}`),
      h('td', {}, e.reason || ''), h('td', {}, e.message || '')))));
  };

  const render = { nodes: renderNodes, deployments: renderWorkloads, statefulsets: renderWorkloads, daemonsets: renderWorkloads, pods: () => { renderPods(); renderWorkloads(); renderNodes(); }, events: renderEvents };
  onMetrics(renderNodes, signal);
  const watchers = [
    ['nodes', '/api/v1/nodes'],
    ['deployments', `/apis/apps/v1${nsPath}/deployments`],
    ['statefulsets', `/apis/apps/v1${nsPath}/statefulsets`],
    ['daemonsets', `/apis/apps/v1${nsPath}/daemonsets`],
    ['pods', `/api/v1${nsPath}/pods`],
    ['events', `/api/v1${nsPath}/events`, { fieldSelector: 'type=Warning' }],
  ];
  for (const [key, p, params] of watchers) {
    api.liveList(p, (items) => { data[key] = items; render[key](); }, signal, params).catch((e) => {
      if (signal.aborted) return;
      if (e.code === 403) {
        const target = key === 'nodes' ? parts.nodes : key === 'events' ? parts.events : key === 'pods' ? parts.pods : parts.workloads;
        replace(target, h('p', { class: 'hint' }, `You may not list ${key} here: ${e.message}`));
      } else showError(e);
    });
  }
  for (const f of Object.values(render)) f();
}
