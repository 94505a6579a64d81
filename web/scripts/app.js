// ComfyUI's `app` for packs' browser extensions (`import { app } from '../../scripts/app.js'`). sdgraph's editor
// is not LiteGraph: `registerExtension` and the hooks the editor calls (js/extensions.js) are what is offered;
// the README's plugin section lists exactly which.
import { api } from './api.js';

const SETTINGS = 'sdgraph.extensionSettings';
const stored = () => { try { return JSON.parse(localStorage.getItem(SETTINGS) || '{}'); } catch { return {}; } };

const settings = {
  defaults: {},
  addSetting(setting) { if (setting && setting.id) this.defaults[setting.id] = setting.defaultValue; return setting; },
  getSettingValue(id, fallback) {
    const all = stored();
    return id in all ? all[id] : (id in this.defaults ? this.defaults[id] : fallback);
  },
  setSettingValue(id, value) { localStorage.setItem(SETTINGS, JSON.stringify({ ...stored(), [id]: value })); },
};

export const app = {
  api,
  extensions: [],
  failedExtensions: [],   // {url, error}: an extension module that did not load or a hook that threw
  graph: null,            // sdgraph's graph (js/graph.js), set when the editor starts
  nodeOutputs: {},        // node id -> the `ui` output of its last run
  ui: { settings },
  extensionManager: { setting: { get: id => settings.getSettingValue(id), set: (id, v) => settings.setSettingValue(id, v) } },
  editor: null,           // set by the editor: { queue, graphToPrompt, loadGraphData }

  registerExtension(extension) {
    if (!extension || typeof extension.name !== 'string' || !extension.name) {
      throw new Error('an extension needs a name');
    }
    if (this.extensions.some(e => e.name === extension.name)) throw new Error(`extension ${extension.name} is already registered`);
    this.extensions.push(extension);
  },

  queuePrompt() { return this.editor?.queue(); },
  graphToPrompt() { return this.editor?.graphToPrompt(); },
  loadGraphData(data) { return this.editor?.loadGraphData(data); },
};
