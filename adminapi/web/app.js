// mailgate admin page: the User Connections view over the admin API.
//
// Plain JavaScript, no build step, no dependency. Every value from the API
// reaches the DOM through textContent or an attribute, never as HTML, and
// no handler is inline, so the page runs under "default-src 'self'".
//
// Data flow: refresh() fetches the tab counts, the current tab's rows and
// the cluster's nodes; applyFilter() narrows them; render() draws one page
// of them and the cluster banner. Actions call
// the API, report the outcome in the status or error line, then refresh.
'use strict';

(() => {
  const TOKEN_KEY = 'mailgate.adminToken';
  // The tabs, in the order of the page this reproduces. key is the API's
  // protocol selector; mapi+ews counts both protocols.
  const TABS = [
    { key: 'all', label: 'All' },
    { key: 'smtp', label: 'SMTP' },
    { key: 'imap', label: 'IMAP' },
    { key: 'pop', label: 'POP' },
    { key: 'xmpp', label: 'XMPP' },
    { key: 'eas', label: 'EAS' },
    { key: 'mapi+ews', label: 'MAPI/EWS', sum: ['mapi', 'ews'] },
    { key: 'webdav', label: 'WebDAV' },
    { key: 'webmail', label: 'Webmail' },
  ];
  const PROTOCOL_LABELS = {
    smtp: 'SMTP', imap: 'IMAP', pop: 'POP', xmpp: 'XMPP', eas: 'EAS', mapi: 'MAPI',
    ews: 'EWS', 'mapi+ews': 'MAPI/EWS', webdav: 'WebDAV', webmail: 'Webmail',
  };
  const BULK_MAX = 1000; // users per POST /api/v1/bulk (the API's limit)
  const GHOST_MAX = 20; // rows kept on screen after an action emptied them
  const IPS_MAX_USERS = 50; // View Authenticated IPs for a selection

  const $ = (id) => document.getElementById(id);
  const el = {};

  const state = {
    token: '',
    tab: 'all',
    summary: null,
    rows: [], // {key, user, d (the API row), search, ghost}
    byKey: new Map(),
    filtered: [],
    filter: '',
    page: 0,
    pageSize: 100,
    selected: new Set(), // row keys
    ghosts: new Map(), // key -> row: users an action left without a live connection
    seq: 0, // refresh generation: late answers of an older one are ignored
    busy: 0,
    timer: 0,
    menu: null, // {trigger, items}
    me: null, // GET /api/v1/whoami: the token's name, role and allowed actions
    devicesUser: '', // whose devices the devices dialog shows
    nodes: null, // GET /api/v1/nodes: cluster or single node, Redis reachable, the nodes
  };

  // ---------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
    describe() {
      if (this.status === 0) return this.message;
      if (this.code === 'cluster_unavailable') {
        // A cluster node that cannot reach Redis refuses every change.
        return 'this node cannot reach Redis, so the cluster refused the change and nothing was changed. '
          + 'Try again when Redis is back, or on a node that reaches it. (HTTP ' + this.status + ', ' + this.code + ': ' + this.message + ')';
      }
      return this.message + ' (HTTP ' + this.status + ', ' + this.code + ')';
    }
  }

  async function api(method, path, body) {
    const headers = { Authorization: 'Bearer ' + state.token, Accept: 'application/json' };
    const init = { method, headers, cache: 'no-store', credentials: 'omit', redirect: 'error' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, 'network', 'Cannot reach the admin API: ' + e.message);
    }
    const text = await resp.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (e) {
        data = null;
      }
    }
    if (!resp.ok) {
      const err = data && data.error && typeof data.error.message === 'string'
        ? new ApiError(resp.status, String(data.error.code), data.error.message)
        : new ApiError(resp.status, 'http_' + resp.status, resp.statusText || 'request failed');
      if (resp.status === 401) unauthorized(err);
      throw err;
    }
    return data;
  }

  const userPath = (user) => '/api/v1/users/' + encodeURIComponent(user);
  const q = (v) => encodeURIComponent(v);

  // ---------------------------------------------------------------- token

  function showLogin(message) {
    stopAuto();
    closeMenu();
    for (const d of [el.confirm, el.devices, el.ips, el.audit]) if (d.open) d.close();
    el.main.hidden = true;
    el.signout.hidden = true;
    el.whoami.hidden = true;
    el.auditOpen.hidden = true;
    state.me = null;
    state.nodes = null;
    el.login.hidden = false;
    el.loginMsg.hidden = !message;
    el.loginMsg.textContent = message || '';
    el.token.value = '';
    el.token.focus();
  }

  function unauthorized(err) {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = '';
    showLogin('The admin API refused the token (HTTP 401: ' + err.message + '). Enter the admin token again.');
  }

  function showMain() {
    el.login.hidden = true;
    el.main.hidden = false;
    el.signout.hidden = false;
  }

  // loadMe asks who the token is: the menus offer only what its role may do.
  async function loadMe() {
    try {
      state.me = await api('GET', '/api/v1/whoami');
    } catch (e) {
      state.me = null;
      if (e.status !== 401) showError('Cannot read the token\'s role: ' + describe(e));
      return;
    }
    el.whoami.textContent = state.me.name + ' · ' + state.me.role;
    el.whoami.title = 'This token may ' + (state.me.actions.length ? state.me.actions.join(', ').replace(/_/g, ' ') : 'only read');
    el.whoami.hidden = false;
    el.auditOpen.hidden = false;
  }

  // can reports whether the token's role allows an action of Whoami's list;
  // nothing is allowed until the role is known.
  function can(action) {
    return !!state.me && state.me.actions.includes(action);
  }

  async function connect(token) {
    state.token = token;
    sessionStorage.setItem(TOKEN_KEY, token);
    showMain();
    await loadMe();
    if (!state.token) return; // the token was refused
    await refresh({ clearGhosts: true });
    if (!el.main.hidden) focusTab(state.tab);
    startAuto();
  }

  // ---------------------------------------------------------------- tabs

  function tabInfo(key) {
    return TABS.find((t) => t.key === key) || TABS[0];
  }

  function tabCount(t) {
    const s = state.summary;
    if (!s) return null;
    const keys = t.sum || [t.key];
    return keys.reduce((n, k) => n + (Number(s[k]) || 0), 0);
  }

  function buildTabs() {
    for (const t of TABS) {
      const b = document.createElement('button');
      b.type = 'button';
      b.id = 'tab-' + t.key.replace('+', '-');
      b.className = 'tab';
      b.setAttribute('role', 'tab');
      b.setAttribute('aria-controls', 'panel');
      b.dataset.tab = t.key;
      const name = document.createElement('span');
      name.className = 'tab-name';
      name.textContent = t.label;
      const count = document.createElement('span');
      count.className = 'count';
      count.dataset.count = t.key;
      count.textContent = '–';
      b.append(name, ' ', count);
      b.addEventListener('click', () => selectTab(t.key));
      el.tabs.append(b);
    }
    el.tabs.addEventListener('keydown', (ev) => {
      const i = TABS.findIndex((t) => t.key === document.activeElement.dataset.tab);
      if (i < 0) return;
      let j = -1;
      if (ev.key === 'ArrowRight') j = (i + 1) % TABS.length;
      else if (ev.key === 'ArrowLeft') j = (i - 1 + TABS.length) % TABS.length;
      else if (ev.key === 'Home') j = 0;
      else if (ev.key === 'End') j = TABS.length - 1;
      if (j < 0) return;
      ev.preventDefault();
      selectTab(TABS[j].key);
      focusTab(TABS[j].key);
    });
  }

  function focusTab(key) {
    const b = el.tabs.querySelector('[data-tab="' + CSS.escape(key) + '"]');
    if (b) b.focus();
  }

  function renderTabs() {
    for (const b of el.tabs.children) {
      const t = tabInfo(b.dataset.tab);
      const on = t.key === state.tab;
      b.setAttribute('aria-selected', on ? 'true' : 'false');
      b.tabIndex = on ? 0 : -1;
      const n = tabCount(t);
      const c = b.querySelector('.count');
      c.textContent = n === null ? '–' : String(n);
      b.setAttribute('aria-label', t.label + ', ' + (n === null ? 'count unknown' : n + (n === 1 ? ' connection' : ' connections')));
    }
    el.panel.setAttribute('aria-labelledby', 'tab-' + state.tab.replace('+', '-'));
  }

  function selectTab(key) {
    if (key === state.tab) return;
    state.tab = key;
    state.rows = [];
    state.byKey = new Map();
    state.filtered = [];
    state.selected.clear();
    state.ghosts.clear();
    state.page = 0;
    history.replaceState(null, '', '#' + key);
    hideNotices();
    render();
    refresh({ clearGhosts: true });
  }

  // ---------------------------------------------------------------- data

  function makeRow(d, ghost) {
    const key = d.user ? 'u:' + d.user : 'ip:' + (d.ip_connections[0] ? d.ip_connections[0].ip : '');
    const parts = [d.user || 'unauthenticated'];
    for (const c of d.ip_connections) parts.push(c.ip);
    if (d.last_authenticated_ip) parts.push(d.last_authenticated_ip);
    return { key, user: d.user, d, ghost: !!ghost, search: parts.join(' ').toLowerCase() };
  }

  function setRows(users) {
    const named = [];
    const anon = [];
    const fresh = new Set();
    for (const d of users) {
      const r = makeRow(d, false);
      fresh.add(r.key);
      (r.user ? named : anon).push(r);
    }
    for (const [key, g] of state.ghosts) {
      if (fresh.has(key)) state.ghosts.delete(key); // back with a live connection
      else named.push(g);
    }
    named.sort((a, b) => (a.user < b.user ? -1 : a.user > b.user ? 1 : 0));
    state.rows = named.concat(anon);
    state.byKey = new Map(state.rows.map((r) => [r.key, r]));
    for (const k of [...state.selected]) if (!state.byKey.has(k)) state.selected.delete(k);
    applyFilter();
  }

  function applyFilter() {
    const f = state.filter;
    state.filtered = f ? state.rows.filter((r) => r.search.includes(f)) : state.rows;
    const pages = Math.max(1, Math.ceil(state.filtered.length / state.pageSize));
    if (state.page >= pages) state.page = pages - 1;
  }

  // refresh reloads the counts and the rows. opts.ghostUsers are users an
  // action just touched: if they no longer have a live connection in the tab
  // their row stays, without connections, so the outcome can be seen (and
  // their IP history opened) until the next manual refresh or tab change.
  async function refresh(opts = {}) {
    if (!state.token) return;
    const seq = ++state.seq;
    const tab = state.tab;
    if (opts.clearGhosts) state.ghosts.clear();
    setBusy(+1);
    try {
      const [summary, list, nodes] = await Promise.all([
        api('GET', '/api/v1/connections/summary'),
        api('GET', '/api/v1/users?protocol=' + q(tab)),
        // The banner is not worth failing the rows for: on an error the
        // last node list stays.
        api('GET', '/api/v1/nodes').catch(() => undefined),
      ]);
      if (seq !== state.seq) return;
      const live = new Set(list.users.filter((d) => d.user).map((d) => d.user));
      const gone = (opts.ghostUsers || []).filter((u) => !live.has(u)).slice(0, GHOST_MAX);
      if (gone.length) {
        const details = await Promise.all(gone.map((u) => api('GET', userPath(u)).catch(() => null)));
        if (seq !== state.seq) return;
        for (const det of details) {
          if (det) state.ghosts.set('u:' + det.user, makeRow(ghostRow(det, tab), true));
        }
      }
      state.summary = summary;
      if (nodes !== undefined) state.nodes = nodes;
      setRows(list.users);
      el.updated.textContent = 'Updated ' + new Date().toLocaleTimeString();
      if (!opts.keepError) hideError();
      render();
    } catch (e) {
      if (seq === state.seq && e.status !== 401) showError('Refresh failed: ' + describe(e));
    } finally {
      setBusy(-1);
    }
  }

  // ghostRow builds a row for the current tab from GET /api/v1/users/{user}.
  function ghostRow(det, tab) {
    const protos = tab === 'all' ? Object.keys(det.protocols) : tab === 'mapi+ews' ? ['mapi', 'ews'] : [tab];
    let enabled = true;
    let last = null;
    let lastIP = null;
    for (const p of protos) {
      const pd = det.protocols[p];
      if (!pd) continue;
      enabled = enabled && pd.enabled;
      if (pd.last_login && (!last || pd.last_login > last)) {
        last = pd.last_login;
        lastIP = pd.last_authenticated_ip;
      }
    }
    return {
      user: det.user, protocols: [], protocol_enabled: enabled, domain_enabled: det.domain_enabled,
      connections: 0, ip_connections: [], duration_seconds: 0, last_login: last, last_authenticated_ip: lastIP,
    };
  }

  function setBusy(d) {
    state.busy += d;
    el.grid.setAttribute('aria-busy', state.busy > 0 ? 'true' : 'false');
    el.refresh.disabled = state.busy > 0;
  }

  // ---------------------------------------------------------------- render

  function render() {
    renderTabs();
    renderCluster();
    const t = state.tab;
    el.grid.classList.toggle('show-duration', t === 'webmail');
    el.grid.classList.toggle('tab-all', t === 'all');
    el.grid.classList.toggle('show-node', inCluster() || state.rows.some((r) => nodesOf(r.d).length > 0));

    const start = state.page * state.pageSize;
    const pageRows = state.filtered.slice(start, start + state.pageSize);

    // Keep the keyboard focus on the same control of the same row.
    const act = document.activeElement;
    const focusRow = act && el.rows.contains(act) ? act.closest('tr').dataset.key : null;
    const focusRole = focusRow ? act.dataset.role : null;

    const frag = document.createDocumentFragment();
    for (const r of pageRows) frag.append(rowElement(r));
    el.rows.replaceChildren(frag);

    if (focusRow) {
      const tr = el.rows.querySelector('tr[data-key="' + CSS.escape(focusRow) + '"]');
      const target = tr && tr.querySelector('[data-role="' + focusRole + '"]');
      if (target) target.focus();
    }

    const total = state.rows.length;
    const shown = state.filtered.length;
    el.empty.hidden = shown > 0;
    if (shown === 0) {
      el.empty.textContent = state.summary === null ? 'Loading…'
        : total === 0 ? 'No live connections in this tab.' : 'No row matches the filter.';
    }
    const pages = Math.max(1, Math.ceil(shown / state.pageSize));
    el.pageinfo.textContent = shown === 0 ? '0 rows'
      : 'Rows ' + fmtInt(start + 1) + '–' + fmtInt(start + pageRows.length) + ' of ' + fmtInt(shown)
        + (shown !== total ? ' (filtered from ' + fmtInt(total) + ')' : '')
        + ' · page ' + (state.page + 1) + ' of ' + pages;
    el.prev.disabled = state.page === 0;
    el.next.disabled = state.page >= pages - 1;
    renderSelection(pageRows);
  }

  function rowElement(r) {
    const d = r.d;
    const tr = document.createElement('tr');
    tr.dataset.key = r.key;
    if (r.user) tr.dataset.user = r.user;
    if (r.ghost) tr.classList.add('ghost');
    if (!r.user) tr.classList.add('anon');
    const selected = state.selected.has(r.key);
    if (selected) tr.classList.add('selected');
    const who = r.user || 'unauthenticated connections from ' + (d.ip_connections[0] ? d.ip_connections[0].ip : '?');

    // selection
    const tdSel = cell(tr, 'c-sel', '');
    const cb = document.createElement('input');
    cb.type = 'checkbox';
    cb.checked = selected;
    cb.dataset.role = 'select';
    cb.setAttribute('aria-label', 'Select ' + who);
    cb.addEventListener('change', () => {
      if (cb.checked) state.selected.add(r.key);
      else state.selected.delete(r.key);
      tr.classList.toggle('selected', cb.checked);
      renderSelection();
    });
    tdSel.append(cb);

    // user, with the check mark when the tab's protocol is enabled
    const tdUser = cell(tr, 'c-user', 'User');
    if (r.user) {
      const mark = document.createElement('span');
      const what = state.tab === 'all' ? 'all its protocols' : protoLabel(state.tab);
      if (d.protocol_enabled) {
        mark.className = 'check';
        mark.textContent = '✓';
        mark.title = (state.tab === 'all' ? 'Every protocol of the row is' : protoLabel(state.tab) + ' access is') + ' enabled for this user';
        mark.setAttribute('role', 'img');
        mark.setAttribute('aria-label', what + ' enabled');
      } else {
        mark.className = 'nocheck';
        mark.title = (state.tab === 'all' ? 'A protocol of the row is' : protoLabel(state.tab) + ' access is') + ' disabled for this user';
        mark.setAttribute('role', 'img');
        mark.setAttribute('aria-label', what + ' disabled');
      }
      tdUser.dataset.enabled = d.protocol_enabled ? 'true' : 'false';
      const name = document.createElement('span');
      name.className = 'user';
      name.textContent = r.user;
      tdUser.append(mark, name);
      if (state.tab === 'all' && d.protocols.length) {
        const tags = document.createElement('span');
        tags.className = 'protos';
        tags.textContent = d.protocols.map(protoLabel).join(' · ');
        tdUser.append(tags);
      }
    } else {
      const name = document.createElement('span');
      name.className = 'user anon-label';
      name.textContent = 'Unauthenticated';
      tdUser.append(name);
      if (state.tab === 'all' && d.protocols.length) {
        const tags = document.createElement('span');
        tags.className = 'protos';
        tags.textContent = d.protocols.map(protoLabel).join(' · ');
        tdUser.append(tags);
      }
    }
    if (r.ghost) {
      const note = document.createElement('span');
      note.className = 'ghost-note';
      note.textContent = 'no live connection';
      tdUser.append(note);
    }

    // domain enabled
    const tdDom = cell(tr, 'c-domain', 'Enabled');
    if (r.user) {
      tdDom.textContent = d.domain_enabled ? 'Yes' : 'No';
      tdDom.dataset.enabled = d.domain_enabled ? 'true' : 'false';
      if (!d.domain_enabled) tdDom.classList.add('off');
    } else {
      tdDom.textContent = '—';
    }

    // IP connections
    const tdIPs = cell(tr, 'c-ips', 'IP Connections');
    if (d.ip_connections.length) {
      const ul = document.createElement('ul');
      ul.className = 'iplist';
      for (const c of d.ip_connections) {
        const li = document.createElement('li');
        const ip = document.createElement('span');
        ip.className = 'ip';
        ip.textContent = c.ip;
        const n = document.createElement('span');
        n.className = 'n';
        n.textContent = String(c.count);
        n.setAttribute('aria-label', c.count + (c.count === 1 ? ' connection' : ' connections'));
        li.append(ip, ' ', n);
        ul.append(li);
      }
      tdIPs.append(ul);
    } else {
      tdIPs.textContent = 'none';
      tdIPs.classList.add('muted');
    }

    // duration (webmail)
    const tdDur = cell(tr, 'c-duration', 'Duration');
    tdDur.textContent = d.duration_seconds > 0 ? fmtDuration(d.duration_seconds) : '—';

    // last login and IP
    const tdLogin = cell(tr, 'c-login', 'Last Login');
    if (d.last_login) {
      const tm = document.createElement('time');
      tm.dateTime = d.last_login;
      tm.textContent = fmtTime(d.last_login);
      tm.title = d.last_login;
      tdLogin.append(tm);
    } else {
      tdLogin.textContent = '—';
    }
    cell(tr, 'c-lastip', 'Last Authenticated IP').textContent = d.last_authenticated_ip || '—';

    // node: the cluster nodes holding the row's connections
    const tdNode = cell(tr, 'c-node', 'Node');
    const nodes = nodesOf(d);
    tdNode.textContent = nodes.length ? nodes.join(', ') : '—';

    // actions
    const tdAct = cell(tr, 'c-act', '');
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'kebab';
    b.dataset.role = 'menu';
    b.textContent = '⋮';
    b.setAttribute('aria-haspopup', 'menu');
    b.setAttribute('aria-expanded', 'false');
    b.setAttribute('aria-label', 'Actions for ' + who);
    b.addEventListener('click', () => toggleMenu(b, () => rowActions(r)));
    tdAct.append(b);
    return tr;
  }

  // nodesOf is the nodes of a row: a user row's "nodes", a connection's
  // "node"; none on a single node.
  function nodesOf(d) {
    if (Array.isArray(d.nodes)) return d.nodes;
    return d.node ? [d.node] : [];
  }

  function inCluster() {
    return !!(state.nodes && state.nodes.cluster);
  }

  // renderCluster draws the banner of a cluster: its nodes with their state
  // and live connections, and a warning when the node answering cannot
  // reach Redis. A single node has none.
  function renderCluster() {
    const n = state.nodes;
    if (!inCluster()) {
      el.cluster.hidden = true;
      el.clusterNodes.replaceChildren();
      el.clusterDegraded.hidden = true;
      return;
    }
    const list = Array.isArray(n.nodes) ? n.nodes : [];
    const gone = list.filter((x) => x.state !== 'up').length;
    el.clusterSummary.textContent = 'Cluster of ' + plural(list.length, 'node') + (gone ? ' (' + fmtInt(gone) + ' gone)' : '');
    el.clusterAnswered.textContent = 'answered by ' + n.node;
    const frag = document.createDocumentFragment();
    for (const x of list) {
      const li = document.createElement('li');
      li.dataset.node = x.name;
      li.dataset.state = x.state;
      if (x.state !== 'up') li.classList.add('gone');
      if (x.name === n.node) li.classList.add('self');
      const name = document.createElement('span');
      name.className = 'node-name';
      name.textContent = x.name;
      const st = document.createElement('span');
      st.className = 'node-state';
      st.textContent = x.state;
      // A gone node's connections no longer count: when it was last heard of.
      const live = document.createElement('span');
      live.className = 'node-live';
      live.textContent = x.state === 'up' ? fmtInt(x.live_connections) + ' live'
        : 'last heartbeat ' + (x.last_heartbeat ? fmtTime(x.last_heartbeat) : 'never');
      li.append(name, ' ', st, ' ', live);
      if (x.degraded) {
        const dg = document.createElement('span');
        dg.className = 'node-degraded';
        dg.textContent = 'cannot reach Redis';
        li.append(' ', dg);
      }
      const about = [x.name + (x.name === n.node ? ' (this node)' : '') + ': ' + x.state];
      if (x.admin) about.push('admin ' + x.admin);
      if (x.version) about.push('version ' + x.version);
      if (x.started) about.push('started ' + fmtTime(x.started));
      about.push('last heartbeat ' + (x.last_heartbeat ? fmtTime(x.last_heartbeat) : 'never'));
      li.title = about.join(' · ');
      li.setAttribute('aria-label', x.name + (x.name === n.node ? ', this node' : '') + ', ' + x.state + ', '
        + (x.state === 'up' ? plural(x.live_connections, 'live connection') : live.textContent) + (x.degraded ? ', cannot reach Redis' : ''));
      frag.append(li);
    }
    el.clusterNodes.replaceChildren(frag);
    const warn = n.degraded
      ? 'This node cannot reach Redis: it serves with the last known policy; changes are refused until Redis is back. The counts and rows are this node\'s own.'
      : '';
    if (el.clusterDegraded.textContent !== warn) el.clusterDegraded.textContent = warn;
    el.clusterDegraded.hidden = !warn;
    el.cluster.hidden = false;
  }

  function cell(tr, cls, label) {
    const td = document.createElement('td');
    td.className = cls;
    if (label) td.dataset.label = label;
    tr.append(td);
    return td;
  }

  function renderSelection(pageRows) {
    if (!pageRows) {
      const start = state.page * state.pageSize;
      pageRows = state.filtered.slice(start, start + state.pageSize);
    }
    const n = state.selected.size;
    el.selinfo.textContent = n === 0 ? 'No rows selected' : fmtInt(n) + (n === 1 ? ' row selected' : ' rows selected');
    el.selectNone.hidden = n === 0;
    el.selActions.disabled = n === 0;
    const onPage = pageRows.filter((r) => state.selected.has(r.key)).length;
    el.selectPage.checked = pageRows.length > 0 && onPage === pageRows.length;
    el.selectPage.indeterminate = onPage > 0 && onPage < pageRows.length;
    const matching = state.filtered.length;
    const allMatching = n >= matching && state.filtered.every((r) => state.selected.has(r.key));
    el.selectMatching.hidden = !(onPage === pageRows.length && pageRows.length > 0 && matching > pageRows.length && !allMatching);
    el.selectMatching.textContent = 'Select all ' + fmtInt(matching) + ' matching rows';
  }

  // ---------------------------------------------------------------- actions

  // Targets of an action: the named users and the unauthenticated rows.
  function targets(rows) {
    return { rows, users: rows.filter((r) => r.user), anon: rows.filter((r) => !r.user) };
  }

  function tabProtocol() {
    return state.tab; // a key, "mapi+ews" or "all"
  }

  function rowActions(r) {
    const items = actionItems(targets([r]));
    return items;
  }

  function selectionActions() {
    const rows = [...state.selected].map((k) => state.byKey.get(k)).filter(Boolean);
    return actionItems(targets(rows));
  }

  function actionItems(tg) {
    const tab = state.tab;
    const label = protoLabel(tab);
    const items = [];
    const liveRows = tg.rows.filter((r) => !r.ghost);
    // Only what the token's role may do is offered (GET /api/v1/whoami).
    if (can('drop')) {
      items.push({ label: 'Drop Connections', danger: true, disabled: liveRows.length === 0, run: () => doDrop(tg) });
    }
    const resyncable = tab === 'all' ? tg.users.filter((r) => r.d.protocols.length > 0) : tg.users;
    if (can('resync')) {
      items.push({ label: 'Resync Devices', danger: true, disabled: resyncable.length === 0, run: () => doResync(tg, resyncable) });
    }
    if (tab !== 'all') {
      const single = tg.rows.length === 1 && tg.users.length === 1;
      if (can('enable') && (!single || !tg.users[0].d.protocol_enabled)) {
        items.push({ label: 'Enable ' + label + ' Access', disabled: tg.users.length === 0, run: () => doSetEnabled(tg, true) });
      }
      if (can('disable') && (!single || tg.users[0].d.protocol_enabled)) {
        items.push({ label: 'Disable ' + label + ' Access', danger: true, disabled: tg.users.length === 0, run: () => doSetEnabled(tg, false) });
      }
    }
    items.push({
      label: 'View Authenticated IPs',
      disabled: tg.users.length === 0 || tg.users.length > IPS_MAX_USERS,
      run: () => showIPs(tg.users.map((r) => r.user)),
    });
    // One user's ActiveSync devices, from the EAS tab or a row of the All
    // tab that has EAS connections.
    if (tg.rows.length === 1 && tg.users.length === 1 && (tab === 'eas' || (tab === 'all' && tg.users[0].d.protocols.includes('eas')))) {
      items.push({ label: 'View ActiveSync Devices', run: () => showDevices(tg.users[0].user) });
    }
    return items;
  }

  function whoText(tg) {
    if (tg.rows.length === 1) {
      const r = tg.rows[0];
      return r.user || 'the unauthenticated connections from ' + (r.d.ip_connections[0] ? r.d.ip_connections[0].ip : '?');
    }
    const parts = [];
    if (tg.users.length) parts.push(fmtInt(tg.users.length) + (tg.users.length === 1 ? ' user' : ' users'));
    if (tg.anon.length) parts.push(fmtInt(tg.anon.length) + ' unauthenticated ' + (tg.anon.length === 1 ? 'row' : 'rows'));
    return parts.join(' and ');
  }

  async function doDrop(tg) {
    const tab = state.tab;
    const scope = tab === 'all' ? 'all' : protoLabel(tab);
    const ok = await confirmDialog({
      title: 'Drop connections',
      text: 'Drop ' + scope + ' connections of ' + whoText(tg) + '? The clients are disconnected at once; they may reconnect.',
      ok: 'Drop Connections',
    });
    if (!ok) return;
    const why = reasonBody(ok.reason);
    await runAction('Drop', async () => {
      let dropped = 0;
      const failures = [];
      if (tg.users.length === 1 && tg.anon.length === 0) {
        const res = await api('POST', userPath(tg.users[0].user) + '/drop?protocol=' + q(tabProtocol()), why);
        dropped += res.dropped;
      } else if (tg.users.length) {
        const res = await bulk(tg.users.map((r) => r.user), 'drop', tabProtocol(), why);
        dropped += res.dropped;
        failures.push(...res.failures);
      }
      for (const r of tg.anon) {
        try {
          dropped += await dropAnonymous(r, why);
        } catch (e) {
          if (e.status === 401) throw e;
          failures.push('unauthenticated ' + r.d.ip_connections[0].ip + ': ' + describe(e));
        }
      }
      return {
        text: 'Dropped ' + plural(dropped, 'connection') + ' of ' + whoText(tg) + '.',
        failures, users: tg.users.map((r) => r.user),
      };
    });
  }

  // dropAnonymous drops the unauthenticated connections of a row: the API
  // lists them by IP (and protocol) and drops each by id.
  async function dropAnonymous(r, why) {
    const ip = r.d.ip_connections[0].ip;
    const list = await api('GET', '/api/v1/connections?protocol=' + q(tabProtocol()) + '&ip=' + q(ip));
    let n = 0;
    for (const c of list.connections) {
      if (c.user !== '') continue;
      try {
        await api('DELETE', '/api/v1/connections/' + encodeURIComponent(String(c.id)), why);
        n++;
      } catch (e) {
        if (e.status !== 404) throw e; // 404: it ended meanwhile
      }
    }
    return n;
  }

  async function doResync(tg, users) {
    const tab = state.tab;
    const what = tab === 'all' ? 'every protocol they are connected with' : protoLabel(tab);
    const ok = await confirmDialog({
      title: 'Resync devices',
      text: 'Resync the devices of ' + (users.length === 1 ? users[0].user : plural(users.length, 'user')) + ' (' + what
        + ')? Their sessions are dropped so that the devices reconnect and resynchronise, the counters are reconciled and the configured resync hook runs.',
      ok: 'Resync Devices',
    });
    if (!ok) return;
    const why = reasonBody(ok.reason);
    await runAction('Resync', async () => {
      const lines = [];
      const failures = [];
      if (users.length === 1) {
        const r = users[0];
        const protos = tab === 'all' ? r.d.protocols : [tab];
        for (const p of protos) {
          try {
            const res = await api('POST', userPath(r.user) + '/resync?protocol=' + q(p), why);
            const bad = res.steps.filter((s) => !s.ok);
            const text = r.user + ' (' + protoLabel(p) + '): ' + res.steps.map((s) => s.step + ': ' + s.detail).join('; ');
            (bad.length ? failures : lines).push(text);
          } catch (e) {
            if (e.status === 401) throw e;
            failures.push(r.user + ' (' + protoLabel(p) + '): ' + describe(e));
          }
        }
      } else {
        // One bulk call per protocol: on the All tab each user is resynced
        // for the protocols of its row.
        const byProto = new Map();
        for (const r of users) {
          for (const p of tab === 'all' ? r.d.protocols : [tab]) {
            if (!byProto.has(p)) byProto.set(p, []);
            byProto.get(p).push(r.user);
          }
        }
        let ok = 0;
        for (const [p, us] of byProto) {
          const res = await bulk(us, 'resync', p, why);
          ok += res.ok;
          failures.push(...res.failures.map((f) => f + ' (' + protoLabel(p) + ')'));
        }
        lines.push('Resynced ' + plural(ok, 'user/protocol pair') + '.');
      }
      return { text: lines.join(' '), failures, users: users.map((r) => r.user) };
    });
  }

  async function doSetEnabled(tg, enabled) {
    const label = protoLabel(state.tab);
    const users = tg.users.map((r) => r.user);
    const who = users.length === 1 ? users[0] : plural(users.length, 'user');
    let drop = true;
    let reason = '';
    if (!enabled) {
      const res = await confirmDialog({
        title: 'Disable ' + label + ' access',
        text: 'Disable ' + label + ' access for ' + who + '? New ' + label + ' logins are refused until it is enabled again.',
        ok: 'Disable ' + label + ' Access',
        dropOption: 'Also drop the live ' + label + ' connections now',
      });
      if (!res) return;
      drop = res.drop;
      reason = res.reason;
    } else if (state.me && state.me.require_reason) {
      // Enabling is not destructive and needs no confirmation, unless a
      // reason must be given.
      const res = await confirmDialog({
        title: 'Enable ' + label + ' access',
        text: 'Enable ' + label + ' access for ' + who + '?',
        ok: 'Enable ' + label + ' Access',
      });
      if (!res) return;
      reason = res.reason;
    }
    await runAction(enabled ? 'Enable' : 'Disable', async () => {
      let dropped = 0;
      const failures = [];
      if (users.length === 1) {
        const body = Object.assign({ enabled, drop }, reasonBody(reason));
        const res = await api('PUT', userPath(users[0]) + '/protocols/' + encodeURIComponent(state.tab), body);
        dropped = res.dropped;
      } else {
        const res = await bulk(users, enabled ? 'enable' : 'disable', state.tab, Object.assign({ drop }, reasonBody(reason)));
        dropped = res.dropped;
        failures.push(...res.failures);
      }
      let text = (enabled ? 'Enabled ' : 'Disabled ') + label + ' access for ' + who + '.';
      if (!enabled) text += ' Dropped ' + plural(dropped, 'connection') + '.';
      return { text, failures, users };
    });
  }

  // bulk runs POST /api/v1/bulk in chunks the API accepts and sums up. A
  // role without bulk (operator) runs the same action one user at a time.
  async function bulk(users, action, protocol, extra) {
    const out = { dropped: 0, ok: 0, failures: [] };
    if (!can('bulk')) {
      for (const u of users) {
        try {
          const why = extra && extra.reason ? { reason: extra.reason } : undefined;
          if (action === 'drop') {
            out.dropped += (await api('POST', userPath(u) + '/drop?protocol=' + q(protocol), why)).dropped;
          } else if (action === 'resync') {
            const res = await api('POST', userPath(u) + '/resync?protocol=' + q(protocol), why);
            const bad = res.steps.filter((st) => !st.ok);
            if (bad.length) {
              out.failures.push(u + ': ' + bad.map((st) => st.step + ': ' + st.detail).join('; '));
              continue;
            }
          } else {
            const body = Object.assign({ enabled: action === 'enable', drop: !extra || extra.drop !== false }, why || {});
            out.dropped += (await api('PUT', userPath(u) + '/protocols/' + encodeURIComponent(protocol), body)).dropped;
          }
          out.ok++;
        } catch (e) {
          if (e.status === 401) throw e;
          out.failures.push(u + ': ' + describe(e));
        }
      }
      return out;
    }
    for (let i = 0; i < users.length; i += BULK_MAX) {
      const body = Object.assign({ users: users.slice(i, i + BULK_MAX), action, protocol }, extra || {});
      const res = await api('POST', '/api/v1/bulk', body);
      for (const it of res.results) {
        out.dropped += it.dropped || 0;
        if (it.ok) {
          out.ok++;
        } else {
          let why = it.error || '';
          if (!why && it.steps) why = it.steps.filter((s) => !s.ok).map((s) => s.step + ': ' + s.detail).join('; ');
          out.failures.push(it.user + ': ' + (why || 'failed'));
        }
      }
    }
    return out;
  }

  // runAction runs fn, reports its outcome and refreshes, keeping the rows
  // of the users it touched on screen.
  async function runAction(name, fn) {
    hideNotices();
    setBusy(+1);
    let res;
    try {
      res = await fn();
    } catch (e) {
      setBusy(-1);
      if (e.status !== 401) showError(name + ' failed: ' + describe(e));
      // Redis is out of reach: the banner says so at once.
      if (e.code === 'cluster_unavailable') await refresh({ keepError: true });
      return;
    }
    setBusy(-1);
    state.selected.clear();
    if (res.text) showStatus(res.text);
    if (res.failures.length) {
      const shown = res.failures.slice(0, 5).join('; ');
      const more = res.failures.length > 5 ? ' … and ' + (res.failures.length - 5) + ' more' : '';
      showError(name + ': ' + plural(res.failures.length, 'failure') + ': ' + shown + more);
    }
    await refresh({ ghostUsers: res.users, keepError: res.failures.length > 0 });
  }

  // ---------------------------------------------------------------- IPs modal

  async function showIPs(users) {
    const trigger = state.lastTrigger;
    el.ipsTitle.textContent = users.length === 1 ? 'Authenticated IPs of ' + users[0] : 'Authenticated IPs of ' + plural(users.length, 'user');
    el.ipsBody.replaceChildren(textP('Loading…', 'muted'));
    el.loginsBody.replaceChildren();
    el.loginsTitle.hidden = users.length !== 1;
    openDialog(el.ips, trigger);
    if (users.length === 1) showLogins(users[0]);
    try {
      const lists = await Promise.all(users.map((u) => api('GET', userPath(u) + '/ips')));
      const multi = users.length > 1;
      const rows = [];
      for (const l of lists) for (const rec of l.ips) rows.push({ user: l.user, rec });
      if (!rows.length) {
        el.ipsBody.replaceChildren(textP('No authenticated IP recorded.', 'muted'));
        return;
      }
      const table = document.createElement('table');
      table.className = 'grid ips-table';
      const cols = (multi ? ['User'] : []).concat(['IP', 'Protocol', 'First Seen', 'Last Seen', 'Count']);
      headerRow(table, cols);
      const tb = table.createTBody();
      for (const { user, rec } of rows) {
        const tr = tb.insertRow();
        const vals = (multi ? [user] : []).concat([rec.ip, protoLabel(rec.protocol), fmtTime(rec.first_seen), fmtTime(rec.last_seen), String(rec.count)]);
        vals.forEach((v, i) => {
          const td = tr.insertCell();
          td.textContent = v;
          td.dataset.label = cols[i];
        });
      }
      el.ipsBody.replaceChildren(table);
    } catch (e) {
      if (e.status !== 401) el.ipsBody.replaceChildren(textP('Could not load the IP history: ' + describe(e), 'notice error'));
    }
  }

  // ---------------------------------------------------------------- devices

  // showDevices opens the dialog of one user's ActiveSync devices.
  function showDevices(user) {
    state.devicesUser = user;
    el.devicesTitle.textContent = 'ActiveSync devices of ' + user;
    el.devicesMsg.hidden = true;
    el.devicesBody.replaceChildren(textP('Loading…', 'muted'));
    openDialog(el.devices, state.lastTrigger);
    loadDevices();
  }

  function devicesNotice(text, ok) {
    el.devicesMsg.textContent = text;
    el.devicesMsg.className = 'notice ' + (ok ? 'ok' : 'error');
    el.devicesMsg.hidden = false;
  }

  // loadDevices fills the dialog: every device seen or blocked, with Block
  // or Allow and Drop for a role that may (GET /api/v1/whoami: device).
  async function loadDevices() {
    const user = state.devicesUser;
    let l;
    try {
      l = await api('GET', userPath(user) + '/devices');
    } catch (e) {
      if (e.status !== 401) el.devicesBody.replaceChildren(textP('Could not load the devices: ' + describe(e), 'notice error'));
      return;
    }
    if (user !== state.devicesUser) return;
    if (!l.devices.length) {
      el.devicesBody.replaceChildren(textP('No ActiveSync device recorded.', 'muted'));
      return;
    }
    const act = can('device');
    const table = document.createElement('table');
    table.className = 'grid ips-table devices-table';
    const cols = ['Device', 'Type', 'State', 'Live', 'Last Command', 'Last Seen', 'Last IP', 'User Agent'];
    headerRow(table, act ? cols.concat(['Actions']) : cols);
    const tb = table.createTBody();
    for (const d of l.devices) {
      const tr = tb.insertRow();
      tr.dataset.device = d.id;
      let st = 'Allowed';
      tr.dataset.state = 'allowed';
      if (d.blocked) {
        st = 'Blocked by ' + d.block.by + (d.block.reason ? ': ' + d.block.reason : '');
        tr.dataset.state = 'blocked';
      } else if (d.type_refused) {
        st = 'Type refused by the configuration';
        tr.dataset.state = 'type';
      }
      if (d.last_refused) st += ' (last refused ' + fmtTime(d.last_refused) + ')';
      const vals = [d.id, d.type || '—', st, String(d.live), d.last_command || '—',
        d.last_seen ? fmtTime(d.last_seen) : 'never', d.last_ip || '—', d.user_agent || '—'];
      vals.forEach((v, i) => {
        const td = tr.insertCell();
        td.textContent = v;
        td.dataset.label = cols[i];
        if (i === 7) td.className = 'dev-agent';
      });
      if (!act) continue;
      const td = tr.insertCell();
      td.className = 'dev-actions';
      td.dataset.label = 'Actions';
      const blockBtn = document.createElement('button');
      blockBtn.type = 'button';
      blockBtn.dataset.action = d.blocked ? 'allow' : 'block';
      blockBtn.textContent = d.blocked ? 'Allow' : 'Block';
      if (!d.blocked) blockBtn.className = 'danger';
      blockBtn.setAttribute('aria-label', (d.blocked ? 'Allow' : 'Block') + ' device ' + d.id);
      blockBtn.addEventListener('click', () => deviceAction(blockBtn, d, d.blocked ? 'allow' : 'block'));
      const dropBtn = document.createElement('button');
      dropBtn.type = 'button';
      dropBtn.dataset.action = 'drop';
      dropBtn.textContent = 'Drop';
      dropBtn.disabled = d.live === 0;
      dropBtn.setAttribute('aria-label', 'Drop the live requests of device ' + d.id);
      dropBtn.addEventListener('click', () => deviceAction(dropBtn, d, 'drop'));
      td.append(blockBtn, dropBtn);
    }
    el.devicesBody.replaceChildren(table);
  }

  // deviceAction confirms, then blocks, allows or drops one device.
  async function deviceAction(trigger, d, action) {
    const user = state.devicesUser;
    state.lastTrigger = trigger;
    const texts = {
      block: { title: 'Block device', ok: 'Block Device',
        text: 'Block the ActiveSync device ' + d.id + ' of ' + user + '? Its requests get HTTP 403 from mailgate before they reach the mail server, and its live requests are dropped; the user\'s other devices go on.' },
      allow: { title: 'Allow device', ok: 'Allow Device', text: 'Allow the ActiveSync device ' + d.id + ' of ' + user + ' again?' },
      drop: { title: 'Drop device requests', ok: 'Drop Requests',
        text: 'Drop the live requests (a waiting Ping) of the device ' + d.id + ' of ' + user + '? It reconnects.' },
    }[action];
    const ok = await confirmDialog(texts);
    if (!ok) return;
    let res;
    try {
      res = await api('POST', userPath(user) + '/devices/' + encodeURIComponent(d.id) + '/' + action, reasonBody(ok.reason));
    } catch (e) {
      if (e.status !== 401) devicesNotice(texts.title + ' failed: ' + describe(e), false);
      return;
    }
    if (user !== state.devicesUser) return;
    const done = {
      block: () => 'Blocked device ' + d.id + '; dropped ' + plural(res.dropped, 'request') + '.',
      allow: () => 'Allowed device ' + d.id + '.',
      drop: () => 'Dropped ' + plural(res.dropped, 'request') + ' of device ' + d.id + '.',
    }[action];
    devicesNotice(done(), true);
    await loadDevices();
    const again = el.devicesBody.querySelector('tr[data-device="' + CSS.escape(d.id) + '"] button[data-action]');
    if (again) again.focus();
  }

  // ---------------------------------------------------------------- audit

  const AUDIT_LIMIT = 500;

  // loadAudit shows the changes made through the API, newest first.
  async function loadAudit() {
    const params = new URLSearchParams({ limit: String(AUDIT_LIMIT) });
    if (el.auditActor.value.trim()) params.set('actor', el.auditActor.value.trim());
    if (el.auditTarget.value.trim()) params.set('target', el.auditTarget.value.trim());
    if (el.auditSince.value) params.set('since', el.auditSince.value);
    el.auditBody.replaceChildren(textP('Loading…', 'muted'));
    let list;
    try {
      list = await api('GET', '/api/v1/audit?' + params.toString());
    } catch (e) {
      if (e.status !== 401) el.auditBody.replaceChildren(textP('Could not load the audit trail: ' + describe(e), 'notice error'));
      return;
    }
    if (!list.entries.length) {
      el.auditBody.replaceChildren(textP('No change recorded for this selection.', 'muted'));
      return;
    }
    const table = document.createElement('table');
    table.className = 'grid ips-table audit-table';
    const cols = ['Time', 'Actor', 'Source', 'Action', 'Target', 'Reason', 'Outcome'];
    headerRow(table, cols);
    const tb = table.createTBody();
    for (const en of list.entries) {
      const tr = tb.insertRow();
      if (!en.ok) tr.classList.add('failed');
      const ps = Object.keys(en.params).sort().map((k) => k + '=' + en.params[k]).join(' ');
      const vals = [fmtTime(en.time), en.actor + ' (' + en.role + ')', en.source, en.action + (ps ? ' (' + ps + ')' : ''),
        en.target, en.reason || '—', (en.ok ? '' : 'FAILED: ') + en.outcome];
      vals.forEach((v, i) => {
        const td = tr.insertCell();
        td.textContent = v;
        td.dataset.label = cols[i];
      });
    }
    const parts = [table];
    if (list.entries.length === AUDIT_LIMIT) parts.push(textP('The newest ' + AUDIT_LIMIT + ' entries; narrow the selection for older ones.', 'muted'));
    el.auditBody.replaceChildren(...parts);
  }

  // headerRow gives table a header row of column titles.
  function headerRow(table, cols) {
    const row = table.createTHead().insertRow();
    for (const c of cols) {
      const th = document.createElement('th');
      th.scope = 'col';
      th.textContent = c;
      row.append(th);
    }
  }

  // showLogins fills the IP dialog's second part: the user's last login
  // attempts over every protocol, with why mailgate refused the gated ones.
  async function showLogins(user) {
    el.loginsBody.replaceChildren(textP('Loading…', 'muted'));
    let l;
    try {
      l = await api('GET', userPath(user) + '/logins');
    } catch (e) {
      if (e.status !== 401) el.loginsBody.replaceChildren(textP('Could not load the login history: ' + describe(e), 'notice error'));
      return;
    }
    if (!l.logins.length) {
      el.loginsBody.replaceChildren(textP('No login attempt recorded.', 'muted'));
      return;
    }
    const RESULTS = { ok: 'OK', failed: 'Wrong password', gated: 'Refused by mailgate', temporary: 'Backend unavailable' };
    const table = document.createElement('table');
    table.className = 'grid ips-table logins-table';
    const cols = ['Time', 'Protocol', 'IP', 'Mechanism', 'Result', 'Count'];
    headerRow(table, cols);
    const tb = table.createTBody();
    for (const a of l.logins) {
      const tr = tb.insertRow();
      tr.dataset.result = a.result;
      const result = (RESULTS[a.result] || a.result) + (a.reason ? ': ' + a.reason : '');
      const count = a.count > 1 ? String(a.count) + ' since ' + fmtTime(a.first) : '1';
      const vals = [fmtTime(a.time), protoLabel(a.protocol), a.ip, a.mechanism || '—', result, count];
      vals.forEach((v, i) => {
        const td = tr.insertCell();
        td.textContent = v;
        td.dataset.label = cols[i];
      });
    }
    el.loginsBody.replaceChildren(table);
  }

  function textP(text, cls) {
    const p = document.createElement('p');
    p.className = cls;
    p.textContent = text;
    return p;
  }

  // ---------------------------------------------------------------- dialogs

  function openDialog(d, trigger) {
    d.returnFocus = trigger && document.contains(trigger) ? trigger : null;
    d.showModal();
  }

  function dialogClosed(d) {
    const t = d.returnFocus;
    d.returnFocus = null;
    if (t && document.contains(t)) t.focus();
  }

  let confirmResolve = null;

  // confirmDialog asks before a change. It resolves to false (cancelled) or
  // {drop, reason} (confirmed; drop is the option's checkbox, reason what
  // goes to the audit trail, required when the server says so).
  function confirmDialog({ title, text, ok, dropOption }) {
    el.confirmTitle.textContent = title;
    el.confirmText.textContent = text;
    el.confirmOk.textContent = ok;
    el.confirmDropRow.hidden = !dropOption;
    el.confirmDropLabel.textContent = dropOption || '';
    el.confirmDrop.checked = true;
    const need = !!(state.me && state.me.require_reason);
    el.confirmReason.value = '';
    el.confirmReason.required = need;
    el.confirmReasonNeed.textContent = need ? '(required: recorded in the audit trail)' : '(optional: recorded in the audit trail)';
    el.confirmOk.disabled = need;
    openDialog(el.confirm, state.lastTrigger);
    // The safe choice has the focus, or the reason when one must be typed.
    (need ? el.confirmReason : el.confirmCancel).focus();
    return new Promise((resolve) => {
      confirmResolve = resolve;
    });
  }

  function finishConfirm(ok) {
    const resolve = confirmResolve;
    confirmResolve = null;
    const drop = el.confirmDrop.checked;
    const reason = el.confirmReason.value.trim();
    if (el.confirm.open) el.confirm.close();
    if (resolve) resolve(ok ? { drop, reason } : false);
  }

  // reasonBody is the optional body of a change that has no other input.
  function reasonBody(reason) {
    return reason ? { reason } : undefined;
  }

  // ---------------------------------------------------------------- menu

  function toggleMenu(trigger, itemsFn) {
    if (state.menu && state.menu.trigger === trigger) {
      closeMenu(true);
      return;
    }
    closeMenu();
    state.lastTrigger = trigger;
    const items = itemsFn();
    const m = el.menu;
    m.replaceChildren();
    const label = trigger.getAttribute('aria-label') || trigger.textContent;
    m.setAttribute('aria-label', label);
    for (const it of items) {
      const b = document.createElement('button');
      b.type = 'button';
      b.setAttribute('role', 'menuitem');
      b.tabIndex = -1;
      b.textContent = it.label;
      if (it.danger) b.classList.add('danger-item');
      if (it.disabled) {
        b.disabled = true;
        b.setAttribute('aria-disabled', 'true');
      }
      b.addEventListener('click', () => {
        closeMenu(false);
        it.run();
      });
      m.append(b);
    }
    m.hidden = false;
    trigger.setAttribute('aria-expanded', 'true');
    state.menu = { trigger };
    placeMenu(trigger);
    const first = m.querySelector('button:not([disabled])');
    if (first) first.focus();
  }

  function placeMenu(trigger) {
    const m = el.menu;
    const r = trigger.getBoundingClientRect();
    const mw = m.offsetWidth;
    const mh = m.offsetHeight;
    let left = r.right - mw;
    if (left < 4) left = 4;
    if (left + mw > window.innerWidth - 4) left = Math.max(4, window.innerWidth - mw - 4);
    let top = r.bottom + 4;
    if (top + mh > window.innerHeight - 4 && r.top - mh - 4 > 0) top = r.top - mh - 4;
    m.style.left = left + 'px';
    m.style.top = top + 'px';
  }

  function closeMenu(refocus) {
    if (!state.menu) return;
    const t = state.menu.trigger;
    state.menu = null;
    el.menu.hidden = true;
    el.menu.replaceChildren();
    t.setAttribute('aria-expanded', 'false');
    if (refocus && document.contains(t)) t.focus();
  }

  function menuKeys(ev) {
    const items = [...el.menu.querySelectorAll('button:not([disabled])')];
    const i = items.indexOf(document.activeElement);
    let j = -1;
    switch (ev.key) {
      case 'ArrowDown': j = (i + 1) % items.length; break;
      case 'ArrowUp': j = (i - 1 + items.length) % items.length; break;
      case 'Home': j = 0; break;
      case 'End': j = items.length - 1; break;
      case 'Escape':
        ev.preventDefault();
        closeMenu(true);
        return;
      case 'Tab':
        closeMenu(true);
        ev.preventDefault();
        return;
      default:
        return;
    }
    ev.preventDefault();
    if (items[j]) items[j].focus();
  }

  // ---------------------------------------------------------------- notices

  function showStatus(text) {
    el.status.textContent = text;
    el.status.hidden = false;
  }

  function showError(text) {
    el.error.textContent = text;
    el.error.hidden = false;
  }

  function hideError() {
    el.error.hidden = true;
    el.error.textContent = '';
  }

  function hideNotices() {
    el.status.hidden = true;
    el.status.textContent = '';
    hideError();
  }

  function describe(e) {
    return e instanceof ApiError ? e.describe() : String(e && e.message ? e.message : e);
  }

  // ---------------------------------------------------------------- auto-refresh

  function startAuto() {
    stopAuto();
    if (!el.auto.checked || !state.token) return;
    const every = Number(el.autoEvery.value) * 1000;
    state.timer = setInterval(() => {
      // Never pull the rows from under an open menu or dialog, or while
      // something is loading.
      if (document.hidden || state.menu || el.confirm.open || el.ips.open || el.audit.open || el.devices.open || state.busy > 0) return;
      refresh();
    }, every);
  }

  function stopAuto() {
    if (state.timer) clearInterval(state.timer);
    state.timer = 0;
  }

  // ---------------------------------------------------------------- formatting

  const intFmt = new Intl.NumberFormat();
  const fmtInt = (n) => intFmt.format(n);
  const plural = (n, word) => fmtInt(n) + ' ' + word + (n === 1 ? '' : 's');

  function protoLabel(p) {
    return PROTOCOL_LABELS[p] || p;
  }

  function fmtTime(iso) {
    const t = new Date(iso);
    if (Number.isNaN(t.getTime())) return String(iso);
    return t.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
  }

  function fmtDuration(s) {
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const sec = s % 60;
    const two = (n) => String(n).padStart(2, '0');
    return (h > 0 ? h + ':' + two(m) : String(m)) + ':' + two(sec);
  }

  // ---------------------------------------------------------------- start

  function init() {
    for (const id of ['main', 'login', 'signout', 'whoami', 'audit', 'tabs', 'panel', 'refresh', 'auto', 'updated', 'filter', 'status', 'error',
      'grid', 'rows', 'empty', 'prev', 'next', 'menu', 'confirm', 'ips', 'devices', 'token', 'cluster']) el[id] = $(id);
    Object.assign(el, {
      loginForm: $('login-form'), loginMsg: $('login-msg'), autoEvery: $('auto-every'), selinfo: $('selinfo'),
      selectMatching: $('select-matching'), selectNone: $('select-none'), selActions: $('sel-actions'),
      selectPage: $('select-page'), pageinfo: $('pageinfo'), pageSize: $('page-size'),
      confirmTitle: $('confirm-title'), confirmText: $('confirm-text'), confirmOk: $('confirm-ok'),
      confirmCancel: $('confirm-cancel'), confirmDrop: $('confirm-drop'), confirmDropRow: $('confirm-drop-row'),
      auditOpen: $('audit-open'), auditForm: $('audit-form'), auditActor: $('audit-actor'), auditTarget: $('audit-target'),
      auditSince: $('audit-since'), auditBody: $('audit-body'), auditClose: $('audit-close'),
      loginsTitle: $('logins-title'), loginsBody: $('logins-body'),
      clusterSummary: $('cluster-summary'), clusterAnswered: $('cluster-answered'), clusterNodes: $('cluster-nodes'),
      clusterDegraded: $('cluster-degraded'),
      devicesTitle: $('devices-title'), devicesMsg: $('devices-msg'), devicesBody: $('devices-body'),
      devicesClose: $('devices-close'), devicesRefresh: $('devices-refresh'),
      confirmDropLabel: $('confirm-drop-label'), confirmReason: $('confirm-reason'), confirmReasonNeed: $('confirm-reason-need'), ipsTitle: $('ips-title'), ipsBody: $('ips-body'), ipsClose: $('ips-close'),
    });

    buildTabs();
    const fromHash = decodeURIComponent(location.hash.slice(1));
    if (TABS.some((t) => t.key === fromHash)) state.tab = fromHash;

    el.loginForm.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const tok = el.token.value.trim();
      if (tok) connect(tok);
    });
    el.signout.addEventListener('click', () => {
      sessionStorage.removeItem(TOKEN_KEY);
      state.token = '';
      showLogin('');
    });
    el.refresh.addEventListener('click', () => {
      hideNotices();
      refresh({ clearGhosts: true });
    });
    el.auto.addEventListener('change', startAuto);
    el.autoEvery.addEventListener('change', startAuto);

    let filterTimer = 0;
    el.filter.addEventListener('input', () => {
      clearTimeout(filterTimer);
      filterTimer = setTimeout(() => {
        state.filter = el.filter.value.trim().toLowerCase();
        state.page = 0;
        applyFilter();
        render();
      }, 150);
    });
    el.prev.addEventListener('click', () => {
      if (state.page > 0) state.page--;
      render();
    });
    el.next.addEventListener('click', () => {
      state.page++;
      applyFilter();
      render();
    });
    el.pageSize.addEventListener('change', () => {
      state.pageSize = Number(el.pageSize.value) || 100;
      state.page = 0;
      applyFilter();
      render();
    });

    el.selectPage.addEventListener('change', () => {
      const start = state.page * state.pageSize;
      for (const r of state.filtered.slice(start, start + state.pageSize)) {
        if (el.selectPage.checked) state.selected.add(r.key);
        else state.selected.delete(r.key);
      }
      render();
    });
    el.selectMatching.addEventListener('click', () => {
      for (const r of state.filtered) state.selected.add(r.key);
      render();
      el.selActions.focus();
    });
    el.selectNone.addEventListener('click', () => {
      state.selected.clear();
      render();
      el.selectPage.focus();
    });
    el.selActions.addEventListener('click', () => toggleMenu(el.selActions, selectionActions));

    el.menu.addEventListener('keydown', menuKeys);
    document.addEventListener('mousedown', (ev) => {
      if (state.menu && !el.menu.contains(ev.target) && ev.target !== state.menu.trigger
        && !state.menu.trigger.contains(ev.target)) closeMenu(false);
    });
    document.addEventListener('keydown', (ev) => {
      if (ev.key === 'Escape' && state.menu) {
        ev.preventDefault();
        closeMenu(true);
      }
    });
    window.addEventListener('resize', () => closeMenu(false));
    window.addEventListener('scroll', () => {
      if (state.menu) placeMenu(state.menu.trigger);
    }, true);

    el.confirmOk.addEventListener('click', () => finishConfirm(true));
    el.confirmReason.addEventListener('input', () => {
      if (el.confirmReason.required) el.confirmOk.disabled = el.confirmReason.value.trim() === '';
    });
    el.confirmReason.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && !el.confirmOk.disabled) {
        ev.preventDefault();
        finishConfirm(true);
      }
    });
    el.confirmCancel.addEventListener('click', () => finishConfirm(false));
    el.confirm.addEventListener('cancel', () => {
      // Escape: the dialog closes itself; resolve as cancelled.
      const resolve = confirmResolve;
      confirmResolve = null;
      if (resolve) resolve(false);
    });
    el.confirm.addEventListener('close', () => {
      if (confirmResolve) finishConfirm(false);
      dialogClosed(el.confirm);
    });
    el.ipsClose.addEventListener('click', () => el.ips.close());
    el.devicesClose.addEventListener('click', () => el.devices.close());
    el.devicesRefresh.addEventListener('click', () => {
      el.devicesMsg.hidden = true;
      loadDevices();
    });
    el.devices.addEventListener('close', () => {
      state.devicesUser = '';
      dialogClosed(el.devices);
    });
    el.ips.addEventListener('close', () => dialogClosed(el.ips));
    el.auditOpen.addEventListener('click', () => {
      openDialog(el.audit, el.auditOpen);
      loadAudit();
    });
    el.auditForm.addEventListener('submit', (ev) => {
      ev.preventDefault();
      loadAudit();
    });
    el.auditClose.addEventListener('click', () => el.audit.close());
    el.audit.addEventListener('close', () => dialogClosed(el.audit));
    for (const d of [el.confirm, el.ips, el.audit, el.devices]) {
      // A click on the backdrop (outside the dialog's box) closes it.
      d.addEventListener('click', (ev) => {
        if (ev.target !== d) return;
        const r = d.getBoundingClientRect();
        if (ev.clientX < r.left || ev.clientX > r.right || ev.clientY < r.top || ev.clientY > r.bottom) d.close();
      });
    }

    state.token = sessionStorage.getItem(TOKEN_KEY) || '';
    render();
    if (state.token) {
      showMain();
      loadMe().then(() => {
        if (!state.token) return;
        refresh({ clearGhosts: true });
        startAuto();
      });
    } else {
      showLogin('');
    }
  }

  init();
})();
