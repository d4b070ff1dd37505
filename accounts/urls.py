"""Routes of the accounts API (under /api/v1)."""

from rest_framework_simplejwt.views import TokenBlacklistView, TokenRefreshView, TokenVerifyView

from accounts import views
from mlplatform.api.routes import route

urlpatterns = [
    *route("auth/token", views.TokenObtainView.as_view(), "token-obtain"),
    *route("auth/token/refresh", TokenRefreshView.as_view(), "token-refresh"),
    *route("auth/token/verify", TokenVerifyView.as_view(), "token-verify"),
    *route("auth/logout", TokenBlacklistView.as_view(), "logout"),
    *route("auth/logout/all", views.LogoutEverywhereView.as_view(), "logout-all"),
    *route("auth/login", views.LoginView.as_view(), "login"),
    *route("keys", views.ApiKeyListView.as_view(), "apikey-list"),
    *route("keys/<int:pk>", views.ApiKeyDetailView.as_view(), "apikey-detail"),
]
