// The llmapi playground: chat with the text model, or ask the image model about a picture,
// watching the answer stream in over Server-Sent Events. No build step, no third-party code.
"use strict";

const $ = (id) => document.getElementById(id);
const conversation = [];  // {role, content} turns of the text chat, oldest first

const keyInput = $("api-key");
keyInput.value = sessionStorage.getItem("llmapi-key") || "";
keyInput.addEventListener("input", () => sessionStorage.setItem("llmapi-key", keyInput.value.trim()));

for (const [slider, output] of [["temperature", "temperature-value"], ["max-tokens", "max-tokens-value"]]) {
  $(slider).addEventListener("input", () => { $(output).textContent = $(slider).value; updateCurl(); });
}

const mode = () => document.querySelector("input[name=mode]:checked").value;
for (const radio of document.querySelectorAll("input[name=mode]")) {
  radio.addEventListener("change", () => { $("image-picker").hidden = mode() !== "image"; updateCurl(); });
}

$("new-chat").addEventListener("click", () => {
  conversation.length = 0;
  $("messages").replaceChildren();
  $("status").textContent = "";
});

$("show-curl").addEventListener("click", () => {
  const panel = $("curl-panel");
  panel.hidden = !panel.hidden;
  $("show-curl").textContent = panel.hidden ? "Show curl" : "Hide curl";
  $("show-curl").setAttribute("aria-expanded", String(!panel.hidden));
  updateCurl();
  if (!panel.hidden) panel.scrollIntoView({ block: "nearest" });
});
$("prompt").addEventListener("input", updateCurl);
$("seed").addEventListener("input", updateCurl);

// The parameters as the person set them (a seed only when they typed one).
function params() {
  const chosen = { temperature: Number($("temperature").value), max_tokens: Number($("max-tokens").value) };
  const seed = $("seed").value.trim();
  if (seed !== "") chosen.seed = Number(seed);
  return chosen;
}

// The parameters for one request. Above temperature 0, without a seed of the person's own, each
// request gets a fresh random one: the server's default seed is fixed, and would give the same
// "random" answer to every Ask again.
function requestParams() {
  const chosen = params();
  if (chosen.seed === undefined && chosen.temperature > 0) {
    chosen.seed = crypto.getRandomValues(new Uint32Array(1))[0] % 2147483648;
  }
  return chosen;
}

function updateCurl() {
  if ($("curl-panel").hidden) return;
  const origin = window.location.origin;
  const prompt = $("prompt").value || "What is the capital of France?";
  const quote = (text) => "'" + text.replaceAll("'", "'\\''") + "'";
  if (mode() === "image") {
    const p = params();
    $("curl").textContent = `curl -N -X POST ${origin}/image_model/chat/stream \\\n  -H "X-API-Key: $API_KEY" \\\n` +
      `  -F "image=@photo.jpg" -F ${quote("prompt=" + prompt)} \\\n  -F "temperature=${p.temperature}" -F "max_tokens=${p.max_tokens}"`;
  } else {
    const body = JSON.stringify({ messages: [...conversation, { role: "user", content: prompt }], ...params() });
    $("curl").textContent = `curl -N -X POST ${origin}/text_model/chat/stream \\\n  -H "Content-Type: application/json" \\\n` +
      `  -H "X-API-Key: $API_KEY" \\\n  -d ${quote(body)}`;
  }
}

function addMessage(role, text) {
  const item = document.createElement("li");
  item.className = role;
  const label = document.createElement("span");
  label.className = "role";
  label.textContent = role === "assistant" ? "model" : role;
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  item.append(label, body);
  $("messages").append(item);
  item.scrollIntoView({ block: "end" });
  return body;
}

// Read a text/event-stream response, calling onEvent(name, data) for each event.
async function readEvents(response, onEvent) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) !== -1) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
      }
      onEvent(name, data.join("\n"));
    }
  }
}

let lastQuestion = null;  // {mode, prompt, file}: what "Ask again" asks again
let lastAnswer = null;  // the <li> of the latest answer, replaced by "Ask again"

$("composer").addEventListener("submit", async (event) => {
  event.preventDefault();
  const prompt = $("prompt").value.trim();
  if (!prompt) return;
  if (!keyInput.value.trim()) { $("status").textContent = "Paste your API key first."; keyInput.focus(); return; }
  const file = $("image").files[0];
  if (mode() === "image" && !file) { $("status").textContent = "Choose a picture first."; return; }
  if (mode() === "text") conversation.push({ role: "user", content: prompt });
  addMessage("user", prompt);
  $("prompt").value = "";
  await ask({ mode: mode(), prompt, file });
});

$("ask-again").addEventListener("click", async () => {
  if (!lastQuestion) return;
  // The new answer takes the old one's place, in the page and in the conversation.
  if (lastQuestion.mode === "text") {
    if (conversation.at(-1)?.role === "assistant") conversation.pop();
    // After a failure the question left the conversation (see below): it goes back in.
    if (conversation.at(-1)?.role !== "user") conversation.push({ role: "user", content: lastQuestion.prompt });
  }
  lastAnswer?.remove();
  await ask(lastQuestion);
});

async function ask(question) {
  const key = keyInput.value.trim();
  const sent = requestParams();
  let request;
  if (question.mode === "image") {
    const form = new FormData();
    form.append("image", question.file);
    form.append("prompt", question.prompt);
    for (const [name, value] of Object.entries(sent)) form.append(name, String(value));
    request = { url: "/image_model/chat/stream", body: form, headers: {} };
  } else {
    request = {
      url: "/text_model/chat/stream",
      body: JSON.stringify({ messages: conversation, ...sent }),
      headers: { "Content-Type": "application/json" },
    };
  }
  lastQuestion = question;
  $("send").disabled = true;
  $("ask-again").disabled = true;
  $("status").textContent = "Waiting for the model…";
  const answer = addMessage("assistant", "");
  lastAnswer = answer.parentElement;
  const seedNote = sent.seed === undefined ? "" : `seed ${sent.seed}`;
  if (seedNote) {
    const label = document.createElement("span");
    label.className = "seed";
    label.textContent = seedNote;
    answer.previousElementSibling.append(label);
  }
  let text = "";
  try {
    const response = await fetch(request.url, {
      method: "POST",
      body: request.body,
      headers: { ...request.headers, "X-API-Key": key, Accept: "text/event-stream" },
    });
    if (!response.ok) {
      const error = await response.json().catch(() => ({ detail: response.statusText }));
      throw new Error(`${response.status}: ${error.detail}`);
    }
    $("status").textContent = "Writing…";
    await readEvents(response, (name, data) => {
      if (data === "[DONE]") return;
      const payload = JSON.parse(data);
      if (name === "error") throw new Error(payload.detail);
      if (payload.delta !== undefined) {
        text += payload.delta;
        answer.textContent = text;
      } else if ("finish_reason" in payload) {
        const tokens = payload.usage ? `, ${payload.usage.completion_tokens} tokens` : "";
        $("status").textContent = `Done (${payload.finish_reason})${tokens}${seedNote ? ", " + seedNote : ""}.`;
      }
    });
    if (question.mode === "text") conversation.push({ role: "assistant", content: text });
  } catch (error) {
    answer.parentElement.classList.add("error");
    answer.textContent = text + (text ? "\n" : "") + error.message;
    $("status").textContent = "";
    if (question.mode === "text" && !text) conversation.pop();
  } finally {
    $("send").disabled = false;
    $("ask-again").disabled = false;
    $("ask-again").hidden = false;
    updateCurl();
  }
}
