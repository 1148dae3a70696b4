"""The operator's pages, served beside the ops endpoints: the status page and each job's decision trail.

``routes`` holds the HTTP side, ``views`` reads what they show from the running controller, and
``templates/`` (Jinja2, autoescaped) and ``static/`` render it without any front-end build step.
"""

from app.web.routes import router

__all__ = ["router"]
