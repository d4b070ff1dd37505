"""Thin views: API keys and the tutorial-compatible login."""

from django.contrib.auth import authenticate
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.tokens import AccessToken
from rest_framework_simplejwt.views import TokenObtainPairView

from accounts.authentication import CHALLENGE
from accounts.permissions import UserCredentialsOnly
from accounts.selectors import api_keys_for
from accounts.serializers import (
    ApiKeyCreatedSerializer,
    ApiKeyCreateSerializer,
    ApiKeySerializer,
    LoginResponseSerializer,
    LoginSerializer,
)
from accounts.services import api_key_create, api_key_revoke, refresh_tokens_revoke
from mlplatform.api.parsers import ORJSONParser
from mlplatform.api.schema import ErrorSerializer


class ApiKeyListView(APIView):
    """List your API keys, or create one (its secret is in this response only)."""

    permission_classes = [IsAuthenticated, UserCredentialsOnly]
    pagination_class = api_settings.DEFAULT_PAGINATION_CLASS  # documents the paginated list

    @extend_schema(responses=ApiKeySerializer(many=True))
    def get(self, request):
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(api_keys_for(request.user), request, view=self)
        return paginator.get_paginated_response(ApiKeySerializer(page, many=True).data)

    @extend_schema(
        request=ApiKeyCreateSerializer,
        responses={
            201: ApiKeyCreatedSerializer,
            409: OpenApiResponse(ErrorSerializer, "You hold the most active keys allowed."),
        },
    )
    def post(self, request):
        serializer = ApiKeyCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        key, raw = api_key_create(owner=request.user, **serializer.to_service_kwargs())
        key.key = raw
        response = Response(ApiKeyCreatedSerializer(key).data, status=status.HTTP_201_CREATED)
        response["Cache-Control"] = "no-store"
        return response


class ApiKeyDetailView(APIView):
    """Read or revoke one of your API keys (revocation cannot be undone)."""

    permission_classes = [IsAuthenticated, UserCredentialsOnly]

    @extend_schema(responses=ApiKeySerializer)
    def get(self, request, pk: int):
        return Response(ApiKeySerializer(get_object_or_404(api_keys_for(request.user), pk=pk)).data)

    @extend_schema(responses={204: None})
    def delete(self, request, pk: int):
        api_key_revoke(key=get_object_or_404(api_keys_for(request.user), pk=pk))
        return Response(status=status.HTTP_204_NO_CONTENT)


class LogoutEverywhereView(APIView):
    """End every session of yours that a refresh token holds: none of them can be refreshed
    again (access tokens already issued expire within minutes)."""

    permission_classes = [IsAuthenticated, UserCredentialsOnly]

    @extend_schema(request=None, responses={204: None})
    def post(self, request):
        refresh_tokens_revoke(user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class LoginView(APIView):
    """The tutorial's login: username and password as a form, JSON or query parameters (its
    signature; a body keeps them out of proxies' logs), answered with a bearer token."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    parser_classes = [ORJSONParser, FormParser, MultiPartParser]
    ratelimit_group = "auth"

    # Documented as the tutorial's form (JSON works too) and nothing else: a generated client
    # cannot tell two media types of one schema apart.
    @extend_schema(
        request={"application/x-www-form-urlencoded": LoginSerializer},
        responses={200: LoginResponseSerializer},
        parameters=[
            OpenApiParameter("username", str, description="When the body is empty."),
            OpenApiParameter("password", str, description="When the body is empty."),
        ],
        auth=[],
    )
    def post(self, request):
        serializer = LoginSerializer(data=request.data or request.query_params)
        serializer.is_valid(raise_exception=True)
        user = authenticate(request, **serializer.validated_data)
        if user is None:
            raise exceptions.AuthenticationFailed(
                "Incorrect username or password.", code="invalid_credentials"
            )
        token = AccessToken.for_user(user)
        response = Response(
            {
                "access_token": str(token),
                "token_type": "bearer",
                "expires_in": int(jwt_settings.ACCESS_TOKEN_LIFETIME.total_seconds()),
            }
        )
        response["Cache-Control"] = "no-store"
        return response

    def get_authenticate_header(self, request) -> str:
        return CHALLENGE


class TokenObtainView(TokenObtainPairView):
    """simplejwt's token pair for a username and password, in the strict ``auth`` rate group."""

    ratelimit_group = "auth"
