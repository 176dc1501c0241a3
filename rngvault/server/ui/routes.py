"""The pages: every one a GET that reads (``/ui/login`` and ``/ui/logout`` also take a POST).

Errors are HTML pages with the right status (400 bad input, 403 another namespace, 404
nothing there, 503 storage down); a request without a usable token is sent to the login form.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from rngvault._errors import InvalidNameError, NotFoundError, RngVaultError, StoreError
from rngvault._names import check_name
from rngvault.server.auth import Principal
from rngvault.server.errors import ApiError
from rngvault.server.media import JSON, MSGPACK
from rngvault.server.routes import check_names
from rngvault.server.seeds import PatternError, check_pattern, seed_report
from rngvault.server.storage.base import InvalidCursorError, SnapshotKey, Store
from rngvault.server.ui import charts, session, views
from rngvault.server.ui.session import LoginNeeded, PageError

HERE = Path(__file__).parent
RUNS_PAGE = 50
SNAPSHOTS_PAGE = 100
RANK_LINKS = 64  # ranks linked from a snapshot page; higher ones through the form
GROUP_RUN_LINKS = 200  # runs linked in each group of the seed-sensitivity page
METRIC_MAX = 256  # characters of a metric name asked for (as GET /v1/seeds)
# No scripts, nothing from elsewhere; no framing (clickjacking of the login form).
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"], default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
templates.globals.update(
    when=views.when, distance_text=views.distance_text, quote=quote, urlencode=urlencode
)
templates.filters["exact"] = repr  # a number as Python reads it back (data-value attributes)
router = APIRouter(prefix="/ui", include_in_schema=False)
root = APIRouter(include_in_schema=False)


def html(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """``template`` rendered (autoescaped) with ``context``."""
    text = templates.get_template(template).render(
        request=request,
        open=request.app.state.auth.open,
        signed_in=session.COOKIE in request.cookies,
        **context,
    )
    return HTMLResponse(text, status_code=status, headers=HEADERS)


def error_page(request: Request, status: int, title: str, detail: str) -> HTMLResponse:
    return html(request, "error.html", status, title=title, detail=detail, code=status)


_KNOWN: tuple[tuple[type[Exception], int, str], ...] = (
    (InvalidNameError, 400, "Bad name"),
    (InvalidCursorError, 400, "Bad cursor"),
    (NotFoundError, 404, "Not found"),
    (StoreError, 503, "Storage unavailable"),
    (RngVaultError, 400, "Bad request"),
)

Page = Callable[..., Awaitable[Response]]


def page(handler: Page) -> Page:
    """Turn the errors a page meets into HTML pages (or a redirect to the login form)."""

    @functools.wraps(handler)
    async def wrapped(request: Request, *args: Any, **kwargs: Any) -> Response:
        try:
            return await handler(request, *args, **kwargs)
        except LoginNeeded:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/ui/login?{urlencode({'next': target})}", status_code=303)
        except PageError as exc:
            return error_page(request, exc.status, exc.title, exc.detail)
        except ApiError as exc:
            return error_page(
                request, exc.status, exc.error.replace("_", " ").capitalize(), exc.detail
            )
        except RngVaultError as exc:
            for kind, status, title in _KNOWN:
                if isinstance(exc, kind):
                    return error_page(request, status, title, str(exc))
            raise  # unreachable: RngVaultError is the last entry

    return wrapped


def store_of(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def reader(request: Request, *namespaces: str) -> Principal:
    """The page's principal, who may read every one of ``namespaces``."""
    found = session.principal(request)
    for namespace in namespaces:
        session.check_namespace(found, namespace)
    return found


@root.get("/")
async def home() -> RedirectResponse:
    """The server's root: the pages."""
    return RedirectResponse("/ui", status_code=307)


STATIC = {"ui.css": "text/css; charset=utf-8", "favicon.svg": "image/svg+xml"}


