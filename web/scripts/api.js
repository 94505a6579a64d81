// ComfyUI's `api` for packs' browser extensions (`import { api } from '../../scripts/api.js'`): the server's
// WebSocket messages as events (a pack's send_sync included) and fetchApi for its own routes.
import { url, clientId } from '../js/api.js';

class ExtensionApi extends EventTarget {
  constructor() {
    super();
    this.clientId = clientId;
    this.api_base = '';
  }

  apiURL(route) { return url(`/api${route}`); }
  fileURL(route) { return url(route); }
  fetchApi(route, options = {}) { return fetch(this.apiURL(route), options); }

  // The editor hands every message here: listeners get `event.detail` = the message's data.
  dispatch(type, data) { this.dispatchEvent(new CustomEvent(type, { detail: data })); }
}

export const api = new ExtensionApi();
