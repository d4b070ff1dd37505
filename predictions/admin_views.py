"""Admin pages beyond the model admins: the per-model version comparison."""

from django.http import HttpResponse


def model_comparison_view(model_admin, request, object_id):
    return HttpResponse("comparison page: not built yet", status=501)
