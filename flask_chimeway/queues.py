"""The ``rq`` dispatcher's side of Redis: queue names, job ids, enqueueing in one pipeline."""

from __future__ import annotations

import datetime as dt
import logging
import typing as t

import redis
import rq

if t.TYPE_CHECKING:
    from .extension import State

logger = logging.getLogger(__name__)

DELIVERY_QUEUE = "chimeway_delivery"
SIGNALS_QUEUE = "chimeway_signals"
WORKFLOWS_QUEUE = "chimeway_workflows"
#: The queues ``flask chimeway worker`` listens on, in priority order.
QUEUES = (DELIVERY_QUEUE, SIGNALS_QUEUE, WORKFLOWS_QUEUE)

PERFORM_DELIVERY = "flask_chimeway.jobs.perform_delivery_job"
ROUTE_SIGNAL = "flask_chimeway.jobs.route_signal_job"
ADVANCE_RUN = "flask_chimeway.jobs.advance_run_job"
#: Job statuses that mean "a worker will run this job": anything else is lost or done.
LIVE_STATUSES = frozenset({"queued", "started"})
#: Finished jobs only need to live long enough to be inspected.
RESULT_TTL = 600


def delivery_job_id(delivery_id: int, attempt: int) -> str:
    """The RQ job id of ``attempt`` of a delivery: stable, so it can be looked up."""
    return f"chimeway-delivery-{delivery_id}-{attempt}"


def connection(state: State) -> redis.Redis:
    """The app's Redis connection, made on first use, with short timeouts so a hung Redis
    cannot hold a commit for long."""
    if state.redis is None:
        timeout = state.settings.redis_timeout
        state.redis = redis.Redis.from_url(
            state.settings.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
    return t.cast(redis.Redis, state.redis)


def queue(state: State, name: str = DELIVERY_QUEUE) -> rq.Queue:
    """An RQ queue of the app."""
    return rq.Queue(name, connection=connection(state))


def enqueue_deliveries(state: State, deliveries: t.Sequence[tuple[int, int]]) -> bool:
    """Push one job per ``(delivery_id, attempt)`` in a single Redis pipeline.

    Never raises for Redis trouble: logs a warning (once until Redis answers again) and
    returns ``False``; the rows stay due and the next tick enqueues them.
    """
    return _push(state, [_delivery_job(state, d, a) for d, a in deliveries])


def enqueue_work(
    state: State,
    delivery_ids: t.Sequence[int],
    signal_ids: t.Sequence[int],
    waits: t.Sequence[tuple[int, int, dt.datetime]] = (),
) -> bool:
    """After a commit: first attempts of new deliveries, routing of new signals, and the
    end of each wait started (scheduled for its due time, moved by RQ's scheduler), all in
    one pipeline."""
    jobs = [_delivery_job(state, d, 1) for d in delivery_ids]
    jobs += [
        (
            SIGNALS_QUEUE,
            rq.Queue.prepare_data(
                ROUTE_SIGNAL,
                args=(signal_id,),
                job_id=f"chimeway-signal-{signal_id}",
                result_ttl=RESULT_TTL,
                description=f"chimeway signal {signal_id}",
            ),
        )
        for signal_id in signal_ids
    ]
    return _push(state, jobs, waits)


def _delivery_job(state: State, delivery_id: int, attempt: int) -> tuple[str, t.Any]:
    return (
        DELIVERY_QUEUE,
        rq.Queue.prepare_data(
            PERFORM_DELIVERY,
            args=(delivery_id, attempt),
            # RQ stops the job when the lease ends: the tick may hand it to another worker
            timeout=state.settings.lease_seconds,
            job_id=delivery_job_id(delivery_id, attempt),
            result_ttl=RESULT_TTL,
            description=f"chimeway delivery {delivery_id} attempt {attempt}",
        ),
    )


def _push(
    state: State,
    jobs: list[tuple[str, t.Any]],
    waits: t.Sequence[tuple[int, int, dt.datetime]] = (),
) -> bool:
    if not jobs and not waits:
        return True
    by_queue: dict[str, list[t.Any]] = {}
    for name, job in jobs:
        by_queue.setdefault(name, []).append(job)
    try:
        with connection(state).pipeline() as pipe:
            for name, datas in by_queue.items():
                queue(state, name).enqueue_many(datas, pipeline=pipe)
            workflows = queue(state, WORKFLOWS_QUEUE)
            for run_id, step, due_at in waits:
                workflows.enqueue_at(
                    due_at,
                    ADVANCE_RUN,
                    run_id,
                    job_id=f"chimeway-run-{run_id}-{step}",
                    result_ttl=RESULT_TTL,
                    description=f"chimeway run {run_id}: end of the wait at step {step}",
                    pipeline=pipe,
                )
            pipe.execute()
    except redis.RedisError as exc:
        _redis_down(state, exc, f"{len(jobs)} job(s) were not enqueued")
        return False
    state.redis_warned = False
    return True


def schedule_retry(state: State, delivery_id: int, attempt: int, at: dt.datetime) -> bool:
    """Schedule ``attempt`` of a delivery for ``at`` (moved by the scheduler of a worker
    started with it; the tick enqueues it if that does not happen)."""
    try:
        queue(state).enqueue_at(
            at,
            PERFORM_DELIVERY,
            delivery_id,
            attempt,
            job_id=delivery_job_id(delivery_id, attempt),
            job_timeout=state.settings.lease_seconds,
            result_ttl=RESULT_TTL,
            description=f"chimeway delivery {delivery_id} attempt {attempt}",
        )
    except redis.RedisError as exc:
        _redis_down(state, exc, f"the retry of delivery {delivery_id} was not scheduled")
        return False
    return True


def live_job_ids(state: State, job_ids: t.Sequence[str]) -> set[str] | None:
    """Which of ``job_ids`` a worker will still run; ``None`` when Redis is unreachable."""
    if not job_ids:
        return set()
    try:
        with connection(state).pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hget(rq.job.Job.key_for(job_id), "status")
            statuses = pipe.execute()
    except redis.RedisError as exc:
        _redis_down(state, exc, "lost jobs could not be looked for")
        return None
    return {
        job_id
        for job_id, status in zip(job_ids, statuses, strict=True)
        if status is not None and status.decode() in LIVE_STATUSES
    }


def _redis_down(state: State, exc: BaseException, what: str) -> None:
    if not state.redis_warned:
        state.redis_warned = True
        logger.warning(
            "Redis at %s is unreachable (%s: %s); %s. Nothing is lost: the deliveries stay"
            " due in the database and the next 'flask chimeway progress' tick enqueues them."
            " This warning is not repeated until Redis answers again.",
            _safe_url(state.settings.redis_url),
            type(exc).__name__,
            exc,
            what,
        )
    else:
        logger.debug("Redis still unreachable: %s", what)


def _safe_url(url: str) -> str:
    """``url`` without a password."""
    head, sep, tail = url.partition("@")
    if not sep:
        return url
    scheme, _, _ = head.partition("://")
    return f"{scheme}://***@{tail}"
