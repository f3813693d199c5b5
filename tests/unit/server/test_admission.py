import asyncio
from collections import Counter

import pytest
from shoal_server.admission import (
    Admission,
    AdmissionState,
    Rejected,
    Verdict,
    decide,
    may_overtake,
    retry_after_seconds,
)

pytestmark = pytest.mark.unit


def st(inflight: int, queued: int, conc: int = 2, queue: int = 2, **kw: bool) -> AdmissionState:
    return AdmissionState(inflight, queued, conc, queue, **kw)


@pytest.mark.parametrize(
    ("state", "verdict"),
    [
        (st(0, 0), Verdict.ADMIT),
        (st(1, 0), Verdict.ADMIT),
        (st(2, 0), Verdict.QUEUE),
        (st(1, 1), Verdict.QUEUE),  # FIFO: nobody skips a non-empty queue
        (st(2, 1), Verdict.QUEUE),
        (st(2, 2), Verdict.REJECT_FULL),
        (st(0, 0, queue=0), Verdict.ADMIT),
        (st(2, 0, queue=0), Verdict.REJECT_FULL),
        (st(0, 0, draining=True), Verdict.REJECT_DRAINING),
        (st(0, 0, ready=False), Verdict.REJECT_NOT_READY),
    ],
)
def test_decide(state: AdmissionState, verdict: Verdict) -> None:
    assert decide(state) is verdict


def test_retry_after() -> None:
    assert retry_after_seconds(0, 4, None) == 1
    assert retry_after_seconds(7, 4, 3.0) == 6  # two waves of 3 s
    assert retry_after_seconds(1000, 1, 10.0) == 60  # clamped
    assert retry_after_seconds(0, 8, 0.01) == 1
    assert retry_after_seconds(3, 1, float("nan")) == 1


async def test_admission_queues_fifo_and_rejects_when_full() -> None:
    adm = Admission(max_concurrency=1, max_queue=2)
    adm.ready = True
    assert await adm.acquire() == 0.0
    order: list[int] = []

    async def waiter(i: int) -> None:
        await adm.acquire()
        order.append(i)

    tasks = [asyncio.create_task(waiter(i)) for i in range(2)]
    await asyncio.sleep(0)
    assert adm.queued == 2
    with pytest.raises(Rejected) as exc:
        await adm.acquire()
    assert exc.value.verdict is Verdict.REJECT_FULL and exc.value.retry_after is not None
    adm.release(0.5)
    await asyncio.sleep(0)
    adm.release(0.5)
    await asyncio.wait_for(asyncio.gather(*tasks), 1)
    assert order == [0, 1]
    assert adm.inflight == 1 and adm.queued == 0
    adm.release(None)
    assert await adm.wait_idle(0.1)


async def test_cancelled_waiter_leaves_queue() -> None:
    adm = Admission(max_concurrency=1, max_queue=1)
    adm.ready = True
    await adm.acquire()
    task = asyncio.create_task(adm.acquire())
    await asyncio.sleep(0)
    assert adm.queued == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert adm.queued == 0
    adm.release(None)
    assert adm.inflight == 0
    assert await adm.wait_idle(0.1)


async def test_draining_rejects_new_but_keeps_queued() -> None:
    adm = Admission(max_concurrency=1, max_queue=4)
    adm.ready = True
    await adm.acquire()
    queued = asyncio.create_task(adm.acquire())
    await asyncio.sleep(0)
    adm.draining = True
    with pytest.raises(Rejected) as exc:
        await adm.acquire()
    assert exc.value.verdict is Verdict.REJECT_DRAINING
    assert not await adm.wait_idle(0.01)
    adm.release(None)
    await asyncio.wait_for(queued, 1)
    adm.release(None)
    assert await adm.wait_idle(0.1)


def test_invalid_limits() -> None:
    with pytest.raises(ValueError):
        Admission(0, 1)


def test_may_overtake_needs_a_worse_admitted_request_per_overtaker() -> None:
    admitted = Counter({1: 3})  # three heavy-tenant requests at engine priority 1, limit 3
    assert may_overtake(0, admitted, None, inflight=3, max_concurrency=3)  # 3 worse > 0 over
    assert may_overtake(0, admitted, None, inflight=5, max_concurrency=3)  # 3 worse > 2 over
    assert not may_overtake(0, admitted, None, inflight=6, max_concurrency=3)  # one worse per overtaker
    assert not may_overtake(1, admitted, None, inflight=3, max_concurrency=3)  # equal is not better
    assert not may_overtake(0, admitted, 0, inflight=3, max_concurrency=3)  # an equal one waits ahead
    assert may_overtake(-2, admitted, 0, inflight=3, max_concurrency=3)  # better than every waiter
    assert not may_overtake(0, Counter({0: 3}), None, inflight=3, max_concurrency=3)  # fcfs: all 0
    assert decide(st(2, 2), overtake=True) is Verdict.ADMIT


async def test_a_better_priority_is_admitted_past_the_limit_and_slots_follow_priorities() -> None:
    """#16: the engine serves a better request ahead of worse admitted ones, so it is not held for a
    slot; the count returns under the limit as requests finish, and waiters get slots in order."""
    adm = Admission(max_concurrency=2, max_queue=4)
    adm.ready = True
    await adm.acquire(1)
    await adm.acquire(1)  # full with two heavy requests
    waiter = asyncio.create_task(adm.acquire(1))  # a third heavy one queues
    await asyncio.sleep(0)
    assert (adm.inflight, adm.queued) == (2, 1)
    assert await adm.acquire(0) == 0.0  # the light one overtakes at once: 3 in flight
    assert await adm.acquire(0) == 0.0  # 2 worse > 1 over
    assert adm.inflight == 4
    with pytest.raises(asyncio.TimeoutError):  # a third light one: no worse one left to displace
        await asyncio.wait_for(adm.acquire(0), 0.05)
    for _ in range(2):
        adm.release(0.1, 1)  # the heavy ones finish: 2 in flight, still at the limit
    assert not waiter.done() and adm.inflight == 2
    adm.release(0.1, 0)  # under the limit: the queued heavy one gets its slot
    await asyncio.wait_for(waiter, 1)
    assert adm.inflight == 2
