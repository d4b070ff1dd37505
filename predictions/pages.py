"""The HTML pages outside the admin: the landing page and the WebSocket demo."""

from django.shortcuts import render

from predictions.catalogue.registry import registry


def landing(request):
    return render(request, "landing.html", {"models": registry.models()})


def websocket_demo(request):
    """A page that sends rows over /api/v1/predict/ws and shows the answers as they arrive."""
    return render(request, "ws_demo.html")
