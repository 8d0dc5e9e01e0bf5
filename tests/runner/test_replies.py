"""A request's last event: `Done`, or for one that waited past the queue timeout a 503 `Failure`."""

from __future__ import annotations

from olla.engine.engine import StepOutput
from olla.engine.sampling import SamplingParams
from olla.engine.sequence import NewSequence
from olla.errors import Overloaded
from olla.runner import replies
from olla.runner.intake import Generation
from olla.wire.messages import Done, Failure
from olla.wire.spec import RunnerSpec

SPEC = RunnerSpec(
    "/m.gguf", "/tmp/r.sock", model_name="m:latest", num_parallel=2, queue_timeout=120.0
)


def _generation() -> Generation:
    return Generation(5, None, NewSequence([1, 2, 3], SamplingParams(), 10))  # type: ignore[arg-type]


def test_a_request_that_never_got_a_sequence_ends_with_overloaded() -> None:
    output = StepOutput(9, finished=True, done_reason="queue_timeout", total_ns=int(120.04e9))
    last = replies.end(_generation(), output, now=0, spec=SPEC)
    assert isinstance(last, Failure) and last.id == 5
    assert (last.status, last.kind) == (503, "Overloaded")
    error = last.error()
    assert isinstance(error, Overloaded)
    assert error.message == (
        "m:latest is busy: this request waited 2m0s and none of its 2 sequences came free "
        "(OLLA_QUEUE_TIMEOUT=2m0s); retry later, or raise OLLA_NUM_PARALLEL or OLLA_QUEUE_TIMEOUT"
    )


def test_any_other_end_is_done() -> None:
    output = StepOutput(9, finished=True, done_reason="length", num_completion_tokens=10)
    last = replies.end(_generation(), output, now=0, spec=SPEC)
    assert isinstance(last, Done) and (last.id, last.done_reason, last.eval_count) == (
        5,
        "length",
        10,
    )
