"""``/benchmarks``: benchmark a deployment (the controller runs it), list the runs per deployment, model and
version, show one with every step, compare two, delete one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status

from studio.api.auth import allowed
from studio.api.paging import Page, Window, read_page, window
from studio.bench_results import Difference
from studio.models import BenchmarkRunCreate, BenchmarkRunPublic
from studio.services import benchmarks
from studio.values import Principal

router = APIRouter(prefix="/benchmarks", tags=["benchmarks"])
READ, WRITE = allowed("benchmarks:read"), allowed("benchmarks:write")


@router.get("", response_model=Page[BenchmarkRunPublic])
def list_benchmarks(
    request: Request,
    at: Annotated[Window, Depends(window)],
    deployment: str | None = None,
    model: str | None = None,
    version: Annotated[int | None, Query(ge=1)] = None,
    actor: Principal = READ,
) -> Page[BenchmarkRunPublic]:
    """The runs the caller may see (of ``deployment``; of ``model``, of its ``version``), newest first."""
    db = request.app.state.db
    found = benchmarks.list_benchmarks(
        db=db, actor=actor, deployment=deployment, model=model, version=version, offset=at.offset, limit=at.limit
    )
    total = benchmarks.count_benchmarks(db=db, actor=actor, deployment=deployment, model=model, version=version)
    return read_page(found, total=total, at=at)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=BenchmarkRunPublic)
def create_benchmark(
    request: Request, response: Response, data: BenchmarkRunCreate, actor: Principal = WRITE
) -> BenchmarkRunPublic:
    """Benchmark a deployment (through the gateway, or straight to one replica) with a ``spec``: one step, or an
    SLO sweep; the controller runs it (follow ``status``, ``steps_done`` and ``progress``). The run is recorded
    against the model version the deployment serves now."""
    created = benchmarks.create_benchmark(db=request.app.state.db, actor=actor, data=data)
    response.headers["Location"] = f"{request.url.path}/{created.id}"
    return created


@router.get("/compare", response_model=list[Difference])
def compare_benchmarks(
    request: Request, a: Annotated[int, Query()], b: Annotated[int, Query()], actor: Principal = READ
) -> list[Difference]:
    """Two ended runs figure by figure (max rate, goodput, throughputs, each metric at the mean and each
    percentile), with ``b − a`` and its share of ``a``."""
    return benchmarks.compare_benchmarks(db=request.app.state.db, actor=actor, a=a, b=b)


@router.get("/{run_id}", response_model=BenchmarkRunPublic)
def get_benchmark(request: Request, run_id: int, actor: Principal = READ) -> BenchmarkRunPublic:
    """One run: its spec, progress, and result (every step's summary and the sweep's answer)."""
    return benchmarks.get_benchmark(db=request.app.state.db, actor=actor, run_id=run_id)


@router.delete("/{run_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_benchmark(request: Request, run_id: int, actor: Principal = WRITE) -> Response:
    """Forget an ended run."""
    benchmarks.delete_benchmark(db=request.app.state.db, actor=actor, run_id=run_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