@router.get("/static/{filename}")
async def static(filename: str) -> Response:
    """The stylesheet and the icon, from the installed package."""
    if filename not in STATIC:
        return Response("not found", status_code=404, media_type="text/plain")
    return Response(
        (HERE / "static" / filename).read_bytes(),
        media_type=STATIC[filename],
        headers={"Cache-Control": "max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


@router.get("")
@page
async def runs(
    request: Request, namespace: str | None = None, cursor: str | None = None
) -> Response:
    """Runs by namespace: snapshot count, ranks of the first snapshot, last activity."""
    if namespace == "":
        namespace = None
    found = reader(request)
    if namespace is not None:
        check_name(namespace, "namespace")
        session.check_namespace(found, namespace)
    store = store_of(request)
    listed = await store.list_runs(
        namespace=namespace, pattern=found.patterns("read"), cursor=cursor or None, limit=RUNS_PAGE
    )
    firsts = await asyncio.gather(
        *(store.list_snapshots(r.namespace, r.run, limit=1) for r in listed.items),
        return_exceptions=True,
    )
    ranks = [
        f.items[0].ranks if not isinstance(f, BaseException) and f.items else () for f in firsts
    ]
    groups: dict[str, list[tuple[Any, tuple[int, ...]]]] = {}
    for info, rank in zip(listed.items, ranks, strict=True):
        groups.setdefault(info.namespace, []).append((info, rank))
    return html(
        request,
        "runs.html",
        groups=groups,
        namespace=namespace,
        next_cursor=listed.next_cursor,
        paged=bool(cursor),
    )


@router.get("/login")
async def login_form(request: Request, next: str | None = None) -> Response:
    """The login form: a token, kept in an HttpOnly cookie."""
    return html(request, "login.html", next=session.local_next(next), error=None)


@router.post("/login")
async def login(request: Request) -> Response:
    """Check the token as the API does; good: set the cookie and go on; bad: the form again."""
    form = await session.read_form(request)
    token, next = form.get("token", ""), form.get("next")
    target = session.local_next(next)
    if not session.same_site(request):
        return html(
            request,
            "login.html",
            403,
            next=target,
            error="this form was posted from another site; open the login page on this server",
        )
    if request.app.state.auth.open:
        return RedirectResponse(target, status_code=303)
    error = None
    if not token.strip():
        error = "enter a token"
    else:
        try:
            found = session.principal_for_token(request, token)
            if not found.patterns("read"):
                error = "this token has no read grant"
        except ApiError as exc:
            error = f"this token was refused: {exc.detail}"
    if error is not None:
        return html(request, "login.html", 401, next=target, error=error)
    response = RedirectResponse(target, status_code=303)
    session.set_cookie(request, response, token.strip())
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    """Forget the token cookie."""
    if not session.same_site(request):
        return error_page(request, 403, "Forbidden", "this form was posted from another site")
    response = RedirectResponse("/ui/login", status_code=303)
    session.clear_cookie(request, response)
    return response


@router.get("/diff")
@page
async def diff_page(
    request: Request, a: str | None = None, b: str | None = None, rank: str | None = None
) -> Response:
    """Two snapshots side by side: which generators moved and how far, the environment."""
    if a is None and b is None:
        reader(request)
        return html(request, "diff.html", view=None, a=None, b=None, rank=0, keys=())
    key_a = views.parse_key(a, "a")
    key_b = views.parse_key(b, "b")
    number = views.parse_rank(rank)
    reader(request, key_a[0], key_b[0])
    store = store_of(request)
    snapshots = []
    for side, key in (("A", key_a), ("B", key_b)):
        try:
            snapshots.append(await views.load(store, SnapshotKey(*key, rank=number)))
        except NotFoundError as exc:
            raise PageError(404, "Not found", f"snapshot {side}: {exc}") from None
    labels = ("/".join(key_a), "/".join(key_b))
    view = await views.diff_view(snapshots[0], snapshots[1], labels)
    return html(
        request,
        "diff.html",
        view=view,
        a="/".join(key_a),
        b="/".join(key_b),
        rank=number,
        keys=(key_a, key_b),
    )


@router.get("/divergence")
@page
async def divergence_page(
    request: Request, run: str | None = None, reference: str | None = None
) -> Response:
    """A run and its reference: the first snapshot where their generators differ."""
    if run is None and reference is None:
        reader(request)
        return html(request, "divergence.html", view=None, run=None, reference=None)
    mine = views.parse_run(run, "run")
    theirs = views.parse_run(reference, "reference")
    reader(request, mine[0], theirs[0])
    view = await views.divergence_view(store_of(request), mine, theirs)
    name = view.report.snapshot if view.report else None
    return html(
        request,
        "divergence.html",
        view=view,
        run="/".join(mine),
        reference="/".join(theirs),
        run_parts=mine,
        ref_parts=theirs,
        diverged=name,
        mine=views.window(view.run, name),
        theirs=views.window(view.reference, name),
        scan=views.SCAN,
    )


@router.get("/runs/{namespace}/{run}")
@page
async def run_page(
    request: Request, namespace: str, run: str, cursor: str | None = None
) -> Response:
    """A run's snapshots in stored order, a page at a time, with charts of their metrics."""
    check_names(namespace, run)
    reader(request, namespace)
    listed = await store_of(request).list_snapshots(
        namespace, run, cursor=cursor or None, limit=SNAPSHOTS_PAGE
    )
    infos = list(listed.items)
    _info, record = await store_of(request).run_info(namespace, run)
    facts, config = views.record_view(record)
    return html(
        request,
        "run.html",
        namespace=namespace,
        run=run,
        record_facts=facts,
        record_config=config,
        infos=infos,
        charts=charts.charts(infos),
        tags=views.union(i.tags for i in infos),
        world_sizes=sorted({i.world_size for i in infos}),
        next_cursor=listed.next_cursor,
        paged=bool(cursor),
    )


@router.get("/runs/{namespace}/{run}/{name}")
@page
async def snapshot_page(
    request: Request, namespace: str, run: str, name: str, rank: str | None = None
) -> Response:
    """One snapshot: its generators and positions, probes, environment, flags, ranks, ref."""
    check_names(namespace, run, name)
    number = views.parse_rank(rank)
    reader(request, namespace)
    store = store_of(request)
    snapshot = await views.load(store, SnapshotKey(namespace, run, name, number))
    stored = await store.ranks(namespace, run, name)  # the rank links lead where there is one
    world = max(snapshot.metadata.world_size, number + 1)
    return html(
        request,
        "snapshot.html",
        namespace=namespace,
        run=run,
        name=name,
        rank=number,
        snapshot=snapshot,
        generators=views.generator_rows(snapshot),
        environment=views.environment_rows(snapshot.environment),
        flags=views.flag_rows(snapshot.environment),
        ranks=stored[:RANK_LINKS],
        world=world,
        ref=str(snapshot.ref),
        metrics=[(k, views.short(v)) for k, v in snapshot.metadata.metrics.items()],
    )


@router.get("/runs/{namespace}/{run}/{name}/snapshot.{kind}")
@page
async def download(
    request: Request, namespace: str, run: str, name: str, kind: str, rank: str | None = None
) -> Response:
    """The stored msgpack bytes, or the JSON rendering, as the API serves them."""
    check_names(namespace, run, name)
    number = views.parse_rank(rank)
    if kind not in ("msgpack", "json"):
        raise PageError(
            404, "Not found", f"no download {kind[:20]!r}: use snapshot.msgpack or snapshot.json"
        )
    reader(request, namespace)
    body = await store_of(request).get(SnapshotKey(namespace, run, name, number))
    media = MSGPACK if kind == "msgpack" else JSON
    if kind == "json":
        body = await request.app.state.renderer(body, JSON, None)
    filename = f"{namespace}.{run}.{name}.rank{number}.{kind}"
    return Response(
        body,
        media_type=media,
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store",
        },
    )


@router.get("/seeds")
@page
async def seeds_page(
    request: Request,
    pattern: str | None = None,
    metric: str | None = None,
    at: str | None = None,
) -> Response:
    """Seed sensitivity of the runs matching ``pattern``: per group of runs that differ only
    in the seed, each metric's numbers, a dot plot by seed, the outliers and the verdict."""
    found = reader(request)
    pattern = (pattern or "").strip() or None
    metric = metric or None
    at = (at or "").strip() or "final"
    form: dict[str, Any] = {"pattern": pattern, "metric": metric, "at": at}
    if pattern is None:
        return html(request, "seeds.html", **form, report=None, missing=None, groups=())
    try:
        check_pattern(pattern)
    except PatternError as exc:
        raise PageError(400, "Bad pattern", str(exc)) from None
    if at != "final":
        check_name(at)
    if metric is not None and len(metric) > METRIC_MAX:
        raise PageError(400, "Bad metric", f"a metric name has at most {METRIC_MAX} characters")
    namespace = pattern.split("/")[0]
    if not any(c in namespace for c in "*?["):  # a namespace named outright: as the other pages
        check_name(namespace, "namespace")
        session.check_namespace(found, namespace)
    try:
        report = await seed_report(
            store_of(request), pattern, metric=metric, at=at, readable=found.patterns("read")
        )
    except NotFoundError as exc:
        return html(request, "seeds.html", **form, report=None, missing=str(exc), groups=())
    plotted = 0
    groups = []
    for group in report.groups:
        rows = []
        for stats in group.metrics:
            plot = charts.seed_plot(stats) if plotted < charts.MAX_SEED_PLOTS else None
            plotted += plot is not None
            rows.append((stats, plot))
        config = json.dumps(dict(group.config), sort_keys=True, ensure_ascii=False)
        runs = list(group.runs.items())
        groups.append((group, views.short(config), rows, runs[:GROUP_RUN_LINKS]))
    return html(
        request,
        "seeds.html",
        **form,
        report=report,
        missing=None,
        groups=groups,
        unplotted=sum(len(g.metrics) for g in report.groups) > plotted,
        max_plots=charts.MAX_SEED_PLOTS,
    )
