"""The tutorial's usage summary: GET /api/v1/stats."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import scope_required
from predictions.stats import usage_stats


class StatsSerializer(serializers.Serializer):
    """Documents ``usage_stats``."""

    scope = serializers.ChoiceField(
        choices=["own", "all"], help_text="'all' for staff: every user's traffic."
    )
    total_predictions = serializers.IntegerField()
    active_batch_jobs = serializers.IntegerField(help_text="Queued or processing.")
    completed_batch_jobs = serializers.IntegerField()
    failed_batch_jobs = serializers.IntegerField()
    request_count = serializers.IntegerField(help_text="Authenticated API requests answered.")
    error_count = serializers.IntegerField(help_text="Of those, answers with status >= 400.")
    error_rate = serializers.FloatField(help_text="error_count / request_count (0 to 1).")
    average_duration = serializers.FloatField(help_text="Mean seconds to answer a request.")
    predictions_by_model = serializers.DictField(child=serializers.IntegerField())


class StatsView(APIView):
    """Your traffic in numbers (staff: everyone's), from stored data."""

    permission_classes = [scope_required("read")]

    @extend_schema(responses=StatsSerializer)
    def get(self, request):
        return Response(usage_stats(user=request.user))


class MetricsSummarySerializer(StatsSerializer):
    """Documents the tutorial's JSON metrics."""

    total_requests = serializers.IntegerField(help_text="request_count, by the tutorial's name.")
    average_response_time = serializers.FloatField(
        help_text="average_duration, by the tutorial's name (seconds)."
    )


class MetricsSummaryView(StatsView):
    """The tutorial's JSON ``/metrics``: this summary with its names as well (Prometheus's text
    exposition of every process stays at ``/metrics``)."""

    @extend_schema(responses=MetricsSummarySerializer)
    def get(self, request):
        stats = usage_stats(user=request.user)
        return Response(
            stats
            | {
                "total_requests": stats["request_count"],
                "average_response_time": stats["average_duration"],
            }
        )
