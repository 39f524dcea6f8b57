"""The reading service: reads every gateway's meters on a schedule and acts on what it read.

One asyncio event loop runs all buses concurrently; on each bus the meters are read strictly one
after another. A cycle of a gateway: take its lease (:mod:`onecard.remote.lease`), read its due
meters (with retries and backoff), store each batch (:func:`onecard.remote.fees.store_outcomes`,
on the database thread while the bus reads on), send the relay commands and recharge pushes that
were decided and read the result back, send the notices of new alarm events, give the lease back.

Every database call runs on one thread. Lease takes, batch stores and lease releases that queue
there together (the buses of one schedule start and finish together) share one transaction and
one commit, each in its own savepoint, so one gateway's failure stays its own.

APScheduler (``AsyncIOScheduler``) runs a job per gateway and reading interval: the interval of
the meter's group, else the gateway's group, else the default (30 minutes). A job every few
seconds (:meth:`ReadingService.restore`) reads at once the meters the service tripped whose
credit a sale has brought back, so their relays close within seconds, not at the next cycle.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select
from sqlalchemy.orm import Session, aliased, sessionmaker

from onecard.audit import Actor, record
from onecard.errors import Conflict, InvalidInput, NotFound
from onecard.ledger import operations as ops
from onecard.models import (
    Gateway,
    LedgerAccount,
    Meter,
    MeterEvent,
    MeterReading,
    MeterReadingArchive,
    Premises,
    ReadingGroup,
    RelayCommand,
    RemoteMeter,
    RemoteRecharge,
    utcnow,
)
from onecard.remote import lease
from onecard.remote.bus import Bus
from onecard.remote.fees import (
    NOTICE_EVENTS,
    Action,
    Context,
    Outcome,
    Policy,
    Stored,
    store_outcomes,
)
from onecard.remote.inventory import link_of, office_of
from onecard.remote.types import (
    RELAY_COMMANDS,
    GatewayLink,
    GatewayOffline,
    MeterError,
    MeterRef,
    RemoteReading,
    unwrap_count,
)
from onecard.utility import UtilityRegistry

log = logging.getLogger("onecard.remote")

DEFAULT_MINUTES = 30
#: seconds a scheduled cycle waits for a gateway whose lease is held (by a manual command or a
#: restore, most likely), before it counts the gateway busy and skips it until its next run
BUSY_WAIT = 15.0
EXPECTED_RELAY = {"trip": "open", "close": "closed", "keep": "closed"}


@dataclass
class Target:
    ref: MeterRef
    protocol: Any


@dataclass
class CycleReport:
    """What one gateway cycle did."""

    gateway: str
    busy: str | None = None
    meters: int = 0
    read: int = 0
    missed: int = 0
    priced: int = 0
    posted_fen: int = 0
    commands: list[dict[str, Any]] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    events: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "gateway": self.gateway,
            "busy": self.busy,
            "meters": self.meters,
            "read": self.read,
            "missed": self.missed,
            "priced": self.priced,
            "posted_fen": self.posted_fen,
            "commands": self.commands,
            "errors": dict(self.errors),
            "events": self.events,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class Begun:
    """A gateway as a cycle or a command starts on it: its lease token (None: another instance
    holds it) and the meters to read."""

    gateway_id: int
    code: str
    token: int | None
    holder: str | None
    link: GatewayLink
    retries: int
    targets: list[Target]


NoticeSender = Callable[[Session, MeterEvent], None]


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():  # the caller gave up (cancelled)
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


class _Together:
    """Calls of the service's method ``name(session, *args)`` on its database thread, served
    together: every call waiting when the thread gets to them shares one session and one commit,
    each in its own savepoint (an error rolls back that call alone and is raised to its caller)."""

    def __init__(self, service: ReadingService, name: str, executor: ThreadPoolExecutor) -> None:
        self.service = service
        self.name = name
        self.executor = executor
        self.waiting: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self.lock = threading.Lock()

    async def __call__(self, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        with self.lock:
            self.waiting.append((args, future))
            first = len(self.waiting) == 1
        if first:  # later calls join this one until the thread takes the list
            loop.run_in_executor(self.executor, self._serve, loop)
        return await future

    def _serve(self, loop: asyncio.AbstractEventLoop) -> None:
        with self.lock:
            calls, self.waiting = self.waiting, []
        results: list[tuple[bool, Any]] = []
        fn = getattr(self.service, self.name)
        try:
            with self.service.sessions() as session:
                for args, _ in calls:
                    try:
                        with session.begin_nested():
                            results.append((True, fn(session, *args)))
                    except Exception as exc:  # handed to its caller
                        results.append((False, exc))
                session.commit()
        except BaseException as exc:  # the commit failed: every call failed
            results = [(False, exc)] * len(calls)
        for (_, future), (ok, value) in zip(calls, results, strict=True):
            loop.call_soon_threadsafe(_settle, future, ok, value)


class ReadingService:
    """Reads, prices, alarms and controls remote meters. One per process; many may share a DB."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        utilities: UtilityRegistry,
        *,
        policy: Policy | None = None,
        owner: str | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
        notices: NoticeSender | None = None,
        batch: int = 500,
        lease_ttl: dt.timedelta = dt.timedelta(minutes=10),
        default_minutes: int = DEFAULT_MINUTES,
        backoff: float = 0.1,
        restore_seconds: float = 10.0,
        restore_after: dt.timedelta = dt.timedelta(minutes=1),
    ) -> None:
        self.sessions = sessions
        self.utilities = utilities
        self.ctx = Context(utilities, policy)
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.clock = clock
        self.notices = notices
        self.batch = batch
        self.lease_ttl = lease_ttl
        self.default_minutes = default_minutes
        self.backoff = backoff
        self.restore_seconds = restore_seconds  # how often restore() runs under start(); 0: never
        self.restore_after = restore_after  # a meter is tried again this long after an attempt
        self.scheduler: Any = None
        # every database call of this service runs on one worker thread, in order: SQLite has a
        # single writer, and queued writers would otherwise poll each other into its timeout
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onecard-db")
        self._begin = _Together(self, "_begin_in", self._db)
        self._store = _Together(self, "_store_in", self._db)
        self._release = _Together(self, "_release_in", self._db)

    async def db(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the service's database thread."""
        return await asyncio.get_running_loop().run_in_executor(self._db, fn, *args)

    # One cycle -------------------------------------------------------------------------------

    def _targets(
        self,
        session: Session,
        gateway_id: int,
        minutes: int | None,
        only: Collection[int] | None = None,
    ) -> tuple[Gateway, list[Target]]:
        gateway = session.get(Gateway, gateway_id)
        if gateway is None:
            raise NotFound(f"no gateway #{gateway_id}", field="gateway")
        own = aliased(ReadingGroup)
        q = (
            select(
                Meter.id,
                Meter.serial,
                Meter.kind,
                Meter.model,
                Meter.protocol,
                RemoteMeter.address,
                own.interval_minutes,
            )
            .join(Meter, Meter.id == RemoteMeter.meter_id)
            .outerjoin(own, own.id == RemoteMeter.group_id)
            .where(RemoteMeter.gateway_id == gateway_id, Meter.state == "active")
            .order_by(RemoteMeter.address)
        )
        if only is not None:
            q = q.where(RemoteMeter.meter_id.in_(list(only)))
        rows = session.execute(q).all()
        default = gateway.group.interval_minutes if gateway.group else self.default_minutes
        targets = []
        protocols: dict[tuple[str, str], Any] = {}
        for meter_id, serial, kind, model, protocol, address, interval in rows:
            if minutes is not None and (interval or default) != minutes:
                continue
            if (kind, protocol) not in protocols:
                protocols[kind, protocol] = self.utilities.get(kind).protocols.get(protocol)
            targets.append(
                Target(
                    ref=MeterRef(
                        meter_id=meter_id, serial=serial, kind=kind, address=address, model=model
                    ),
                    protocol=protocols[kind, protocol],
                )
            )
        return gateway, targets

    def intervals(self, session: Session, gateway_id: int) -> set[int]:
        gateway = session.get(Gateway, gateway_id)
        if gateway is None:
            return set()
        default = gateway.group.interval_minutes if gateway.group else self.default_minutes
        own = aliased(ReadingGroup)
        found = session.execute(
            select(own.interval_minutes)
            .select_from(RemoteMeter)
            .outerjoin(own, own.id == RemoteMeter.group_id)
            .where(RemoteMeter.gateway_id == gateway_id)
            .distinct()
        ).scalars()
        return {m or default for m in found}

    def _begin_in(
        self,
        session: Session,
        gateway_id: int,
        minutes: int | None,
        only: Collection[int] | None = None,
    ) -> Begun:
        """Take the gateway's lease (if free) and list its meters due every ``minutes`` (of
        ``only`` these meters, if given)."""
        gateway, targets = self._targets(session, gateway_id, minutes, only)
        token = lease.acquire(session, gateway_id, self.owner, now=self.clock(), ttl=self.lease_ttl)
        holder = None
        if token is None:
            holder = session.execute(
                select(Gateway.lease_owner).where(Gateway.id == gateway_id)
            ).scalar()
        return Begun(
            gateway_id=gateway_id,
            code=gateway.code,
            token=token,
            holder=holder,
            link=link_of(gateway),
            retries=gateway.retries,
            targets=targets,
        )

    def _release_in(self, session: Session, gateway_id: int, token: int, error: str) -> None:
        gateway = session.get(Gateway, gateway_id)
        if gateway is not None and gateway.lease_token == token:
            gateway.last_cycle_at = self.clock()
            gateway.last_error = error[:500]
        lease.release(session, gateway_id, self.owner, token)

    def _store_in(
        self, session: Session, gateway_id: int, token: int, outcomes: Sequence[Outcome]
    ) -> Stored:
        now = self.clock()
        lease.check(session, gateway_id, self.owner, token, now=now, ttl=self.lease_ttl)
        return store_outcomes(session, self.ctx, outcomes, now=now)

    async def _read(self, bus: Bus, target: Target, retries: int) -> Outcome:
        error: MeterError | None = None
        attempts = 0
        limit = max(bus.link.timeout * 4, 2.0)
        for attempt in range(retries + 1):
            attempts += 1
            try:
                async with asyncio.timeout(limit):  # no task per read, unlike wait_for
                    reading: RemoteReading = await target.protocol.read(bus, target.ref)
                return Outcome(target.ref.meter_id, self.clock(), reading, attempts=attempts)
            except GatewayOffline:
                raise
            except MeterError as exc:
                error = exc
                if not exc.retry:
                    break
            except TimeoutError:
                error = MeterError(f"no answer within {limit:g} s")
                error.code = "timeout"
            except Exception as exc:  # a protocol bug must not stop the bus
                log.exception("meter %s: the protocol failed", target.ref.serial)
                error = MeterError(f"{type(exc).__name__}: {exc}", retry=False)
                break
            if attempt < retries:
                await asyncio.sleep(self.backoff * 2**attempt)
        return Outcome(target.ref.meter_id, self.clock(), error=error, attempts=attempts)

    async def _take(
        self,
        gateway_id: int,
        minutes: int | None,
        only: Collection[int] | None,
        wait: float,
    ) -> Begun:
        """Take the gateway's lease with its meters to read, trying again every half second for
        up to ``wait`` seconds while another cycle or command holds it."""
        deadline = time.monotonic() + wait
        while True:
            begun: Begun = await self._begin(gateway_id, minutes, only)
            if begun.token is not None or time.monotonic() >= deadline:
                return begun
            await asyncio.sleep(0.5)

    async def cycle(
        self,
        gateway_id: int,
        *,
        minutes: int | None = None,
        only: Collection[int] | None = None,
        wait: float = 0.0,
    ) -> CycleReport:
        """Read a gateway's meters (those read every ``minutes``, None: all; of ``only`` these
        meters, if given) and act on them. A gateway another cycle holds is waited for up to
        ``wait`` seconds, then reported busy."""
        started = time.monotonic()
        begun = await self._take(gateway_id, minutes, only, wait)
        token, targets, retries = begun.token, begun.targets, begun.retries
        report = CycleReport(gateway=begun.code, meters=len(targets))
        if token is None:
            report.busy = begun.holder or "another instance"
            return report
        bus = Bus(begun.link)
        error = ""
        actions: list[Action] = []
        events: list[int] = []
        try:
            pending: asyncio.Future[Stored] | None = None
            outcomes: list[Outcome] = []
            by_id = {t.ref.meter_id: t for t in targets}

            async def flush(batch: list[Outcome]) -> None:
                nonlocal pending
                if pending is not None:
                    self._account(report, await pending, actions, events)
                pending = asyncio.ensure_future(self._store(gateway_id, token, batch))

            offline: GatewayOffline | None = None
            for target in targets:
                if offline is not None:
                    outcome = Outcome(target.ref.meter_id, self.clock(), error=offline)
                else:
                    try:
                        outcome = await self._read_connected(bus, target, retries)
                    except GatewayOffline as exc:
                        offline = exc
                        error = f"offline: {exc}"
                        outcome = Outcome(target.ref.meter_id, self.clock(), error=exc)
                if outcome.error is not None:
                    report.errors[outcome.error.code] += 1
                outcomes.append(outcome)
                if len(outcomes) >= self.batch:
                    await flush(outcomes)
                    outcomes = []
            if outcomes:
                await flush(outcomes)
            if pending is not None:
                self._account(report, await pending, actions, events)
            if actions and offline is None:
                results = [await self._act(bus, by_id[a.meter_id], a) for a in actions]
                await self.db(self._record_actions, gateway_id, token, results, None)
                report.commands.extend(
                    {k: v for k, v in r.items() if k != "action"} for r in results
                )
        except lease.LeaseLost as exc:
            error = str(exc)
            log.warning("%s", exc)
        finally:
            await bus.close()
            await self._release(gateway_id, token, error)
        if events:
            await self.db(self.send_notices, events)
        report.events = len(events)
        report.seconds = time.monotonic() - started
        return report

    async def _read_connected(self, bus: Bus, target: Target, retries: int) -> Outcome:
        """Read one meter; a gateway that will not connect is retried with backoff first."""
        for attempt in range(retries + 1):
            try:
                return await self._read(bus, target, retries)
            except GatewayOffline:
                if attempt == retries:
                    raise
                await bus.close()
                await asyncio.sleep(self.backoff * 2**attempt)
        raise AssertionError("unreachable")

    @staticmethod
    def _account(
        report: CycleReport, stored: Stored, actions: list[Action], events: list[int]
    ) -> None:
        report.read += stored.readings
        report.missed += stored.missed
        report.priced += stored.priced
        report.posted_fen += stored.posted_fen
        actions.extend(stored.actions)
        events.extend(stored.events)

    # Commands --------------------------------------------------------------------------------

    async def _act(self, bus: Bus, target: Target, action: Action) -> dict[str, Any]:
        out: dict[str, Any] = {
            "meter": f"{target.ref.kind}:{target.ref.serial}",
            "what": action.what,
            "source": action.source,
            "action": action,
        }
        limit = max(bus.link.timeout * 4, 2.0)
        try:
            if action.what == "recharge":
                assert action.amount is not None and action.count is not None
                await asyncio.wait_for(
                    target.protocol.recharge(bus, target.ref, action.amount, action.count), limit
                )
            else:
                await asyncio.wait_for(target.protocol.command(bus, target.ref, action.what), limit)
        except (MeterError, TimeoutError) as exc:
            out["error"] = f"{getattr(exc, 'code', 'timeout')}: {exc}"
        try:
            back = await asyncio.wait_for(target.protocol.read(bus, target.ref), limit)
            out["relay"] = back.relay
            count = back.recharge_count
            if count is not None and action.count is not None:  # a push: the count it wrote
                count = unwrap_count(count, back.recharge_count_modulus, action.count)
            out["recharge_count"] = count
        except (MeterError, TimeoutError) as exc:
            out.setdefault("error", f"read-back failed: {exc}")
        return out

    def _record_actions(
        self,
        gateway_id: int | None,
        token: int | None,
        results: Sequence[dict[str, Any]],
        actor: Actor | None,
        reason: str = "",
    ) -> list[dict[str, Any]]:
        with self.sessions() as session:
            now = self.clock()
            if gateway_id is not None and token is not None:
                lease.check(session, gateway_id, self.owner, token, now=now, ttl=self.lease_ttl)
            for result in results:
                self._record_one(session, result, now, actor, reason)
            session.commit()
        return [dict(r) for r in results]

    def _record_one(
        self,
        session: Session,
        result: dict[str, Any],
        now: dt.datetime,
        actor: Actor | None,
        reason: str,
    ) -> None:
        action: Action = result["action"]
        remote = session.get(RemoteMeter, action.meter_id)
        assert remote is not None
        relay = result.get("relay")
        if relay:
            remote.relay = relay
            remote.relay_checked_at = now
        if action.what == "recharge":
            push = session.get(RemoteRecharge, action.recharge_id)
            if push is not None and push.status == "pending":
                push.pushed_at = now
                count = result.get("recharge_count")
                if count is not None:
                    remote.meter_recharge_count = count
                if count is not None and count >= push.count:
                    self._accept(session, push, now)
                elif "error" in result:
                    push.error = str(result["error"])[:500]
            result["status"] = push.status if push else "gone"
            return
        expected = EXPECTED_RELAY.get(action.what)
        if "error" in result and relay is None:
            status = "failed"
        elif expected is not None and relay is not None and relay != expected:
            status = "mismatch"
        elif "error" in result and "read-back" not in str(result["error"]):
            status = "failed"
        else:
            status = "done"
        result["status"] = status
        session.add(
            RelayCommand(
                meter_id=action.meter_id,
                command=action.what,
                source=action.source,
                operator_id=actor.operator_id if actor else None,
                reason=reason[:300],
                status=status,
                relay_after=relay,
                error=str(result.get("error", ""))[:500],
                requested_at=now,
                done_at=now,
            )
        )
        meter = session.get(Meter, action.meter_id)
        customer_id = None
        if meter is not None and meter.premises is not None:
            customer_id = meter.premises.customer_id
        if action.what == "trip" and status in ("done", "mismatch"):
            remote.tripped = action.source
            if status == "mismatch" and not remote.bypass:
                remote.bypass = True
                event = MeterEvent(
                    meter_id=action.meter_id,
                    at=now,
                    event="bypass",
                    customer_id=customer_id,
                    detail={"command": "trip", "relay_after": relay},
                )
                session.add(event)
                session.flush()
                result["event"] = event.id
        elif action.what == "close" and status == "done":
            remote.tripped = None
            remote.bypass = False
        elif action.what == "keep" and status in ("done", "failed"):
            remote.keep_power = True
        elif action.what == "release":
            remote.keep_power = False
        if status in ("done", "mismatch") and action.what in ("trip", "close"):
            session.add(
                MeterEvent(
                    meter_id=action.meter_id,
                    at=now,
                    event=action.what,
                    customer_id=customer_id,
                    detail={"source": action.source, "relay_after": relay, "status": status},
                )
            )
        if actor is not None:
            record(
                session,
                actor,
                f"meter.{action.what}",
                [f"meter:{meter.kind}:{meter.serial}" if meter else f"meter:{action.meter_id}"],
                detail={"status": status, "relay_after": relay, "reason": reason},
                office_id=office_of(session, action.meter_id),
                customer_id=customer_id,
            )

    def _accept(self, session: Session, push: RemoteRecharge, now: dt.datetime) -> None:
        """The meter holds the pushed credit: it leaves the wallet as revenue."""
        from onecard.ledger import accounts as acc

        push.status = "accepted"
        push.confirmed_at = now
        ops.consume(
            session,
            wallet=acc.meter_wallet_code(push.meter_id),
            amount=push.amount,
            idempotency_key=f"remote-recharge:{push.meter_id}:{push.count}",
            memo=f"recharge #{push.count} delivered to the meter",
        )

    async def manual(
        self, meter_id: int, command: str, actor: Actor, reason: str, *, wait: float = 30.0
    ) -> dict[str, Any]:
        """Send a relay command (trip, close, keep, release) now, as an operator; audited."""
        if command not in RELAY_COMMANDS:
            raise InvalidInput(
                f"command must be one of {', '.join(RELAY_COMMANDS)}, not {command!r}",
                field="command",
            )
        if not reason.strip():
            raise InvalidInput("give a reason for the command", field="reason")
        with self.sessions() as session:
            remote = session.get(RemoteMeter, meter_id)
            if remote is None:
                raise NotFound("the meter is not a remote meter", field="meter")
            gateway_id = remote.gateway_id
        begun = await self._take(gateway_id, None, None, wait)
        if begun.token is None:
            raise Conflict(
                f"the gateway is busy (held by {begun.holder}); try again shortly", field="meter"
            )
        out = await self.send_now(begun, Action(meter_id, command, source="manual"), actor, reason)
        if "event" in out:
            await self.db(self.send_notices, [out["event"]])
        return out

    async def send_now(
        self,
        begun: Begun,
        action: Action,
        actor: Actor | None = None,
        reason: str = "",
    ) -> dict[str, Any]:
        """Carry out one action on a gateway whose lease the caller took (:attr:`Begun.token`),
        record it, and give the lease back."""
        token = begun.token
        assert token is not None, "send_now needs the gateway's lease"
        try:
            target = next((t for t in begun.targets if t.ref.meter_id == action.meter_id), None)
            if target is None:
                raise NotFound("the meter is not active on its gateway", field="meter")
            bus = Bus(begun.link)
            try:
                result = await self._act(bus, target, action)
            finally:
                await bus.close()
            results = await self.db(
                self._record_actions, begun.gateway_id, token, [result], actor, reason
            )
        finally:
            await self._release(begun.gateway_id, token, "")
        return {k: v for k, v in results[0].items() if k != "action"}

    # Prompt close after a sale ---------------------------------------------------------------

    def due_to_restore(self, session: Session) -> dict[int, list[int]]:
        """The meters to read at once, by gateway: tripped by the service, billed by the server,
        their wallet's credit above the exhausted level again (a sale since the trip), and not
        tried in the last :attr:`restore_after`."""
        cutoff = self.clock() - self.restore_after
        tripped = list(
            session.scalars(  # few, through the index on tripped, before any join
                select(RemoteMeter.meter_id).where(
                    RemoteMeter.tripped == "auto",
                    RemoteMeter.billing == "server",
                    or_(
                        RemoteMeter.last_attempt_at.is_(None),
                        RemoteMeter.last_attempt_at <= cutoff,
                    ),
                )
            )
        )
        due: dict[int, list[int]] = {}
        for start in range(0, len(tripped), 500):
            rows = session.execute(
                select(RemoteMeter.gateway_id, RemoteMeter.meter_id)
                .join(Meter, Meter.id == RemoteMeter.meter_id)
                .join(Gateway, Gateway.id == RemoteMeter.gateway_id)
                .join(
                    LedgerAccount,
                    and_(LedgerAccount.meter_id == Meter.id, LedgerAccount.purpose == "wallet"),
                )
                .where(
                    RemoteMeter.meter_id.in_(tripped[start : start + 500]),
                    Meter.state == "active",
                    Gateway.enabled.is_(True),
                    # credit (-balance) above -overdraft: not exhausted, see fees.level_of
                    LedgerAccount.balance < func.coalesce(LedgerAccount.overdraft, 0),
                )
            )
            for gateway_id, meter_id in rows:
                due.setdefault(gateway_id, []).append(meter_id)
        return {gateway_id: sorted(ids) for gateway_id, ids in sorted(due.items())}

    def _due_in(self) -> dict[int, list[int]]:
        with self.sessions() as session:
            return self.due_to_restore(session)

    async def restore(self) -> list[CycleReport]:
        """Read now the meters :meth:`due_to_restore` lists, each gateway's in one short cycle:
        their use is priced up to now and, with credit left, the relay closes. A gateway that is
        busy is left to the next run (a cycle reading it closes them anyway)."""
        due = await self.db(self._due_in)
        if not due:
            return []
        reports = await asyncio.gather(*(self.cycle(gw, only=ids) for gw, ids in due.items()))
        for report in reports:
            closed = sum(c["what"] == "close" and c["status"] == "done" for c in report.commands)
            log.info(
                "restore on %s: %d read, %d closed%s",
                report.gateway,
                report.read,
                closed,
                " (busy)" if report.busy else "",
            )
        return list(reports)

    # Notices ---------------------------------------------------------------------------------

    def send_notices(self, event_ids: Iterable[int] | None = None) -> int:
        """Send the notices of events not yet noticed (all pending ones when ``event_ids`` is
        None: what a crash left unsent). Each event is noticed once."""
        sent = 0
        with self.sessions() as session:
            q = select(MeterEvent.id).where(
                MeterEvent.noticed_at.is_(None),
                MeterEvent.event.in_(NOTICE_EVENTS),
            )
            if event_ids is not None:
                q = q.where(MeterEvent.id.in_(list(event_ids)))
            ids = list(session.execute(q.order_by(MeterEvent.id)).scalars())
        for event_id in ids:
            with self.sessions() as session:
                event = session.get(MeterEvent, event_id, with_for_update=True)
                if event is None or event.noticed_at is not None:
                    continue
                if self.notices is not None:
                    self.notices(session, event)
                event.noticed_at = self.clock()
                session.commit()
                sent += 1
        return sent

    # Remote recharge -------------------------------------------------------------------------

    def archive(self, older_than: dt.timedelta) -> int:
        """Move readings older than ``older_than`` to the archive, keeping each meter's newest."""
        cutoff = self.clock() - older_than
        with self.sessions() as session:
            moved = archive_readings(session, cutoff)
            session.commit()
        return moved

    # The schedule ----------------------------------------------------------------------------

    def start(self, *, archive_days: int = 90) -> Any:
        """Start the APScheduler jobs on the running event loop (call from a coroutine)."""
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        scheduler = AsyncIOScheduler(event_loop=asyncio.get_running_loop(), timezone=dt.UTC)
        self.scheduler = scheduler
        self.sync_jobs()
        scheduler.add_job(self.sync_jobs, "interval", seconds=60, id="sync", max_instances=1)
        scheduler.add_job(
            self.archive,
            "cron",
            hour=3,
            args=[dt.timedelta(days=archive_days)],
            id="archive",
            max_instances=1,
        )
        scheduler.add_job(self.send_notices, "interval", minutes=5, id="notices", max_instances=1)
        if self.restore_seconds > 0:
            scheduler.add_job(
                self.restore,
                "interval",
                seconds=self.restore_seconds,
                id="restore",
                max_instances=1,
                coalesce=True,
            )
        scheduler.start()
        return scheduler

    def sync_jobs(self) -> None:
        """Make the jobs match the gateways and intervals in the database (and reload tariffs
        and holidays on the next batch)."""
        self.ctx.forget()
        scheduler = self.scheduler
        wanted: dict[str, tuple[int, int]] = {}
        with self.sessions() as session:
            for gateway_id in session.execute(
                select(Gateway.id).where(Gateway.enabled.is_(True))
            ).scalars():
                for minutes in self.intervals(session, gateway_id):
                    wanted[f"gateway-{gateway_id}-{minutes}"] = (gateway_id, minutes)
        existing = {job.id for job in scheduler.get_jobs() if job.id.startswith("gateway-")}
        for job_id in existing - set(wanted):
            scheduler.remove_job(job_id)
        for job_id, (gateway_id, minutes) in wanted.items():
            if job_id in existing:
                continue
            scheduler.add_job(
                self.cycle,
                "interval",
                minutes=minutes,
                args=[gateway_id],
                kwargs={"minutes": minutes, "wait": BUSY_WAIT},
                id=job_id,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=minutes * 30,
                next_run_time=dt.datetime.now(dt.UTC),
            )

    async def cycle_all(self) -> list[CycleReport]:
        """Read every enabled gateway once, all buses at the same time."""
        self.ctx.forget()
        with self.sessions() as session:
            ids = list(
                session.execute(
                    select(Gateway.id).where(Gateway.enabled.is_(True)).order_by(Gateway.code)
                ).scalars()
            )
        return list(await asyncio.gather(*(self.cycle(g) for g in ids)))


def archive_readings(session: Session, cutoff: dt.datetime) -> int:
    """Move readings taken before ``cutoff`` into ``meter_readings_archive``, except each
    meter's newest reading. Does not commit."""
    newest = select(func.max(MeterReading.id)).group_by(MeterReading.meter_id).scalar_subquery()
    old = select(MeterReading).where(MeterReading.taken_at < cutoff, MeterReading.id.not_in(newest))
    rows = session.execute(old).scalars().all()
    if not rows:
        return 0
    now = utcnow()
    session.execute(
        insert(MeterReadingArchive),
        [
            {
                "id": r.id,
                "meter_id": r.meter_id,
                "source": r.source,
                "taken_at": r.taken_at,
                "received_at": r.received_at,
                "cumulative": r.cumulative,
                "remaining": r.remaining,
                "last_seq": r.last_seq,
                "status": r.status,
                "card_id": r.card_id,
                "detail": r.detail,
                "archived_at": now,
            }
            for r in rows
        ],
    )
    session.execute(
        delete(MeterReading).where(MeterReading.id.in_([r.id for r in rows])),
        execution_options={"synchronize_session": False},
    )
    return len(rows)


def meter_office(session: Session, meter_id: int) -> int | None:
    """The office of the meter's premises, where its customer buys; None for a meter at no
    premises."""
    return session.scalar(
        select(Premises.office_id)
        .join(Meter, Meter.premises_id == Premises.id)
        .where(Meter.id == meter_id)
    )


def recharge(
    session: Session,
    actor: Actor,
    meter_id: int,
    *,
    amount: int,
    office_id: int,
    idempotency_key: str,
    method: str = "cash",
) -> RemoteRecharge:
    """Sell credit for a meter that keeps its own credit and queue its push, numbered with the
    next recharge count. A retry with the same key returns the first push. Does not commit."""
    from onecard.ledger import accounts as acc

    existing = session.execute(
        select(RemoteRecharge).where(RemoteRecharge.idempotency_key == idempotency_key)
    ).scalar_one_or_none()
    if existing is not None:
        if existing.meter_id != meter_id or existing.amount != amount:
            raise Conflict(
                f"idempotency key {idempotency_key!r} was used for another recharge",
                field="idempotency_key",
            )
        return existing
    remote = session.get(RemoteMeter, meter_id, with_for_update=True)
    if remote is None:
        raise NotFound("the meter is not a remote meter", field="meter")
    if remote.billing != "meter":
        raise InvalidInput(
            "this meter is billed by the server: sell into its wallet instead", field="meter"
        )
    posted = ops.sale(
        session,
        wallet=acc.meter_wallet_code(meter_id),
        amount=amount,
        office_id=office_id,
        idempotency_key=f"remote-sale:{idempotency_key}",
        method=method,
        operator_id=actor.operator_id,
        memo="remote recharge",
    )
    remote.recharge_count += 1
    push = RemoteRecharge(
        meter_id=meter_id,
        count=remote.recharge_count,
        amount=amount,
        idempotency_key=idempotency_key,
        transaction_id=posted.id,
        operator_id=actor.operator_id,
    )
    session.add(push)
    session.flush()
    meter = session.get(Meter, meter_id)
    record(
        session,
        actor,
        "meter.recharge",
        [f"meter:{meter.kind}:{meter.serial}" if meter else f"meter:{meter_id}"],
        detail={"amount": amount, "count": push.count, "key": idempotency_key},
        office_id=office_id,
        customer_id=meter.premises.customer_id if meter and meter.premises else None,
    )
    return push


async def push_recharge(service: ReadingService, push_id: int) -> dict[str, Any]:
    """Push a queued recharge now (the next cycle would otherwise do it) and read it back."""
    with service.sessions() as session:
        push = session.get(RemoteRecharge, push_id)
        if push is None:
            raise NotFound(f"no recharge #{push_id}", field="recharge")
        if push.status != "pending":  # delivered already: nothing to send
            return {"status": push.status, "recharge_count": push.meter_count}
        remote = session.get(RemoteMeter, push.meter_id)
        assert remote is not None
        gateway_id = remote.gateway_id
        action = Action(
            meter_id=push.meter_id,
            what="recharge",
            source="manual",
            recharge_id=push.id,
            amount=Decimal(push.amount) / 100,
            count=push.count,
        )
    begun: Begun = await service._begin(gateway_id, None)
    if begun.token is None:
        return {"status": "pending", "busy": begun.holder}
    return await service.send_now(begun, action)
