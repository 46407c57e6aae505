// Socket.IO 4 cluster peer for benchmarks: socketio-server.mjs with @socket.io/redis-adapter, so
// that a `pub` on one node reaches the room's members on every node (the adapter publishes each
// broadcast on a Redis channel that every node subscribes to, and each node emits it to its
// local members). Rooms stand for topics.
// Install: npm ci (this folder)
// Start:   PORT=9300 REDIS_URL=redis://127.0.0.1:6390 node socketio-cluster.mjs   (one per node)
// URL:     ws://127.0.0.1:9300/socket.io/?EIO=4&transport=websocket
import { Server } from "socket.io";
import { createAdapter } from "@socket.io/redis-adapter";
import { createClient } from "redis";

const port = Number(process.env.PORT || 9300);
const url = process.env.REDIS_URL || "redis://127.0.0.1:6390";
const pub = createClient({ url });
const sub = pub.duplicate();
for (const c of [pub, sub]) c.on("error", (e) => console.error("redis:", e.message));
await Promise.all([pub.connect(), sub.connect()]);

const io = new Server(port, { serveClient: false, adapter: createAdapter(pub, sub) });
io.on("connection", (s) => {
  s.on("sub", (room, ack) => { s.join(room); ack && ack("ok"); });
  s.on("pub", (room, data) => { io.to(room).emit("msg", data); });
});
console.log("socket.io (redis adapter", url + ") on", port);
