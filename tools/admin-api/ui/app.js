// The fleet dashboard: loads the catalog once, then follows the event stream (SSE) and applies each
// event to its local copy, the same way the proxy's routing index does. No reloads, no polling of the
// catalog; nodes' liveness and RTT are refreshed every few seconds because they are not catalog events.
const state = { apps: new Map(), machines: new Map(), nodes: new Map(), load: new Map(), events: [], seq: 0 }
const MAX_EVENTS = 50

const $ = (sel) => document.querySelector(sel)
const text = (v) => (v === undefined || v === null || v === '' ? '–' : String(v))
function cell(value, className) {
  const td = document.createElement('td')
  td.textContent = text(value)
  if (className) td.className = className
  return td
}
function row(cells, key) {
  const tr = document.createElement('tr')
  tr.dataset.key = key
  for (const c of cells) tr.append(c)
  return tr
}
function ago(ms) {
  if (!ms) return '–'
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000))
  return s < 60 ? `${s}s ago` : s < 3600 ? `${Math.round(s / 60)}m ago` : `${Math.round(s / 3600)}h ago`
}
function health(m) {
  const values = Object.values(m.checks ?? {})
  if (values.length === 0) return '–'
  return values.includes('critical') ? 'critical' : values.includes('warning') ? 'warning' : 'passing'
}

function render() {
  $('#seq').textContent = `seq ${state.seq}`
  $('#nodes tbody').replaceChildren(...[...state.nodes.values()].sort((a, b) => a.name.localeCompare(b.name)).map((n) => {
    const status = n.status === 'left' ? 'left' : n.up === false ? 'down' : 'up'
    return row([cell(n.name + (n.self ? ' (this node)' : '')), cell(n.region), cell(n.roles.join(', ')), cell(status, status), cell(n.rttMs === undefined ? undefined : `${n.rttMs.toFixed(1)} ms`), cell(ago(n.lastSeen))], n.name)
  }))
  $('#apps tbody').replaceChildren(...[...state.apps.values()].sort((a, b) => a.name.localeCompare(b.name)).map((a) => {
    const ports = [...new Set(a.config.services.flatMap((s) => s.ports.map((p) => (p.start_port === p.end_port ? p.start_port : `${p.start_port}-${p.end_port}`))))]
    const count = [...state.machines.values()].filter((m) => m.app === a.name).length
    return row([cell(a.name), cell(a.version), cell(a.config.primary_region), cell(ports.join(', ')), cell(count), cell(a.hostnames.join(', '))], a.name)
  }))
  $('#machines tbody').replaceChildren(...[...state.machines.values()].sort((a, b) => a.app.localeCompare(b.app) || a.id.localeCompare(b.id)).map((m) => {
    const h = health(m)
    return row([cell(m.id, 'id'), cell(m.app), cell(m.region), cell(m.node), cell(m.state, `state-${m.state}`), cell(m.desired + (m.cordoned ? ' (cordoned)' : '')), cell(h, h), cell(m.ready ? 'yes' : 'no'), cell(state.load.get(m.id)), cell(m.privateAddr), cell(m.stateReason)], m.id)
  }))
  $('#events').replaceChildren(...state.events.map((e) => {
    const li = document.createElement('li')
    li.value = e.seq
    li.textContent = `${new Date(e.ts).toLocaleTimeString()} ${e.origin} ${e.type} ${describe(e)}`
    return li
  }))
}

function describe(e) {
  switch (e.type) {
    case 'app.upserted': return `${e.app.name} v${e.app.version}`
    case 'machine.upserted': return `${e.machine.app}/${e.machine.id} desired=${e.machine.desired}`
    case 'machine.state': return `${e.app}/${e.machineId} ${e.previous} → ${e.state} (${e.reason})`
    case 'health.changed': return `${e.app}/${e.machineId} ready=${e.ready}`
    case 'machine.removed': return `${e.app}/${e.machineId}`
    case 'node.joined': case 'node.updated': return e.node.name
    default: return e.app ?? e.node ?? e.docId ?? ''
  }
}

function apply(e) {
  switch (e.type) {
    case 'app.upserted': state.apps.set(e.app.name, e.app); break
    case 'app.removed': state.apps.delete(e.app); break
    case 'machine.upserted': state.machines.set(e.machine.id, e.machine); break
    case 'machine.state': { const m = state.machines.get(e.machineId); if (m) state.machines.set(m.id, { ...m, state: e.state, stateReason: e.reason, privateAddr: e.privateAddr ?? m.privateAddr }); break }
    case 'health.changed': { const m = state.machines.get(e.machineId); if (m) state.machines.set(m.id, { ...m, checks: e.checks, ready: e.ready }); break }
    case 'machine.removed': state.machines.delete(e.machineId); break
    case 'node.joined': case 'node.updated': state.nodes.set(e.node.name, { ...state.nodes.get(e.node.name), ...e.node }); break
    case 'node.left': { const n = state.nodes.get(e.node); if (n) state.nodes.set(n.name, { ...n, status: 'left' }); break }
    case 'node.down': { const n = state.nodes.get(e.node); if (n) state.nodes.set(n.name, { ...n, up: false }); break }
    case 'node.up': { const n = state.nodes.get(e.node); if (n) state.nodes.set(n.name, { ...n, up: true }); break }
  }
  state.seq = e.seq
  state.events.unshift(e)
  state.events.length = Math.min(state.events.length, MAX_EVENTS)
}

async function getJson(path) {
  const res = await fetch(path, { headers: { accept: 'application/json' } })
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`)
  return res.json()
}

async function refreshNodes() {
  try {
    for (const n of await getJson('/v1/nodes')) state.nodes.set(n.name, n)
    const load = await fetch('/v1/load').then((r) => (r.ok ? r.json() : {})).catch(() => ({}))
    state.load = new Map(Object.entries(load))
    render()
  } catch { /* the stream indicator already shows the node is unreachable */ }
}

async function start() {
  const health = await getJson('/healthz')
  $('#self').textContent = `${health.node} · ${health.region}`
  const [apps, machines] = await Promise.all([getJson('/v1/apps'), getJson('/v1/machines')])
  // the snapshot is as of health.seq at the latest; events after it are applied from the stream
  for (const a of apps) state.apps.set(a.name, a)
  for (const m of machines) state.machines.set(m.id, m)
  state.seq = health.seq
  await refreshNodes()
  const from = Math.max(1, health.seq - MAX_EVENTS + 1)
  const source = new EventSource(`/v1/events?follow=1&from=${from}`)
  source.onopen = () => { $('#stream').textContent = 'live'; $('#stream').className = 'pill live' }
  source.onerror = () => { $('#stream').textContent = 'reconnecting…'; $('#stream').className = 'pill down' }
  source.onmessage = (m) => { apply(JSON.parse(m.data)); render() }
  for (const type of ['app.upserted', 'app.removed', 'machine.upserted', 'machine.state', 'machine.removed', 'health.changed', 'node.joined', 'node.updated', 'node.left', 'node.down', 'node.up', 'cert.upserted', 'cert.removed', 'catalog.quarantined']) {
    source.addEventListener(type, (m) => { apply(JSON.parse(m.data)); render() })
  }
  setInterval(refreshNodes, 3000)
  render()
}

start().catch((err) => { $('#stream').textContent = `error: ${err.message}`; $('#stream').className = 'pill down' })
