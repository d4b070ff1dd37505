"""Request and response shapes of the accounts API."""

from datetime import timedelta

from django.utils import timezone
from rest_framework import serializers

from accounts.models import ApiKey
from accounts.scopes import ALL_SCOPES


class ApiKeySerializer(serializers.ModelSerializer):
    prefix = serializers.CharField(read_only=True)
    is_active = serializers.BooleanField(read_only=True)
    scopes = serializers.ListField(child=serializers.ChoiceField(choices=ALL_SCOPES))

    class Meta:
        model = ApiKey
        fields = [
            "id",
            "name",
            "prefix",
            "scopes",
            "created_at",
            "expires_at",
            "revoked_at",
            "last_used_at",
            "is_active",
        ]
        read_only_fields = fields


class ApiKeyCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    scopes = serializers.ListField(
        child=serializers.ChoiceField(choices=ALL_SCOPES), allow_empty=False
    )
    expires_in_days = serializers.IntegerField(
        required=False, min_value=1, max_value=3650, help_text="Days until the key expires."
    )

    def to_service_kwargs(self) -> dict:
        days = self.validated_data.get("expires_in_days")
        return {
            "name": self.validated_data["name"],
            "scopes": self.validated_data["scopes"],
            "expires_at": timezone.now() + timedelta(days=days) if days else None,
        }


class ApiKeyCreatedSerializer(ApiKeySerializer):
    key = serializers.CharField(read_only=True, help_text="The raw key; shown only this once.")

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "key"]
        read_only_fields = fields


class LoginSerializer(serializers.Serializer):
    username = serializers.CharField()
    password = serializers.CharField(style={"input_type": "password"}, trim_whitespace=False)


class LoginResponseSerializer(serializers.Serializer):
    access_token = serializers.CharField()
    token_type = serializers.CharField()
    expires_in = serializers.IntegerField()
