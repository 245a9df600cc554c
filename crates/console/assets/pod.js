// A pod's page: containers (state, last termination, restarts, usage),
// conditions, events, streaming logs, and a terminal (exec with a TTY
// over the WebSocket protocol kubectl uses).

import * as api from './api.js';
import { h, replace, section, dataTable, age, link, button, showError, cores, bytes } from './dom.js';
import { actions, eventsFor } from './resources.js';
import { usage, onMetrics } from './overview.js';
import { sparkline } from './charts.js';
import { Terminal } from './terminal.js';

const enc = encodeURIComponent;

function state(s) {
  if (!s) return '';
  if (s.running) return `Running since ${s.running.startedAt} (${age(s.running.startedAt)})`;
  if (s.waiting) return `Waiting: ${s.waiting.reason || ''}${s.waiting.message ? ' — ' + s.waiting.message : ''}`;
  if (s.terminated) return `Terminated: ${s.terminated.reason || ''} (exit ${s.terminated.exitCode})`;
  return '';
}

export async function podPage(root, signal, ns, name) {
  const r = await api.findResource('', 'pods');
  const p = api.path(r, ns, name);
  let pod = await api.get(p, { signal });
  const head = h('div'), bar = h('div'), containers = h('div'), conditions = h('div'), events = h('div'), use = h('div');
  const names = [...(pod.spec.initContainers || []), ...(pod.spec.containers || [])].map((c) => c.name);
  const appNames = (pod.spec.containers || []).map((c) => c.name);
  const select = (id) => h('select', { id }, appNames.concat(names.filter((n) => !appNames.includes(n))).map((n) => h('option', { value: n }, n)));

  // Logs.
  const logContainer = select('log-container');
  const follow = h('input', { type: 'checkbox', id: 'log-follow', checked: true });
  const previous = h('input', { type: 'checkbox', id: 'log-previous' });
  const search = h('input', { type: 'search', id: 'log-search', placeholder: 'Show lines containing…' });
  const out = h('pre', { id: 'logs', class: 'logs', tabindex: 0, role: 'log', 'aria-label': 'Log lines' });
  const status = h('p', { class: 'hint', 'aria-live': 'polite' });
  let lines = [];
  let logAbort = null;
  const renderLogs = () => {
    const q = search.value;
    const shown = q ? lines.filter((l) => l.includes(q)) : lines;
    out.textContent = shown.join('\n');
    out.scrollTop = out.scrollHeight;
  };
  const streamLogs = async () => {
    if (logAbort) logAbort.abort();
    logAbort = new AbortController();
    const mine = logAbort.signal;
    signal.addEventListener('abort', () => logAbort && logAbort.abort());
    lines = [];
    renderLogs();
    const q = new URLSearchParams({ container: logContainer.value, tailLines: '1000' });
    if (follow.checked && !previous.checked) q.set('follow', 'true');
    if (previous.checked) q.set('previous', 'true');
    replace(status, follow.checked && !previous.checked ? 'Following new lines…' : 'Loaded.');
    try {
      const resp = await api.request('GET', `${p}/log?${q}`, { raw: true, signal: mine, accept: '*/*' });
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let partial = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        const parts = (partial + value).split('\n');
        partial = parts.pop();
        lines.push(...parts);
        if (lines.length > 5000) lines.splice(0, lines.length - 5000);
        renderLogs();
      }
      if (partial) { lines.push(partial); renderLogs(); }
      if (!mine.aborted) replace(status, 'The log stream ended.');
    } catch (e) {
      if (!mine.aborted) { replace(status, ''); showError(e); }
    }
  };
  for (const el of [logContainer, follow, previous]) el.addEventListener('change', streamLogs);
  search.addEventListener('input', renderLogs);

  // Terminal.
  const termContainer = select('term-container');
  const command = h('input', { id: 'term-command', value: 'sh', class: 'narrow' });
  const termHost = h('div');
  const termStatus = h('p', { class: 'hint', 'aria-live': 'polite' });
  let ws = null;
  const connect = () => {
    if (ws) ws.close();
    const term = new Terminal({ label: `Terminal in ${name}/${termContainer.value}`, onData: (s) => {
      if (ws && ws.readyState === 1) ws.send(new Uint8Array([0, ...new TextEncoder().encode(s)]));
    } });
    replace(termHost, term.el);
    const q = new URLSearchParams({ container: termContainer.value, stdin: 'true', stdout: 'true', stderr: 'true', tty: 'true' });
    for (const part of command.value.trim().split(/\s+/).filter(Boolean)) q.append('command', part);
    const b64 = btoa(api.token()).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
    ws = new WebSocket(`wss://${location.host}${p}/exec?${q}`, ['v5.channel.k8s.io', 'v4.channel.k8s.io', `base64url.bearer.authorization.k8s.io.${b64}`]);
    ws.binaryType = 'arraybuffer';
    const decoder = new TextDecoder();
    ws.onopen = () => {
      replace(termStatus, `Connected to ${termContainer.value} (${ws.protocol}).`);
      const size = JSON.stringify({ Width: term.cols, Height: term.rows });
      ws.send(new Uint8Array([4, ...new TextEncoder().encode(size)]));
      term.el.focus();
    };
    ws.onmessage = (m) => {
      const data = new Uint8Array(m.data);
      if (!data.length) return;
      const ch = data[0];
      const body = data.subarray(1);
      if (ch === 1 || ch === 2) term.write(decoder.decode(body, { stream: true }));
      else if (ch === 3) {
        try {
          const s = JSON.parse(new TextDecoder().decode(body));
          replace(termStatus, s.status === 'Success' ? 'The command exited.' : `The command ended: ${s.message}`);
        } catch (_) { /* not a status */ }
      }
    };
    ws.onerror = () => replace(termStatus, 'The connection failed (is the pod running, and may you exec into it?).');
    ws.onclose = () => { term.write('\r\n[disconnected]\r\n'); ws = null; };
    signal.addEventListener('abort', () => ws && ws.close());
  };

  const mayExec = await api.can('create', { resource: 'pods', subresource: 'exec', namespace: ns, name });
  replace(root,
    h('h1', {}, 'Pod ', h('span', { class: 'name' }, name)),
    head, bar,
    section('Containers', containers, use),
    section('Conditions', conditions),
    section('Events', events),
    section('Logs',
      h('div', { class: 'filters' },
        h('label', { for: 'log-container' }, 'Container'), logContainer,
        h('label', {}, follow, ' Follow'),
        h('label', {}, previous, ' Previous instance'),
        h('label', { for: 'log-search' }, 'Search'), search,
        button('Reload', streamLogs, { id: 'log-reload' })),
      status, out),
    section('Terminal', mayExec
      ? [h('div', { class: 'filters' },
        h('label', { for: 'term-container' }, 'Container'), termContainer,
        h('label', { for: 'term-command' }, 'Command'), command,
        button('Connect', connect, { id: 'term-connect' })),
      h('p', { class: 'hint' }, 'Click the terminal or tab to it, then type. Tab moves focus out of the terminal.'),
      termStatus, termHost]
      : h('p', { class: 'hint' }, 'Your permissions do not allow exec into this pod.')));

  const render = async () => {
    const s = pod.status || {};
    replace(head, h('dl', { class: 'meta' },
      h('dt', {}, 'Namespace'), h('dd', {}, ns),
      h('dt', {}, 'Node'), h('dd', {}, pod.spec.nodeName ? link(`#/r/core/nodes/_/${enc(pod.spec.nodeName)}`, pod.spec.nodeName) : 'not scheduled'),
      h('dt', {}, 'Phase'), h('dd', { id: 'pod-phase' }, s.phase || ''),
      h('dt', {}, 'Pod IP'), h('dd', {}, s.podIP || ''),
      h('dt', {}, 'QoS'), h('dd', {}, s.qosClass || ''),
      h('dt', {}, 'Age'), h('dd', {}, age(pod.metadata.creationTimestamp)),
      h('dt', {}, 'YAML'), h('dd', {}, link(`#/r/core/pods/${enc(ns)}/${enc(name)}`, 'Object page with YAML and relationships'))));
    const statuses = new Map([...(s.initContainerStatuses || []), ...(s.containerStatuses || [])].map((c) => [c.name, c]));
    const specs = [...(pod.spec.initContainers || []).map((c) => ({ ...c, init: true })), ...pod.spec.containers];
    replace(containers, dataTable('Containers', ['Name', 'Image', 'State', 'Ready', 'Restarts', 'Last termination'], specs.map((c) => {
      const st = statuses.get(c.name) || {};
      const last = st.lastState && st.lastState.terminated;
      return h('tr', { class: st.ready || (c.init && st.state && st.state.terminated) ? '' : 'bad' },
        h('th', { scope: 'row' }, c.name + (c.init ? ' (init)' : '')), h('td', {}, c.image), h('td', {}, state(st.state)),
        h('td', {}, st.ready ? 'yes' : 'no'), h('td', {}, String(st.restartCount || 0)),
        h('td', {}, last ? `${last.reason || ''} (exit ${last.exitCode}) at ${last.finishedAt}` : ''));
    }), { id: 'containers-table' }));
    replace(conditions, dataTable('Conditions', ['Type', 'Status', 'Reason', 'Last transition'], (s.conditions || []).map((c) => h('tr', {},
      h('td', {}, c.type), h('td', {}, c.status), h('td', {}, c.reason || ''), h('td', {}, c.lastTransitionTime || '')))));
    if (!bar.childElementCount) replace(bar, await actions(r, pod, signal));
  };
  const renderUsage = () => {
    const hist = usage('pod', `${ns}/${name}`);
    replace(use, h('p', { class: 'usage' }, 'CPU ', sparkline(hist.map((x) => x.cpu), { label: 'Pod CPU', format: cores }),
      ' Memory ', sparkline(hist.map((x) => x.mem), { label: 'Pod memory', format: bytes })));
  };
  await render();
  renderUsage();
  onMetrics(renderUsage, signal);
  eventsFor(pod, signal, events);
  streamLogs();
  api.watch(`/api/v1/namespaces/${enc(ns)}/pods`, {
    resourceVersion: pod.metadata.resourceVersion, signal, params: { fieldSelector: `metadata.name=${name}` },
    onEvent: (ev) => {
      if (ev.type === 'DELETED') { replace(bar, h('p', { class: 'hint' }, `Pod ${name} was deleted.`)); return; }
      pod = ev.object; render().catch(showError);
    },
  }).catch(() => {});
}
