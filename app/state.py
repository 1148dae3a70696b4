"""The running controller, as the routes find it: ``create_app``'s lifespan puts the ``Controller`` it
built on ``app.state.controller``; routes read it through ``running_controller`` so its type is known.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request

if TYPE_CHECKING:  # app.main imports the route modules, which import this one
    from app.main import Controller


def running_controller(request: Request) -> Controller:
    """The controller serving ``request`` (set before the app serves any request)."""
    controller: Controller = request.app.state.controller
    return controller
