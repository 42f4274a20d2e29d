"""HTTP routes of the products API."""

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from fastapi.responses import StreamingResponse

from ..fields import MAX_ID
from ..openapi import error_response_doc
from ..security import requires
from ..streaming import STREAM_RESPONSES, StreamSlotDep
from .schemas import ProductCreate, ProductOut, ProductPage, ProductStats, ProductUpdate
from .service import ServiceDep

TAG = {"name": "products", "description": "The worked example: a product catalogue."}
NOT_FOUND = error_response_doc(404, "No product with this id")
CONFLICT = error_response_doc(409, "Another product has this sku")
# Writes need the caller's permission when auth is on (a no-op dependency when it is off).
CAN_WRITE = requires("products:write")
# A cached copy is dropped on every change: a browser must ask again each time.
CACHED = {"X-Cache": "HIT", "Cache-Control": "no-cache"}
LOADED = {"X-Cache": "MISS", "Cache-Control": "no-cache"}

router = APIRouter(prefix="/api/v1/products", tags=["products"])

# `:int` in the paths: /export and /stats never match a product's route, whatever the method.
ProductId = Annotated[int, Path(ge=1, le=MAX_ID, description="The product's id")]


@router.post(
    "",
    status_code=201,
    responses=CONFLICT,
    summary="Create a product",
    dependencies=[CAN_WRITE],
)
async def create_product(payload: ProductCreate, products: ServiceDep) -> ProductOut:
    return await products.create(payload)


@router.get("", summary="List products, oldest first")
async def list_products(
    products: ServiceDep,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    size: Annotated[int, Query(ge=1, le=100)] = 20,
) -> ProductPage:
    return await products.page(page, size)


@router.get(
    "/export",
    summary="Every product as CSV, streamed",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/csv": {}}, "description": "A CSV attachment"},
        **STREAM_RESPONSES,
    },
)
async def export_products(products: ServiceDep, stream: StreamSlotDep) -> StreamingResponse:
    # Once the 200 is sent, an outage could only cut the file short: it answers 503 instead.
    await products.ensure_reachable()
    return stream.response(
        products.export_csv(),
        media_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="products.csv"'},
    )


@router.get("/stats", summary="Price percentiles and products per category")
async def product_stats(products: ServiceDep) -> ProductStats:
    return await products.stats()


@router.get(
    "/{product_id:int}",
    summary="Read a product",
    responses={
        **NOT_FOUND,
        200: {
            "model": ProductOut,
            "description": "The product",
            "headers": {
                "X-Cache": {
                    "description": "HIT when the cache had the product, else MISS",
                    "schema": {"type": "string"},
                },
            },
        },
    },
)
async def read_product(product_id: ProductId, products: ServiceDep) -> Response:
    # The JSON as the cache holds it, sent as it is.
    body, cached = await products.get_json(product_id)
    return Response(body, media_type="application/json", headers=CACHED if cached else LOADED)


@router.patch(
    "/{product_id:int}",
    summary="Change some fields of a product",
    responses={**NOT_FOUND, **CONFLICT},
    dependencies=[CAN_WRITE],
)
async def update_product(
    product_id: ProductId, payload: ProductUpdate, products: ServiceDep
) -> ProductOut:
    return await products.update(product_id, payload)


@router.delete(
    "/{product_id:int}",
    status_code=204,
    summary="Delete a product",
    responses=NOT_FOUND,
    dependencies=[CAN_WRITE],
)
async def delete_product(product_id: ProductId, products: ServiceDep) -> Response:
    await products.delete(product_id)
    return Response(status_code=204)
