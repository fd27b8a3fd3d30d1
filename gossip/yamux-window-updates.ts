import { YamuxStream } from '@chainsafe/libp2p-yamux/stream'

/**
 * @chainsafe/libp2p-yamux 8 answers every data frame it receives with a window update frame, whatever is
 * left of the receive window. Every gossip message, heartbeat and sync frame thus costs a second frame the
 * other way — Noise-encrypted, pnet-encrypted and written to the socket — and on a busy fleet that doubled
 * the transport work (a tenth of a daemon's CPU during a partition heal, docs/benchmarks.md). The yamux spec
 * leaves the timing of updates to the receiver; Go's yamux (the reference) sends one only once half of the
 * window has been used, which is what this does: the sender still has at least half a window to send while
 * the update travels, so nothing stalls and nothing can deadlock.
 *
 * Opening (SYN/ACK flags) and resuming a paused stream are untouched: only established streams wait.
 */
interface YamuxStreamWindow {
  state: number
  recvWindow: number
  recvWindowCapacity: number
  sendWindowUpdate(): void
}

/** yamux's StreamState.Established (dist/src/stream.js); the enum is not exported. */
const ESTABLISHED = 3

let installed = false

export function sendYamuxWindowUpdatesAtHalf(): void {
  if (installed) return
  installed = true
  const proto = YamuxStream.prototype as unknown as YamuxStreamWindow
  const sendEveryTime = proto.sendWindowUpdate
  proto.sendWindowUpdate = function (this: YamuxStreamWindow) {
    if (this.state === ESTABLISHED && this.recvWindowCapacity * 2 > this.recvWindow) return
    sendEveryTime.call(this)
  }
}
