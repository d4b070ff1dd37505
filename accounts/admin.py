"""Admin for users and API keys; a new key's secret is shown once, in the save message."""

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.core.exceptions import ValidationError
from django.utils.html import format_html

from accounts.models import ApiKey, User
from accounts.scopes import Scope, user_has_scope
from accounts.services import api_key_create, api_key_revoke, api_key_set_rate_limits
from mlplatform.errors import PlatformError


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    list_display = ["username", "email", "is_staff", "is_active", "rate_limits", "date_joined"]
    fieldsets = (*DjangoUserAdmin.fieldsets, ("Rate limits", {"fields": ["rate_limits"]}))


class ApiKeyCreationForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=Scope.choices, widget=forms.CheckboxSelectMultiple, required=True
    )

    class Meta:
        model = ApiKey
        fields = ["owner", "name", "scopes", "expires_at", "rate_limits"]

    def clean(self):
        cleaned = super().clean()
        owner = cleaned.get("owner")
        if owner is not None and cleaned.get("scopes"):
            lacking = [s for s in cleaned["scopes"] if not user_has_scope(owner, s)]
            if lacking:
                raise ValidationError(
                    f"{owner.get_username()} does not hold the scope(s) {', '.join(lacking)}; "
                    "grant the permission (for example through a group) first."
                )
        return cleaned


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "prefix_display",
        "owner",
        "scopes",
        "status",
        "rate_limits",
        "expires_at",
        "last_used_at",
        "created_at",
    ]
    list_filter = ["revoked_at", "created_at"]
    search_fields = ["name", "lookup", "owner__username"]
    readonly_fields = [
        "owner",
        "name",
        "prefix_display",
        "scopes",
        "created_at",
        "expires_at",
        "revoked_at",
        "last_used_at",
    ]
    actions = ["revoke_selected"]
    autocomplete_fields = ["owner"]

    @admin.display(description="prefix")
    def prefix_display(self, key: ApiKey) -> str:
        return f"{key.prefix}…"

    @admin.display(description="status")
    def status(self, key: ApiKey) -> str:
        if key.revoked_at:
            return "revoked"
        return "expired" if key.is_expired() else "active"

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = ApiKeyCreationForm
        return super().get_form(request, obj, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields if obj is not None else []

    def get_fields(self, request, obj=None):
        if obj is None:
            return ApiKeyCreationForm.Meta.fields
        return [*self.readonly_fields, "rate_limits"]

    def save_model(self, request, obj, form, change):
        if change:
            # Only the rate-limit overrides of an existing key can change.
            api_key_set_rate_limits(key=obj, rate_limits=form.cleaned_data["rate_limits"])
            return
        try:
            key, raw = api_key_create(
                owner=form.cleaned_data["owner"],
                name=form.cleaned_data["name"],
                scopes=form.cleaned_data["scopes"],
                expires_at=form.cleaned_data.get("expires_at"),
                rate_limits=form.cleaned_data.get("rate_limits", ""),
            )
        except PlatformError as exc:
            self.message_user(request, exc.detail, messages.ERROR)
            return
        # The admin goes on with ``obj`` (messages, log entry): make it the saved key.
        for field in ApiKey._meta.concrete_fields:
            setattr(obj, field.attname, getattr(key, field.attname))
        self.message_user(
            request,
            format_html(
                "The new API key is <code>{}</code>. Copy it now: it will not be shown again.",
                raw,
            ),
            messages.WARNING,
        )

    @admin.action(description="Revoke selected API keys (cannot be undone)")
    def revoke_selected(self, request, queryset):
        for key in queryset:
            api_key_revoke(key=key)
        self.message_user(request, f"Revoked {queryset.count()} key(s).", messages.SUCCESS)
