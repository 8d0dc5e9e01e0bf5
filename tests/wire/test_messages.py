"""The runner protocol's messages: each one survives its JSON line, and errors keep their class."""

from __future__ import annotations

import json
from typing import Any

import pytest

from olla.errors import InvalidRequest, ModelfileError, OllaError, Overloaded, RequestTimeout
from olla.wire.messages import (
    Accepted,
    Cancel,
    Chunk,
    Count,
    Direct,
    Done,
    Embed,
    Embeddings,
    Failure,
    Logprob,
    ProtocolError,
    Query,
    Reply,
    Submit,
    decode_event,
    decode_request,
)


def _line(message: Any) -> dict[str, Any]:
    """What the other side reads: the message through JSON."""
    return json.loads(json.dumps(message.to_json()))


@pytest.mark.parametrize(
    "request_",
    [
        Submit("hi", {"temperature": 0}, id=3),
        Submit(
            "hi",
            {"num_predict": 4, "stop": ["\n"]},
            format={"type": "object"},
            context=(1, 2, 3),
            logprobs=2,
            user="alice",
            direct=Direct("m:latest", "message"),
            id=4,
        ),
        Embed(("a", "é"), truncate=False, id=5),
        Embed(("raw",), normalize=False, id=9),
        Count(("a long history", ""), id=10),
        Submit("cut", {}, truncate=False, shift=False, id=11),
        Cancel(6),
        Query("stats", 7),
        Query("health", 8),
    ],
)
def test_requests_round_trip(request_: Any) -> None:
    assert decode_request(_line(request_)) == request_


@pytest.mark.parametrize(
    "event",
    [
        Accepted(1),
        Chunk(2, "héllo"),
        Chunk(2, "", (Logprob("a", -0.5, (97,), (Logprob("b", -1.5, (98,)),)),)),
        Done(3, "length", 10, 4, 5, 1000, 2000, (1, 2, 3), (7, 8)),
        Done(3, "stop", 10, stop_sequence="###"),
        Embeddings(4, [[0.5, -0.5]], 3, 99),
        Reply(5, {"running": 1, "memory": {"weights": 2}}),
        Failure(6, "bad", 400, "InvalidRequest"),
        Failure(7, "busy", 503, "Overloaded", 2.0),
    ],
)
def test_events_round_trip(event: Any) -> None:
    assert decode_event(_line(event)) == event


@pytest.mark.parametrize(
    "error",
    [
        InvalidRequest("the prompt is 9000 tokens"),
        ModelfileError("no FROM", 3),
        Overloaded("busy", retry_after=4),
        RequestTimeout("too long"),
    ],
)
def test_an_error_keeps_its_class_status_and_message_across_the_boundary(error: OllaError) -> None:
    failure = decode_event(_line(Failure.of(9, error)))
    assert isinstance(failure, Failure)
    again = failure.error()
    assert type(again) is type(error)
    assert (again.status, again.message) == (error.status, error.message)
    if isinstance(error, Overloaded):
        assert isinstance(again, Overloaded) and again.retry_after == error.retry_after


def test_an_unknown_error_class_falls_back_to_its_status() -> None:
    again = Failure(1, "no room", 507, "SomethingNew").error()
    assert again.status == 507 and again.message == "no room"
    assert type(again).__name__ == "StorageError"


@pytest.mark.parametrize(
    "line",
    [
        {"op": "submit"},  # no id
        {"op": "dance", "id": 1},
        {"op": "embed", "id": 1, "inputs": "not a list"},
        {"op": "embed", "id": 1, "inputs": [1, 2]},
    ],
)
def test_a_request_the_protocol_does_not_have_is_refused(line: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError):
        decode_request(line)


def test_an_unknown_event_is_refused() -> None:
    with pytest.raises(ProtocolError):
        decode_event({"event": "surprise", "id": 1})
