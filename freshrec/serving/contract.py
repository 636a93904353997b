"""Request and response bodies of the HTTP contract (ARCHITECTURE.md), validated by pydantic.

Strict types: ``"k": "10"`` or ``"user_id": 42`` is a 422 naming the field, not a silent coercion.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from freshrec.core.schemas import EVENT_TYPES

UserId = Field(min_length=1, max_length=256, description="the caller's user id; unknown users get a cold-start list")


class RecommendRequest(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"user_id": "42", "k": 10, "exclude_seen": True},
                                                              {"user_id": "42", "k": 5, "explain": True}]})
    user_id: StrictStr = UserId
    k: StrictInt = Field(10, ge=1, le=1000, description="how many items to return")
    exclude_seen: StrictBool = Field(True, description="drop items the user already interacted with")
    explain: StrictBool = Field(False, description="add each item's `contributors`: the history items that raised "
                                "its score most. Costs one extra model call of history length + 1 rows; not cached")


class Contributor(BaseModel):
    item_id: str = Field(description="an item of the user's history")
    contribution: float = Field(description="how much this history item raises the recommended item's score: the "
                                "served model re-scores the full history and, in the same call, the history "
                                "without this item; this is the difference (same scale as `score`, so `score - "
                                "contribution` is the score without it, up to int8 rounding; negative when the "
                                "item pulls it down)")


class ScoredItem(BaseModel):
    item_id: str
    score: float = Field(description="the probability (0..1) that this item is the user's next interaction, on "
                         "one scale for every reason: personalised, the model's softmax share over its candidate "
                         "set (the catalogue, or the serving.max_candidates most popular items); cold_start and "
                         "fallback, the item's share of the snapshot's interactions. /v1/score returns the "
                         "model's raw scores instead; both rank the same")
    contributors: list[Contributor] | None = Field(
        None, description="only with \"explain\": true: up to 3 history items with the largest contributions, "
                          "largest first; empty in a cold_start or fallback answer")


class RecommendResponse(BaseModel):
    user_id: str
    items: list[ScoredItem]
    model_version: str
    variant: Literal["champion", "canary"]
    reason: Literal["personalised", "cold_start", "fallback"] = Field(
        description="personalised: the model scored the user's history (snapshot and live events); cold_start: "
                    "a user nobody has seen (no snapshot row, no live events), so the most popular items; "
                    "fallback: a known user none of whose items the model knows (e.g. only items newer than "
                    "the model), so the most popular items they have not seen")
    snapshot_only: bool = Field(
        description="true when the online store did not answer: the list comes from the daily snapshot alone and "
                    "misses the user's events since (a new user's may then read cold_start); false otherwise")


class ScoreRequest(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"user_id": "42", "item_ids": ["1", "2"]}]})
    user_id: StrictStr = UserId
    item_ids: list[StrictStr] = Field(min_length=1, max_length=10_000, description="items to score (1..10,000)")


class ScoreResponse(BaseModel):
    scores: list[float | None] = Field(description="one per item_id, in order; null for an item the model does not know")
    model_version: str
    variant: Literal["champion", "canary"]


class FeedbackRequest(BaseModel):
    user_id: StrictStr = UserId
    item_id: StrictStr = Field(min_length=1, max_length=256)
    event_type: Literal[EVENT_TYPES] = Field(description="view | click | rating | purchase")  # type: ignore[valid-type]
    value: StrictFloat | StrictInt = Field(1.0, description="stars for a rating, else 1")
    variant: Literal["champion", "canary"] | None = None
    model_version: StrictStr | None = Field(None, max_length=32)


class FeedbackResponse(BaseModel):
    accepted: bool


class Event(BaseModel):
    """One event as POST /v1/events documents it. Each event is checked by the rule table of
    freshrec/events.py (the Spark clean stage's rules): a bad event is rejected with its reason, not a 422."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"user_id": "42", "item_id": "50", "event_type": "click", "value": 1, "event_id": "c-42-50-1"}]})
    user_id: str = Field(description="the user (strings; JSON numbers are read as their text, like the lake does)")
    item_id: str
    event_type: Literal[EVENT_TYPES] = Field(description="view | click | rating | purchase")  # type: ignore[valid-type]
    value: float = Field(description="stars for a rating (data.rating_min..rating_max), else a weight >= 0")
    ts: str | float | None = Field(None, description="ISO-8601 (UTC unless zoned) or epoch seconds; default: now")
    event_id: str | None = Field(None, max_length=128, description="idempotency key; default: made by the server")


class EventsRequest(BaseModel):
    events: list[Event] = Field(min_length=1, description="1 to serving.max_events_per_request (default 1,000) events")


class RejectedEvent(BaseModel):
    index: int
    reason: str = Field(description="the clean stage's reason name, e.g. empty_id, unknown_event_type, future_ts")


class EventsResponse(BaseModel):
    accepted: int = Field(description="events now durable in the ingestion log")
    rejected: list[RejectedEvent]
    visible: bool = Field(description="false only when the online store failed after logging: the events reach "
                          "recommendations once it answers again")


class CanaryWeightRequest(BaseModel):
    weight: StrictFloat | StrictInt = Field(ge=0, le=100, description="canary traffic share in percent")


class PromoteRequest(BaseModel):
    # At most 18 digits: a version id must fit a signed 64-bit database integer.
    version: StrictStr = Field(min_length=1, max_length=18, pattern=r"^[0-9]+$")


class ErrorBody(BaseModel):
    error: str
    message: str
