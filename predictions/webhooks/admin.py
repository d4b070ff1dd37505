"""Admin: webhook deliveries, their attempts, and redelivery."""

import json

from django.contrib import admin, messages
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html

from predictions.models import WebhookAttempt, WebhookDelivery
from predictions.webhooks import webhook_redeliver


class WebhookAttemptInline(admin.TabularInline):
    model = WebhookAttempt
    extra = 0
    can_delete = False
    fields = ["number", "started_at", "duration", "status_code", "error", "response_excerpt"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "event_type",
        "job_link",
        "url",
        "status",
        "attempt_count",
        "next_attempt_at",
        "created_at",
        "delivered_at",
    ]
    list_filter = ["status", "event_type", "created_at"]
    search_fields = ["=id", "=job__id", "url"]
    date_hierarchy = "created_at"
    fields = [
        "id",
        "job_link",
        "url",
        "event_type",
        "status",
        "attempt_count",
        "next_attempt_at",
        "created_at",
        "delivered_at",
        "payload_json",
    ]
    readonly_fields = fields
    inlines = [WebhookAttemptInline]
    actions = ["redeliver"]

    def has_add_permission(self, request):
        return False  # deliveries come from jobs reaching a final status

    @admin.display(description="job")
    def job_link(self, delivery: WebhookDelivery) -> str:
        # The job id alone: loading the job would load its input bytes too.
        try:
            url = reverse("admin:predictions_batchjob_change", args=[delivery.job_id])
        except NoReverseMatch:
            return str(delivery.job_id)
        return format_html('<a href="{}">{}</a>', url, delivery.job_id)

    @admin.display(description="payload")
    def payload_json(self, delivery: WebhookDelivery) -> str:
        return format_html("<pre>{}</pre>", json.dumps(delivery.payload, indent=2))

    @admin.action(description="Redeliver selected deliveries", permissions=["change"])
    def redeliver(self, request, queryset):
        count = 0
        for delivery in queryset:
            webhook_redeliver(delivery)
            count += 1
        self.message_user(request, f"Queued {count} delivery attempt(s).", messages.SUCCESS)
