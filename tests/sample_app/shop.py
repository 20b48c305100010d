"""A small Flask + Celery shop, guarded the way the README says; its tests use only
the maintenance-guard pytest plugin's fixtures and pytest-celery's."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from flask import Flask, jsonify, request

from maintenance_guard import MaintenanceGuard
from maintenance_guard.celery import GuardedTask
from maintenance_guard.flask import FlaskMaintenance, maintenance_operation

PRODUCTS = {1: "kettle", 2: "teapot"}


@shared_task(name="shop.resize_image", base=GuardedTask, operation="image_processing")
def resize_image(product_id: int) -> str:
    return f"resized {product_id}"


@shared_task(
    name="shop.refresh_search",
    base=GuardedTask,
    operation="batch_operations",
    on_maintenance="defer",  # parked during maintenance, sent when it ends
)
def refresh_search() -> str:
    return "search refreshed"


def create_web(guard: MaintenanceGuard) -> Flask:
    """The shop's web app on ``guard``; an ``X-Admin: yes`` header marks an admin."""
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "sample-app-secret"
    maintenance = FlaskMaintenance(app, guard)

    @maintenance.admin_loader
    def is_admin() -> bool:
        return request.headers.get("X-Admin") == "yes"

    @app.get("/products")
    @maintenance_operation("read")
    def products() -> Any:
        return jsonify(PRODUCTS)

    @app.post("/products/<int:product_id>/image")
    @maintenance_operation("image_processing")
    def upload_image(product_id: int) -> Any:
        result = resize_image.delay(product_id)
        return jsonify({"task": result.id}), 202

    @app.post("/search/refresh")
    def refresh() -> Any:
        # Not classified: the Celery submission decides (it defers during maintenance).
        result = refresh_search.delay()
        return jsonify({"task": result.id}), 202

    return app
