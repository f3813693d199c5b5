import asyncio

import pytest
from shoal_server.admission import Admission, AdmissionState, Rejected, Verdict, decide, retry_after_seconds

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
