// The queue and history panel.
import { api } from './api.js';
import { h } from './widgets.js';
import { toast, showImage } from './ui.js';

export class QueuePanel {
  constructor(el, { load }) {
    this.el = el;
    this.load = load;
    this.queueList = h('ul', { class: 'queue-list', id: 'queue-list' });
    this.historyList = h('ul', { class: 'history-list', id: 'history-list' });
    el.replaceChildren(
      h('div', { class: 'panel-head' }, h('h3', { text: 'Queue' }),
        h('button', { class: 'small', text: 'Clear', title: 'Remove all waiting runs', onclick: () => this.act(api.clearQueue()) })),
      this.queueList,
      h('div', { class: 'panel-head' }, h('h3', { text: 'History' }),
        h('button', { class: 'small', text: 'Clear', title: 'Forget finished runs', onclick: () => this.act(api.clearHistory()) })),
      this.historyList);
  }

  get open() { return !this.el.hidden; }
  toggle(force) {
    this.el.hidden = force === undefined ? !this.el.hidden : !force;
    if (this.open) this.refresh();
  }

  async act(promise) {
    try { await promise; } catch (e) { toast(e.message, 'error'); }
    this.refresh();
  }

  async refresh() {
    if (!this.open) return;
    let queue, history;
    try { [queue, history] = await Promise.all([api.queue(), api.history()]); } catch (e) { return; }
    const item = (entry, state) => h('li', { class: state, 'data-prompt-id': entry[1] },
      h('span', { text: `#${entry[0]} ${state}` }),
      state === 'running' ? h('button', { class: 'small', text: 'Stop', onclick: () => this.act(api.interrupt()) })
        : h('button', { class: 'small', text: 'Remove', onclick: () => this.act(api.deleteQueued([entry[1]])) }),
      h('button', { class: 'small', text: 'Load', title: 'Open this workflow', onclick: () => this.load(workflowOf(entry)) }));
    const running = (queue.queue_running || []).map(e => item(e, 'running'));
    const pending = (queue.queue_pending || []).sort((a, b) => a[0] - b[0]).map(e => item(e, 'waiting'));
    this.queueList.replaceChildren(...running, ...pending);
    if (!running.length && !pending.length) this.queueList.append(h('li', { class: 'muted', text: 'Nothing waiting.' }));
    const entries = Object.entries(history || {}).sort((a, b) => (b[1].prompt?.[0] ?? 0) - (a[1].prompt?.[0] ?? 0));
    this.historyList.replaceChildren(...entries.map(([id, entry]) => {
      const images = Object.values(entry.outputs || {}).flatMap(o => o.images || []).map(api.viewUrl);
      const status = entry.status?.status_str || (entry.status?.completed ? 'success' : 'done');
      return h('li', { 'data-prompt-id': id, class: status },
        h('div', {}, h('span', { text: `#${entry.prompt?.[0] ?? '?'} ${status}` }),
          h('button', { class: 'small', text: 'Load', title: 'Open this workflow', onclick: () => this.load(workflowOf(entry.prompt || [])) })),
        images.length ? h('div', { class: 'thumbs' }, images.slice(0, 8).map((src, i) =>
          h('img', { src, alt: 'output', loading: 'lazy', onclick: () => showImage(images, i) }))) : null);
    }));
    if (!entries.length) this.historyList.append(h('li', { class: 'muted', text: 'No finished runs yet.' }));
  }
}

function workflowOf(entry) {
  const extra = entry[3] || {};
  return (extra.extra_pnginfo && extra.extra_pnginfo.workflow) || entry[2];
}
