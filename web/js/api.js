// The server's HTTP and WebSocket API (ComfyUI's routes), nothing else.

// The access token (when the server listens off loopback) comes in the printed URL's ?token=. It is kept for this
// tab in sessionStorage, which is per origin, port included (a cookie would go to every port of the host), and
// dropped from the address bar.
const token = (() => {
  const params = new URLSearchParams(location.search);
  const given = params.get('token');
  if (given) {
    sessionStorage.setItem('sdgraph.token', given);
    params.delete('token');
    const rest = params.toString();
    history.replaceState(history.state, '', location.pathname + (rest ? `?${rest}` : '') + location.hash);
  }
  return given || sessionStorage.getItem('sdgraph.token');
})();

export function url(path, params = {}) {
  const u = new URL(path.replace(/^\//, ''), location.href.replace(/[?#].*$/, '').replace(/[^/]*$/, ''));
  for (const [k, v] of Object.entries(params)) u.searchParams.set(k, v);
  if (token) u.searchParams.set('token', token);
  return u.toString();
}

async function request(path, { method = 'GET', body, params } = {}) {
  const init = { method, headers: {} };
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) { init.body = JSON.stringify(body); init.headers['Content-Type'] = 'application/json'; }
  const res = await fetch(url(path, params), init);
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { error: { message: text } }; }
  if (!res.ok) {
    const err = new Error((data && data.error && (data.error.message || data.error)) || `${res.status} ${res.statusText}`);
    err.status = res.status; err.data = data;
    throw err;
  }
  return data;
}

export const clientId = sessionStorage.getItem('sdgraph.clientId') || crypto.randomUUID?.() ||
  String(Math.random()).slice(2);
sessionStorage.setItem('sdgraph.clientId', clientId);

export const api = {
  objectInfo: () => request('object_info'),
  extensions: () => request('extensions'),           // packs' browser extension files
  nodeProblems: () => request('node_problems'),      // {problems: [{pack, node, message, missing_module}]}
  queuePrompt: (prompt, workflow) => request('prompt', { method: 'POST',
    body: { prompt, client_id: clientId, extra_data: { extra_pnginfo: { workflow } } } }),
  // UI workflow -> {prompt}; a 400 carries `problems` (node_id, title, path, message)
  convertWorkflow: workflow => request('workflow/convert', { method: 'POST', body: workflow }),
  // API prompt (+ node id -> [x, y]) -> {workflow} in ComfyUI's UI format
  uiWorkflow: (prompt, positions) => request('workflow/ui', { method: 'POST', body: { prompt, positions } }),
  queue: () => request('queue'),
  deleteQueued: ids => request('queue', { method: 'POST', body: { delete: ids } }),
  clearQueue: () => request('queue', { method: 'POST', body: { clear: true } }),
  history: (max = 30) => request('history', { params: { max_items: max } }),
  clearHistory: () => request('history', { method: 'POST', body: { clear: true } }),
  interrupt: () => request('interrupt', { method: 'POST', body: {} }),
  upload(file) {
    const form = new FormData();
    form.append('image', file, file.name);
    return request('upload/image', { method: 'POST', body: form });
  },
  viewUrl: img => url('view', { filename: img.filename, subfolder: img.subfolder || '', type: img.type || 'output' }),
};

// WebSocket with reconnect. handler(type, data) for text frames; handler('preview', Blob) for binary ones.
export function connect(handler) {
  let delay = 500;
  const open = () => {
    const u = new URL(url('ws', { clientId }));
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(u);
    ws.binaryType = 'arraybuffer';
    ws.onopen = () => { delay = 500; handler('open', null); };
    ws.onmessage = ev => {
      if (typeof ev.data === 'string') {
        let msg;
        try { msg = JSON.parse(ev.data); } catch { return; }
        handler(msg.type, msg.data || {});
      } else {
        const view = new DataView(ev.data);
        if (view.byteLength < 8 || view.getUint32(0) !== 1) return;
        const mime = view.getUint32(4) === 2 ? 'image/png' : 'image/jpeg';
        handler('preview', new Blob([ev.data.slice(8)], { type: mime }));
      }
    };
    ws.onclose = () => {
      handler('close', null);
      setTimeout(open, delay);
      delay = Math.min(delay * 2, 10000);
    };
  };
  open();
}
