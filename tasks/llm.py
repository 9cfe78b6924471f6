"""The chat model, chosen by configuration: Bedrock through langchain-aws in production,
or replay — answers read from response files kept in the repository, in the exact shape of
a Bedrock Converse response — for the offline demo and the tests. Every result records
which (`model: "replay:<file>"` for replays). Any other LangChain chat model plugs in the
same way: `ask` takes a BaseChatModel."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import BaseModel, Field

from blocks.errors import AnnapurnaError, ConfigError
from blocks.settings import Settings

RETRYABLE_CODES = {"ThrottlingException", "TooManyRequestsException", "ServiceUnavailableException",
                   "InternalServerException", "ModelNotReadyException", "ServiceQuotaExceededException"}


class LLMError(AnnapurnaError):
    """The model's answer could not be used."""


class Usage(BaseModel):
    """Tokens of one or more calls and what they cost."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    dollars: float = 0.0

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(**{k: getattr(self, k) + getattr(other, k) for k in Usage.model_fields})


class Answer(BaseModel):
    text: str
    model: str
    usage: Usage


def is_retryable(exc: BaseException) -> bool:
    """Bedrock throttling and 5xx: worth a Prefect task retry with backoff."""
    response = getattr(exc, "response", None) or {}
    code = response.get("Error", {}).get("Code")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return code in RETRYABLE_CODES or status >= 500


def retry_condition(task, task_run, state) -> bool:
    """Prefect `retry_condition_fn`: retry only what is worth retrying."""
    try:
        state.result(_sync=True)  # also from async tasks, where result() would be a coroutine
    except Exception as e:  # noqa: BLE001 - we classify, then decide
        return is_retryable(e)
    return False


# -- replay ------------------------------------------------------------------------------
REPLAY_KEY = re.compile(r"^Replay-Key: (\S+)$", re.M)
_cursors: dict[str, int] = {}
_cursor_lock = threading.Lock()


def replay_key(stage: str, paper_id: str, attempt: int = 1) -> str:
    """The file a replay answers from: <stage>/<paper id made a path>[.<attempt>].json."""
    slug = re.sub(r"[^A-Za-z0-9._-]", "_", paper_id)
    return f"{stage}/{slug}" + (f".{attempt}" if attempt > 1 else "")


class ReplayChatModel(BaseChatModel):
    """Answers from recorded Bedrock Converse responses. The prompt's `Replay-Key:` line
    names the file; a file holding a list is answered in order (the last repeats), and an
    entry `{"error": {"Code": ..., "Message": ...}}` raises what Bedrock would raise."""

    directory: Path
    log: Path | None = None

    @property
    def _llm_type(self) -> str:
        return "annapurna-replay"

    def _generate(self, messages: list[BaseMessage], stop=None, run_manager=None, **kwargs: Any) -> ChatResult:
        text = "\n".join(str(m.content) for m in messages)
        keys = REPLAY_KEY.findall(text)
        if not keys:
            raise LLMError("replay model: the prompt has no Replay-Key line")
        key = keys[-1]
        path = self.directory / f"{key}.json"
        if not path.exists():
            stage = key.split("/", 1)[0]
            path = self.directory / stage / "default.json"
        if not path.exists():
            raise LLMError(f"replay model: no recorded response {key}.json (nor {stage}/default.json) in {self.directory}")
        entries = json.loads(path.read_text())
        entries = entries if isinstance(entries, list) else [entries]
        with _cursor_lock:
            at = _cursors.get(str(path), 0)
            _cursors[str(path)] = at + 1
        entry = entries[min(at, len(entries) - 1)]
        if self.log:
            with open(self.log, "a") as f:
                f.write(f"{key}\n")
        if "error" in entry:
            from botocore.exceptions import ClientError

            err = entry["error"]
            raise ClientError({"Error": err, "ResponseMetadata": {"HTTPStatusCode": err.get("HTTPStatusCode", 400)}},
                              "Converse")
        content = entry["output"]["message"]["content"]
        answer = "".join(block.get("text", "") for block in content)
        usage = entry.get("usage", {})
        message = AIMessage(
            content=answer,
            usage_metadata={
                "input_tokens": usage.get("inputTokens", 0), "output_tokens": usage.get("outputTokens", 0),
                "total_tokens": usage.get("totalTokens", 0),
                "input_token_details": {"cache_read": usage.get("cacheReadInputTokens", 0)},
            },
            response_metadata={"stopReason": entry.get("stopReason"), "model_name": f"replay:{path.relative_to(self.directory)}"},
        )
        return ChatResult(generations=[ChatGeneration(message=message)])


def reset_replay() -> None:
    """Start every replay file from its first entry again (tests)."""
    with _cursor_lock:
        _cursors.clear()


# -- construction and calls ---------------------------------------------------------------
def chat_model(s: Settings) -> BaseChatModel:
    if s.llm == "replay":
        if not s.llm_replay_dir.is_dir():
            raise ConfigError(f"ANNAPURNA_LLM_REPLAY_DIR={s.llm_replay_dir} is not a directory of recorded responses")
        return ReplayChatModel(directory=s.llm_replay_dir, log=s.llm_replay_log)
    from langchain_aws import ChatBedrockConverse

    return ChatBedrockConverse(model=s.llm_model, region_name=s.aws_region, temperature=s.llm_temperature,
                               max_tokens=s.llm_max_tokens)


def model_id(s: Settings) -> str:
    return f"replay:{s.llm_replay_dir.name}" if s.llm == "replay" else f"bedrock:{s.llm_model}"


def ask(model: BaseChatModel, system: str, user: str, s: Settings) -> Answer:
    """One model call, with its tokens and dollars."""
    message = model.invoke([SystemMessage(content=system), HumanMessage(content=user)])
    meta = message.usage_metadata or {}
    tin, tout = meta.get("input_tokens", 0), meta.get("output_tokens", 0)
    usage = Usage(calls=1, input_tokens=tin, output_tokens=tout,
                  cached_tokens=(meta.get("input_token_details") or {}).get("cache_read", 0) or 0,
                  dollars=(tin * s.llm_price_in_per_m + tout * s.llm_price_out_per_m) / 1e6)
    name = message.response_metadata.get("model_name") if s.llm == "replay" else f"bedrock:{s.llm_model}"
    return Answer(text=str(message.content), model=name or model_id(s), usage=usage)


def json_block(text: str) -> str:
    """The JSON object in an answer, with or without ```json fences around it."""
    fenced = re.search(r"```(?:json)?\s*(\{.*?\})\s*```", text, re.S)
    if fenced:
        return fenced.group(1)
    start, end = text.find("{"), text.rfind("}")
    return text[start : end + 1] if start >= 0 and end > start else text
