// The streamcam page: one <img> per source fed by its own WebSocket (a frame per message, answered once shown, so
// the server sends the next only then), and a WebSocket for records (HUD, predictions) and controls.
"use strict";

const token = new URLSearchParams(location.search).get("token");
const withToken = (path) => (token ? `${path}?token=${encodeURIComponent(token)}` : path);
const $ = (id) => document.getElementById(id);
let controls = null; // the run's live controls, as the server last said
let tiles = [];
let videos = []; // one video socket per tile

function socketUrl(path) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${location.host}${withToken(location.pathname.replace(/[^/]*$/, "") + path)}`;
}

// Source `index` into its tile. Each message is one frame: a 4-byte length, that much JSON (its sequence number,
// how this browser is doing, and the frame's caption: what its predictions are), then the JPEG. Once the frame is
// decoded and painted its sequence number goes back, and only then does the server send the next. Without
// WebSockets: MJPEG.
function playVideo(index, tile) {
  const img = tile.querySelector(".video");
  const hud = tile.querySelector(".delivery");
  const socket = new WebSocket(socketUrl(`video/${index}`));
  socket.binaryType = "arraybuffer";
  let shown = null;
  socket.onmessage = async (event) => {
    const length = new DataView(event.data).getUint32(0);
    const stats = JSON.parse(new TextDecoder().decode(new Uint8Array(event.data, 4, length)));
    if (stats.latency_ms !== null) {
      hud.textContent = `${stats.latency_ms.toFixed(0)} ms from capture to this browser · ${stats.skipped} skipped here`;
    }
    const url = URL.createObjectURL(new Blob([new Uint8Array(event.data, 4 + length)], { type: "image/jpeg" }));
    img.src = url;
    try {
      await img.decode();
    } catch (error) {
      // a frame that cannot be decoded is still answered: the stream goes on
    }
    socket.captioned = true;
    showPredictions(tile, stats.caption.predictions);
    if (shown) URL.revokeObjectURL(shown);
    shown = url;
    requestAnimationFrame(() => socket.readyState === WebSocket.OPEN && socket.send(String(stats.sequence)));
  };
  socket.onerror = () => { if (!shown) img.src = withToken(`stream/${index}.mjpg`); };
  return socket;
}

function addSources(sources) {
  const main = $("sources");
  main.replaceChildren();
  videos.forEach((socket) => socket.close());
  tiles = sources.map((source, index) => {
    const tile = $("source").content.firstElementChild.cloneNode(true);
    tile.querySelector(".name").textContent = source.name;
    tile.querySelector(".snapshot").href = withToken(`snapshot/${index}.png`);
    main.append(tile);
    return tile;
  });
  videos = tiles.map((tile, index) => playVideo(index, tile));
}

function showRecord(record) {
  const tile = tiles[record.source];
  if (!tile) return;
  tile.querySelector(".hud").textContent =
    `${record.method} | ${record.engine} · ${record.fps.toFixed(1)} fps · ` +
    `${record.latency_ms.toFixed(0)} ms capture to server · ` +
    `${record.dropped} dropped · frame ${record.frame}`;
  if (!videos[record.source] || !videos[record.source].captioned) showPredictions(tile, record.predictions);
}

// The list under a video: the predictions of the frame on screen (from its own message), or, over MJPEG, the latest.
function showPredictions(tile, predictions) {
  const explained = controls ? controls.class_index : 0;
  tile.querySelector(".predictions").replaceChildren(...predictions.map((p, i) => {
    const item = document.createElement("li");
    item.textContent = `${p.label}  ${(100 * p.score).toFixed(1)} %`;
    item.dataset.classId = p.class_id;
    if (i === explained) item.className = "explained";
    return item;
  }));
}

function showControls(state) {
  controls = state;
  const method = $("method");
  method.replaceChildren(...state.methods.map((name) => new Option(name, name, false, name === state.method)));
  const classIndex = $("class_index");
  classIndex.replaceChildren(...Array.from({ length: state.top_k },
    (_, i) => new Option(i === 0 ? "top class" : `class ${i + 1}`, i, false, i === state.class_index)));
  $("grid").checked = state.grid;
  $("grid").parentElement.hidden = !state.grid_available;
  $("alpha").value = state.alpha;
  $("alpha_value").textContent = state.alpha.toFixed(2);
  $("boxes").checked = state.boxes;
}

function connect() {
  const socket = new WebSocket(socketUrl("ws"));
  const send = (message) => socket.readyState === WebSocket.OPEN && socket.send(JSON.stringify(message));
  $("method").onchange = (e) => send({ method: e.target.value });
  $("class_index").onchange = (e) => send({ class_index: Number(e.target.value) });
  $("grid").onchange = (e) => send({ grid: e.target.checked });
  $("alpha").oninput = (e) => send({ alpha: Number(e.target.value) });
  $("boxes").onchange = (e) => send({ boxes: e.target.checked });
  socket.onopen = () => { $("status").textContent = "live"; };
  socket.onclose = () => { $("status").textContent = "disconnected: the run has ended or the server is gone"; };
  socket.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "state") {
      addSources(message.sources);
      if (message.controls) showControls(message.controls);
      else $("controls").hidden = true;
      message.sources.forEach((source, index) => source.frames && showRecord({ source: index, ...source }));
    } else if (message.type === "record") {
      showRecord(message);
    } else if (message.type === "controls") {
      $("error").textContent = "";
      showControls(message);
    } else if (message.type === "error") {
      $("error").textContent = message.message;
    }
  };
}

connect();
