// The Kubernetes API as the signed-in user: every call carries the
// session's bearer token, and errors arrive as metav1.Status.

const TOKEN_KEY = 'r8s.console.token';
const canCache = new Map();

export function token() { return sessionStorage.getItem(TOKEN_KEY); }
// Answers about permissions belong to the user who asked.
export function setToken(t) { sessionStorage.setItem(TOKEN_KEY, t); canCache.clear(); }
export function clearToken() { sessionStorage.removeItem(TOKEN_KEY); canCache.clear(); }

export class ApiError extends Error {
  constructor(status) {
    super(status.message || `HTTP ${status.code}`);
    this.status = status;
    this.code = status.code;
  }
}

const TABLE = 'application/json;as=Table;v=v1;g=meta.k8s.io, application/json';
const DISCOVERY = 'application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList, application/json';

async function failure(resp) {
  const text = await resp.text();
  try {
    const s = JSON.parse(text);
    if (s.kind === 'Status') return new ApiError(s);
  } catch (_) { /* not JSON */ }
  return new ApiError({ code: resp.status, message: text.trim() || resp.statusText, reason: resp.statusText });
}

export async function request(method, path, opts = {}) {
  const headers = { Accept: opts.accept || 'application/json' };
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  let body;
  if (opts.body !== undefined) {
    headers['Content-Type'] = opts.contentType || 'application/json';
    body = typeof opts.body === 'string' ? opts.body : JSON.stringify(opts.body);
  }
  const resp = await fetch(path, { method, headers, body, signal: opts.signal });
  if (!resp.ok) {
    const err = await failure(resp);
    if (resp.status === 401 && opts.onUnauthorized !== false) {
      window.dispatchEvent(new CustomEvent('r8s-unauthorized', { detail: err }));
    }
    throw err;
  }
  if (opts.raw) return resp;
  const ct = resp.headers.get('content-type') || '';
  return ct.includes('json') ? resp.json() : resp.text();
}

export const get = (path, opts) => request('GET', path, opts);
export const table = (path, opts = {}) => request('GET', path, { ...opts, accept: TABLE });

// Server-side apply of YAML or JSON text as the console's field manager.
export function apply(path, text, { dryRun = false, force = true } = {}) {
  const q = new URLSearchParams({ fieldManager: 'r8s-console' });
  if (force) q.set('force', 'true');
  if (dryRun) q.set('dryRun', 'All');
  return request('PATCH', `${path}?${q}`, { body: text, contentType: 'application/apply-patch+yaml' });
}

export const mergePatch = (path, patch) =>
  request('PATCH', path, { body: patch, contentType: 'application/merge-patch+json' });

export async function yamlToJson(text) {
  return request('POST', '/ui/yaml2json', { body: text, contentType: 'application/yaml' });
}

export async function jsonToYaml(obj) {
  return request('POST', '/ui/json2yaml', { body: obj });
}

// Who am I (authentication.k8s.io/v1 SelfSubjectReview).
export async function whoami() {
  const r = await request('POST', '/apis/authentication.k8s.io/v1/selfsubjectreviews', {
    body: { apiVersion: 'authentication.k8s.io/v1', kind: 'SelfSubjectReview' },
  });
  return r.status.userInfo;
}

// May the user do this? One SelfSubjectAccessReview per question, cached
// for the page's life (a role change shows after a reload).
export function can(verb, { group = '', resource, subresource = '', namespace = '', name = '' }) {
  const key = [verb, group, resource, subresource, namespace, name].join('|');
  if (!canCache.has(key)) {
    const p = request('POST', '/apis/authorization.k8s.io/v1/selfsubjectaccessreviews', {
      body: {
        apiVersion: 'authorization.k8s.io/v1', kind: 'SelfSubjectAccessReview',
        spec: { resourceAttributes: { verb, group, resource, subresource, namespace, name } },
      },
    }).then((r) => !!r.status.allowed, () => false);
    canCache.set(key, p);
  }
  return canCache.get(key);
}

