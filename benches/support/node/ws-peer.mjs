// A Node `ws` peer for benches/fanout.rs: relays a ratecast server's full feed to its own
// subscribers, the way a Node fan-out would (ws.send per client, each frame serialised once as a
// string). PEER_DEFLATE=1 turns on ws's perMessageDeflate (compressed per client: ws cannot share
// one compressed frame). Answers /readyz once it holds a snapshot, and /metrics with the bytes and
// frames written to subscriber sockets (ratecast's metric names, so the bench reads both alike).
//
// Usage: PORT=… UPSTREAM=ws://127.0.0.1:…/ws [PEER_DEFLATE=1] node ws-peer.mjs

import http from 'node:http';
import { WebSocket, WebSocketServer } from 'ws';

const port = Number(process.env.PORT);
const deflate = process.env.PEER_DEFLATE === '1';
let snapshot = null; // the last snapshot frame
let since = []; // deltas after it, so a new subscriber gets a contiguous feed
let frames = 0;
let bytesBefore = 0; // socket bytes of subscribers that left

const server = http.createServer((req, res) => {
  if (req.url === '/readyz' || req.url === '/healthz') {
    res.writeHead(snapshot ? 200 : 503).end();
  } else if (req.url === '/metrics') {
    let bytes = bytesBefore;
    for (const client of wss.clients) bytes += client._socket?.bytesWritten ?? 0;
    res.writeHead(200, { 'content-type': 'text/plain' })
      .end(`ratecast_ws_bytes_sent_total ${bytes}\nratecast_ws_frames_sent_total ${frames}\n`);
  } else {
    res.writeHead(404).end();
  }
});
const wss = new WebSocketServer({ server, path: '/ws', perMessageDeflate: deflate });
wss.on('connection', (ws) => {
  ws.on('error', () => {});
  ws.on('close', () => { bytesBefore += ws._socket?.bytesWritten ?? 0; });
  if (snapshot) {
    ws.send(snapshot);
    for (const delta of since) ws.send(delta);
    frames += 1 + since.length;
  }
});

const upstream = new WebSocket(process.env.UPSTREAM);
upstream.on('message', (data) => {
  const text = data.toString();
  const type = text.slice(0, 40).match(/"type":"(\w+)"/)?.[1];
  if (type === 'snapshot') {
    snapshot = text;
    since = [];
  } else if (type === 'delta') {
    since.push(text);
  }
  if (type !== 'snapshot') {
    for (const client of wss.clients) {
      if (client.readyState === WebSocket.OPEN) {
        client.send(text);
        frames += 1;
      }
    }
  }
});
upstream.on('close', () => process.exit(1));
server.listen(port, '127.0.0.1');
