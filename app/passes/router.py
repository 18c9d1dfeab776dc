"""`GET /v1/passes`: the technique catalog."""

from __future__ import annotations

from fastapi import APIRouter

from app.core.pagination import Page
from app.http.deps import CurrentTenant
from app.passes.schemas import TechniqueRead
from app.passes.service import list_techniques

router = APIRouter(tags=["passes"])


@router.get(
    "/v1/passes",
    summary="The technique catalog",
    response_description="Every technique (one page: the catalog is short).",
    response_model=Page[TechniqueRead],
    response_model_by_alias=True,
)
def list_passes(_tenant: CurrentTenant) -> Page[TechniqueRead]:
    """Each op with its JSON schema (the step fields), formats and devices."""
    return list_techniques()