// Discovery: every resource the server serves, built-in and custom.
let discovered = null;
export function discovery(refresh = false) {
  if (!discovered || refresh) {
    discovered = Promise.all([
      get('/api', { accept: DISCOVERY }),
      get('/apis', { accept: DISCOVERY }),
    ]).then(([core, groups]) => {
      const out = [];
      for (const g of [...(core.items || []), ...(groups.items || [])]) {
        const group = g.metadata.name || '';
        const v = (g.versions || [])[0];
        if (!v) continue;
        for (const r of v.resources || []) {
          out.push({
            group, version: v.version, resource: r.resource,
            kind: r.responseKind ? r.responseKind.kind : r.resource,
            namespaced: r.scope === 'Namespaced', verbs: r.verbs || [],
            shortNames: r.shortNames || [], categories: r.categories || [],
            subresources: (r.subresources || []).map((s) => s.subresource),
          });
        }
      }
      out.sort((a, b) => a.kind.localeCompare(b.kind) || a.group.localeCompare(b.group));
      return out;
    });
    discovered.catch(() => { discovered = null; });
  }
  return discovered;
}

export async function findResource(group, resource) {
  return (await discovery()).find((r) => r.group === group && r.resource === resource);
}

export async function resourceForKind(apiVersion, kind) {
  const [group, version] = apiVersion.includes('/') ? apiVersion.split('/') : ['', apiVersion];
  const all = await discovery();
  return all.find((r) => r.group === group && r.kind === kind && r.version === version)
    || all.find((r) => r.group === group && r.kind === kind);
}

export function path(r, namespace, name, sub) {
  let p = r.group ? `/apis/${r.group}/${r.version}` : `/api/${r.version}`;
  if (r.namespaced && namespace) p += `/namespaces/${encodeURIComponent(namespace)}`;
  p += `/${r.resource}`;
  if (name) p += `/${encodeURIComponent(name)}`;
  if (sub) p += `/${sub}`;
  return p;
}

// A watch as a stream of events: each line of the chunked response is one
// event. Reconnects from the last resourceVersion; a 410 Gone calls
// onExpired (the caller lists again). Ends when `signal` aborts.
export async function watch(p, { resourceVersion, onEvent, onExpired, signal, params = {} }) {
  let rv = resourceVersion;
  while (!signal.aborted) {
    const q = new URLSearchParams({ ...params, watch: '1', allowWatchBookmarks: 'true' });
    if (rv) q.set('resourceVersion', rv);
    try {
      const resp = await request('GET', `${p}?${q}`, { raw: true, signal });
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let nl;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (!line) continue;
          const ev = JSON.parse(line);
          if (ev.type === 'ERROR') {
            if (ev.object && ev.object.code === 410) { rv = undefined; if (onExpired) await onExpired(); }
            continue;
          }
          if (ev.object && ev.object.metadata && ev.object.metadata.resourceVersion) {
            rv = ev.object.metadata.resourceVersion;
          }
          if (ev.type !== 'BOOKMARK') onEvent(ev);
        }
      }
    } catch (e) {
      if (signal.aborted) return;
      if (e instanceof ApiError && e.code === 410) { rv = undefined; if (onExpired) await onExpired(); continue; }
      if (e instanceof ApiError && (e.code === 401 || e.code === 403)) throw e;
    }
    await new Promise((res) => setTimeout(res, 1000));
  }
}

// A list kept current by a watch: calls onChange(items) after the list and
// after each burst of events (at most once per animation frame).
export function liveList(p, onChange, signal, params = {}) {
  const items = new Map();
  const key = (o) => `${o.metadata.namespace || ''}/${o.metadata.name}`;
  let pending = false;
  const changed = () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; if (!signal.aborted) onChange([...items.values()]); });
  };
  const relist = async () => {
    const l = await get(`${p}?${new URLSearchParams(params)}`, { signal });
    items.clear();
    for (const o of l.items || []) items.set(key(o), o);
    changed();
    return l.metadata.resourceVersion;
  };
  const run = async () => {
    const rv = await relist();
    await watch(p, {
      resourceVersion: rv, signal, params, onExpired: relist,
      onEvent: (ev) => {
        if (ev.type === 'DELETED') items.delete(key(ev.object)); else items.set(key(ev.object), ev.object);
        changed();
      },
    });
  };
  return run();
}
