"""Request bodies of the HTTP API as pydantic models (also the source of their OpenAPI schemas)."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

ID_PATTERN = r"^[A-Za-z0-9._:\-]{1,128}$"


class PromptRequest(BaseModel):
    """POST /prompt: queue an API-format workflow."""

    model_config = ConfigDict(extra="allow", strict=True)

    prompt: dict[str, Any] = Field(description="API-format workflow: nodes by id")
    client_id: str | None = Field(default=None, max_length=128,
                                  description="the /ws clientId that should receive this prompt's events")
    prompt_id: str | None = Field(default=None, pattern=ID_PATTERN, description="defaults to a new UUID")
    extra_data: dict[str, Any] = Field(default_factory=dict)
    number: float | None = Field(default=None, allow_inf_nan=False, description="queue priority (lower first)")
    front: bool = Field(default=False, description="run before everything already queued")


class QueueAction(BaseModel):
    """POST /queue and POST /history: clear everything and/or delete some prompt ids."""

    model_config = ConfigDict(strict=True)

    clear: bool = False
    delete: list[str] = Field(default_factory=list, max_length=10000)


class InterruptRequest(BaseModel):
    model_config = ConfigDict(strict=True)

    prompt_id: str | None = Field(default=None, max_length=128,
                                  description="interrupt only if this prompt is the one running")


class FreeRequest(BaseModel):
    model_config = ConfigDict(strict=True)

    unload_models: bool = False
    free_memory: bool = False


class PromptBatchRequest(BaseModel):
    """POST /prompt/batch: queue many prompts in one request, all or none.

    Either one workflow with a list of `overrides` (each `{"NODE.input": value}`, NODE an id, a unique title or
    class, as `sdgraph run --set` takes them; one prompt per entry), or a list of workflows in `prompts`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: dict[str, Any] | None = Field(default=None, description="API-format or UI workflow the overrides apply to")
    overrides: list[dict[str, Any]] = Field(default_factory=list, max_length=10000,
                                            description="one prompt per entry: {'NODE.input': value, ...}")
    prompts: list[dict[str, Any]] = Field(default_factory=list, max_length=10000,
                                          description="API-format workflows, one prompt each")
    client_id: str | None = Field(default=None, max_length=128)
    extra_data: dict[str, Any] = Field(default_factory=dict)
    front: bool = Field(default=False, description="run before everything already queued (in the given order)")
