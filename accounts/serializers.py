"""Request and response shapes of the accounts API."""

from datetime import timedelta

from django.utils import timezone
from drf_spectacular.utils import OpenApiExample, extend_schema_serializer
from rest_framework import serializers
from rest_framework_simplejwt import serializers as jwt_serializers
from rest_framework_simplejwt.exceptions import AuthenticationFailed, TokenError
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.utils import get_md5_hash_password

from accounts.models import ApiKey, User
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


@extend_schema_serializer(
    examples=[
        OpenApiExample(
            "a key to predict and read back",
            value={"name": "laptop", "scopes": ["predict", "read"], "expires_in_days": 90},
            request_only=True,
        )
    ]
)
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


class TokenRefreshSerializer(jwt_serializers.TokenRefreshSerializer):
    """simplejwt's rotation, refusing two uses it lets through.

    A refresh token issued before its user's password changed is refused, as access tokens are
    (``CHECK_REVOKE_TOKEN``). A token is rotated once: it is blacklisted before the new pair is
    made, and of simultaneous requests only the one whose blacklisting created the entry gets a
    pair (the entry is unique per token on both databases).
    """

    def validate(self, attrs: dict) -> dict:
        refresh = self.token_class(attrs["refresh"])  # signature, expiry, blacklist
        user = User.objects.filter(pk=refresh.get(jwt_settings.USER_ID_CLAIM)).first()
        if user is None or not jwt_settings.USER_AUTHENTICATION_RULE(user):
            raise AuthenticationFailed(
                self.error_messages["no_active_account"], "no_active_account"
            )
        password = refresh.get(jwt_settings.REVOKE_TOKEN_CLAIM)
        if password != get_md5_hash_password(user.password):
            raise AuthenticationFailed(
                "The user's password has been changed.", code="password_changed"
            )
        _, created = refresh.blacklist()
        if not created:
            raise TokenError("Token is blacklisted")
        refresh.set_jti()
        refresh.set_exp()
        refresh.set_iat()
        refresh.outstand()
        return {"access": str(refresh.access_token), "refresh": str(refresh)}
